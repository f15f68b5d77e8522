"""End to end (issue 5): a real Ray head on loopback, a moto S3 server, and `quantray serve`
over HTTP. Submit a small sweep and read its results, plots and artifacts; keep another
key out; cancel a running job; restart the API mid-job; resume an interrupted job.

The tests share one stack (conftest.py) and run in file order; each submits its own jobs.
"""

from __future__ import annotations

import io
import json
import signal

import pyarrow.parquet as pq
import pytest
import yaml

from tests._support import wait_for
from tests.e2e._client import FINAL, spec, units_done
from tests.e2e._stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SWEEP = spec("e2e", ["ols", "ridge", "mlp"])
# Small widths, many epochs, no early stop: the deep units keep the job running for a while
# after its linear units are done. An epoch on the tiny e2e data takes ~0.06 s with its
# report, so 30 epochs (2 s a unit) let both deep units of a job end between the poll that
# saw them running and the stop that was meant to interrupt them (a CI failure); 150 epochs
# give ~10 s a unit.
LONG_EPOCHS = 150
LONG_TRAIN = {"train": {"epochs": LONG_EPOCHS, "patience": LONG_EPOCHS}}
LONG_LSTM = {"lstm": {"hidden_size": 8, "num_layers": 1, **LONG_TRAIN}}


@pytest.fixture(scope="module")
def sweep(stack: Stack) -> dict:
    """The small sweep, submitted by alice and run to `succeeded`; the job as last seen, and
    every status answer seen while polling."""
    job = stack.alice.submit(SWEEP)
    assert job["status"] == "queued" and job["owner"] == "alice"
    seen: list[dict] = []
    final = stack.alice.wait_final(job["id"], timeout_s=420, seen=seen)
    return {"job": final, "seen": seen}


def test_sweep_succeeds_with_results_plots_and_artifacts(stack: Stack, sweep: dict) -> None:
    job, seen = sweep["job"], sweep["seen"]
    assert job["status"] == "succeeded", (job["message"], job["errors"])
    assert job["ray"]["submission_id"] == job["id"]
    assert job["ray"]["dashboard_url"].startswith(stack.head.dashboard_url)
    assert stack.ray.status(job["id"]) == "SUCCEEDED"
    # Progress was visible while it ran, and is complete at the end.
    running = [j for j in seen if j["status"] == "running" and j["progress"]]
    assert running, "never saw the job running with progress"
    assert running[-1]["progress"]["units_total"] == 6  # 2 symbols x 3 models
    assert job["progress"]["units_done"] == 6 and job["progress"]["units_failed"] == 0

    # Leaderboard: one error-free test row per (unit, horizon).
    resp = stack.alice.http.get(f"/v1/jobs/{job['id']}/results")
    assert resp.status_code == 200, resp.text
    all_rows = resp.json()["rows"]
    rows = [r for r in all_rows if r["split"] == "test" and r["model"] in SWEEP["models"]]
    keys = [(r["symbol"], r["model"], r["horizon"]) for r in rows]
    symbols = {r["symbol"] for r in rows}
    assert len(symbols) == 2
    assert sorted(keys) == sorted(
        (s, m, h) for s in symbols for m in SWEEP["models"] for h in (1, 5)
    )
    assert all(r["error"] is None and 0 <= r["accuracy"] <= 1 for r in rows), rows

    # A plot, and one unit's model metadata through the artifact route.
    resp = stack.alice.http.get(f"/v1/jobs/{job['id']}/plots/comparison.png")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    assert resp.content.startswith(PNG_MAGIC)
    sym = sorted(symbols)[0]
    rel = f"{sym}/mlp/f0/model/metadata.json"
    listed = stack.alice.http.get(f"/v1/jobs/{job['id']}/artifacts", params={"prefix": sym})
    assert listed.status_code == 200 and rel in [f["path"] for f in listed.json()["files"]]
    resp = stack.alice.http.get(f"/v1/jobs/{job['id']}/artifacts/{rel}")
    assert resp.status_code == 200, resp.text
    metadata = json.loads(resp.content)
    assert isinstance(metadata, dict) and metadata

    # The driver's log comes from Ray; the summary from storage.
    logs = stack.alice.http.get(f"/v1/jobs/{job['id']}/logs")
    assert logs.status_code == 200 and f"job {job['id']}: results at" in logs.text
    summary = stack.alice.http.get(f"/v1/jobs/{job['id']}/summary")
    assert summary.status_code == 200 and summary.json()["job_id"] == job["id"]
    assert summary.json()["failed_units"] == []

    # The same files are in the bucket.
    keys_in_bucket = set(stack.s3.keys(f"jobs/{job['id']}"))
    for key in ("spec.json", "progress.json", "results/leaderboard.parquet",
                "results/summary.json", "results/plots/comparison.png",
                f"units/{rel}", f"units/{sym}/ols/f0/predictions.parquet"):  # fmt: skip
        assert key in keys_in_bucket, f"{key} not in the bucket: {sorted(keys_in_bucket)}"
    assert stack.s3.read(f"jobs/{job['id']}/results/plots/comparison.png") == (
        stack.alice.http.get(f"/v1/jobs/{job['id']}/plots/comparison.png").content
    )
    board_bytes = stack.s3.read(f"jobs/{job['id']}/results/leaderboard.parquet")
    board = pq.read_table(io.BytesIO(board_bytes))
    assert board.num_rows == len(all_rows)


def test_other_key_cannot_see_the_job(stack: Stack, sweep: dict) -> None:
    job_id = sweep["job"]["id"]
    for method, path in (
        ("GET", ""), ("GET", "/results"), ("GET", "/summary"), ("GET", "/plots/comparison.png"),
        ("GET", "/artifacts"), ("POST", "/cancel"), ("POST", "/resume"), ("GET", "/logs"),
    ):  # fmt: skip
        resp = stack.bob.http.request(method, f"/v1/jobs/{job_id}{path}")
        assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
        assert resp.json()["error"] == "not_found", resp.text
    assert job_id not in [j["id"] for j in stack.bob.http.get("/v1/jobs").json()["items"]]
    # The owner and the admin see it.
    assert job_id in [j["id"] for j in stack.alice.http.get("/v1/jobs").json()["items"]]
    assert stack.admin.job(job_id)["owner"] == "alice"
    assert stack.admin.http.get(f"/v1/jobs/{job_id}/results").status_code == 200


def _unit_statuses(stack: Stack, job_id: str) -> dict[str, dict]:
    """unit_id -> status/{unit_id}.json as it is in the bucket."""
    names = [k for k in stack.s3.keys(f"jobs/{job_id}/status") if k.endswith(".json")]
    return {n[: -len(".json")]: json.loads(stack.s3.read(f"jobs/{job_id}/status/{n}"))
            for n in names}  # fmt: skip


def test_cancel_a_running_job_keeps_partial_results(stack: Stack) -> None:
    body = spec("e2e-cancel", ["ols", "lstm"], symbols=4, max_epochs=LONG_EPOCHS,
                overrides=LONG_LSTM)
    job = stack.alice.submit(body)
    # Cancel mid-training: the 4 linear units are done and a deep unit is training.
    job = stack.alice.wait(
        job["id"], lambda j: j["status"] == "running" and units_done(j) >= 4
        and (j["progress"]["units_running"] or 0) >= 1,
        timeout_s=300, what="a deep unit training after the linear units",
    )  # fmt: skip
    total = job["progress"]["units_total"]
    assert total == 8 and units_done(job) < total
    resp = stack.alice.http.post(f"/v1/jobs/{job['id']}/cancel")
    assert resp.status_code == 200, resp.text
    assert resp.json()["cancel_requested"] is True

    final = stack.alice.wait_final(job["id"], timeout_s=180)
    assert final["status"] == "cancelled", final
    assert stack.ray.status(job["id"]) == "STOPPED"
    # Partial results stay: the units finished before the cancel, with their files.
    statuses = _unit_statuses(stack, job["id"])
    done = [u for u, st in statuses.items() if st["state"] == "done"]
    assert done and len(done) < total, statuses.keys()
    keys = set(stack.s3.keys(f"jobs/{job['id']}/units"))
    for unit_id in done:
        symbol, model, fold = unit_id.split("__")
        assert f"{symbol}/{model}/{fold}/model/metadata.json" in keys
        assert f"{symbol}/{model}/{fold}/predictions.parquet" in keys
    # ... and the driver, stopped with SIGTERM, wrote their leaderboard and summary.
    # (A Train worker may still finish its unit in the stop's grace period, after that.)
    rows = stack.alice.http.get(f"/v1/jobs/{job['id']}/results").json()["rows"]
    reported = {(r["symbol"], r["model"]) for r in rows if r["model"] in ("ols", "lstm")}
    assert reported <= {tuple(u.split("__")[:2]) for u in done}
    assert {s for s, m in reported if m == "ols"} == {u.split("__")[0] for u in done
                                                      if "__ols__" in u}  # fmt: skip
    summary = stack.alice.http.get(f"/v1/jobs/{job['id']}/summary").json()
    assert summary["stopped"] is True and summary["not_finished"] >= 1
    assert summary["units_reported"] + summary["not_finished"] == total
    # Cancelling twice is a conflict, not a second stop.
    assert stack.alice.http.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409


def test_api_restart_mid_job_then_job_finishes(stack: Stack) -> None:
    # This one goes in as YAML, the other accepted body type.
    text = yaml.safe_dump(spec("e2e-restart", ["ols", "mlp"]), sort_keys=False)
    resp = stack.alice.http.post(
        "/v1/jobs", content=text, headers={"Content-Type": "application/yaml"}
    )
    assert resp.status_code == 201, resp.text
    job = resp.json()
    job = stack.alice.wait(
        job["id"], lambda j: j["status"] == "running" and j["progress"] is not None,
        timeout_s=300, what="running with progress",
    )  # fmt: skip
    # A graceful stop (SIGTERM must not need a SIGKILL), then a crash, each mid-job; the
    # new process on the same DB and port picks the job up. The clients keep working.
    assert stack.serve.stop(signal.SIGTERM) != -signal.SIGKILL, "SIGTERM did not stop serve"
    assert stack.ray.status(job["id"]) in ("PENDING", "RUNNING"), "job ended before the stop"
    stack.serve.start()
    # Running, unless the job finished while the API was down (then Ray says so too).
    seen_by_new = stack.alice.job(job["id"])["status"]
    assert seen_by_new == "running" or (
        seen_by_new == "succeeded" and stack.ray.status(job["id"]) == "SUCCEEDED"
    ), seen_by_new
    stack.serve.stop(signal.SIGKILL)
    stack.serve.start()

    final = stack.alice.wait_final(job["id"], timeout_s=300)
    assert final["status"] == "succeeded", (final["message"], final["errors"])
    assert final["finished_at"] is not None and final["message"] is None
    # The new process adopted the Ray job; it did not submit it again.
    assert final["attempt"] == 0 and final["ray"]["submission_id"] == job["id"]
    assert stack.ray.status(job["id"]) == "SUCCEEDED"
    assert final["progress"]["units_done"] == final["progress"]["units_total"] == 4
    resp = stack.alice.http.get(f"/v1/jobs/{job['id']}/results")
    assert resp.status_code == 200 and resp.json()["count"] > 0
    ready = stack.alice.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["dispatcher"]["last_error"] is None


def test_resume_an_interrupted_job_skips_finished_units(stack: Stack) -> None:
    body = spec("e2e-resume", ["ols", "ridge", "lstm"], max_epochs=LONG_EPOCHS,
                overrides=LONG_LSTM)
    job = stack.alice.submit(body)
    # Interrupt mid-training: the 4 linear units are done and a deep unit is training.
    job = stack.alice.wait(
        job["id"], lambda j: j["status"] == "running" and units_done(j) >= 4
        and (j["progress"]["units_running"] or 0) >= 1,
        timeout_s=300, what="a deep unit training after the linear units",
    )  # fmt: skip
    # Behind the service's back: Ray stops the job without a cancel request.
    assert stack.ray.stop(job["id"]) is True
    interrupted = stack.alice.wait_final(job["id"], timeout_s=180)
    assert interrupted["status"] == "interrupted", interrupted
    before = {u: st for u, st in _unit_statuses(stack, job["id"]).items()
              if st["state"] == "done"}  # fmt: skip
    assert before and len(before) < 6, before.keys()

    resp = stack.alice.http.post(f"/v1/jobs/{job['id']}/resume")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "queued" and resp.json()["attempt"] == 1
    final = stack.alice.wait_final(job["id"], timeout_s=300)
    assert final["status"] == "succeeded", (final["message"], final["errors"])
    assert final["ray"]["submission_id"] == f"{job['id']}-r1"
    assert final["progress"]["units_done"] == final["progress"]["units_total"] == 6
    assert stack.ray.status(f"{job['id']}-r1") == "SUCCEEDED"

    after = _unit_statuses(stack, job["id"])
    symbols = {u.split("__")[0] for u in after}
    assert len(symbols) == 2
    assert sorted(after) == sorted(f"{s}__{m}__f0" for s in symbols for m in body["models"])
    assert all(st["state"] == "done" for st in after.values())
    for unit_id, status in before.items():  # not retrained: the same run, same stamps
        assert after[unit_id]["started"] == status["started"], unit_id
        assert after[unit_id]["finished"] == status["finished"], unit_id
    progress = json.loads(stack.s3.read(f"jobs/{job['id']}/progress.json"))
    assert progress["units"]["skipped_on_resume"] == len(before)
    rows = stack.alice.http.get(f"/v1/jobs/{job['id']}/results").json()["rows"]
    tests = [r for r in rows if r["split"] == "test" and r["model"] in ("ols", "ridge", "lstm")]
    assert len(tests) == 12 and all(r["error"] is None for r in tests)


def test_stopped_jobs_leave_no_placement_groups(stack: Stack) -> None:
    """Jobs were cancelled and stopped mid-training above; Ray 2.60 can leak such a run's
    placement group, sometimes created after its job has ended, which would hold its CPU
    for good (on this 2-CPU head: every later deep run would hang). Every job's driver
    first removes the groups of ended jobs (ray_jobs/cluster_gc.py), so once the next job
    is over none may be left."""
    assert all(j["status"] in FINAL for j in stack.admin.http.get("/v1/jobs").json()["items"])
    job = stack.alice.submit(spec("e2e-next", ["ols"], symbols=1))
    final = stack.alice.wait_final(job["id"], timeout_s=300)
    assert final["status"] == "succeeded", (final["message"], final["errors"])
    left: list[dict] = []

    def none_left() -> bool:
        left[:] = stack.ray.live_placement_groups()
        return not left

    try:
        wait_for(none_left, timeout_s=60, what="no live placement groups", every_s=2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; left: {left}") from None
