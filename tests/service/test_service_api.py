"""The job API over real HTTP: idempotency, paging and filters, ownership, key revocation,
results/summary/plots/artifacts from storage, /metrics, /v1/models, /readyz, OpenAPI."""

from __future__ import annotations

import io
import json
import socket
import time
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from ray_jobs.stop import RESULTS_WRITTEN, WRITING_RESULTS
from service.db import make_engine
from service.keys import revoke_key
from service.store import JobStore

SPEC: dict[str, Any] = {
    "name": "t1",
    "dataset": {"uri": "sample:sp500", "symbols": 2},
    "models": ["ols", "lstm"],
}


def test_submit_returns_queued_job_with_links_and_writes_spec(api: Any) -> None:
    with api.client() as c:
        resp = c.post("/v1/jobs", json=SPEC)
        assert resp.status_code == 201, resp.text
        job = resp.json()
        assert job["status"] == "queued" and job["owner"] == "alice" and job["attempt"] == 0
        assert resp.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["links"]["results"] == f"/v1/jobs/{job['id']}/results"
        detail = c.get(f"/v1/jobs/{job['id']}").json()
    stored = json.loads((api.storage / "jobs" / job["id"] / "spec.json").read_text())
    assert stored == detail["spec"] == job["spec"]  # the POST's answer had spec: null
    assert stored["dataset"]["uri"] == "sample:sp500" and stored["models"] == ["ols", "lstm"]


def test_yaml_submission_equals_json(api: Any) -> None:
    with api.client() as c:
        resp = c.post(
            "/v1/jobs",
            content=yaml.safe_dump(SPEC).encode(),
            headers={"Content-Type": "application/yaml; charset=utf-8"},
        )
        assert resp.status_code == 201, resp.text
        from_yaml = c.get(f"/v1/jobs/{resp.json()['id']}").json()["spec"]
        from_json = c.get(f"/v1/jobs/{c.post('/v1/jobs', json=SPEC).json()['id']}").json()["spec"]
    assert from_yaml == from_json


def test_idempotency_key_makes_retries_safe(api: Any) -> None:
    with api.client() as c:
        first = c.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": "k-1"})
        # The same spec as YAML is the same request.
        yaml_headers = {"Idempotency-Key": "k-1", "Content-Type": "application/yaml"}
        retry = c.post("/v1/jobs", content=yaml.safe_dump(SPEC).encode(), headers=yaml_headers)
        other = c.post("/v1/jobs", json={**SPEC, "name": "t2"}, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201 and retry.status_code == 201
    assert retry.json()["id"] == first.json()["id"]
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert other.status_code == 409 and "k-1" in other.json()["message"]
    assert api.job_count() == 1
    # Keys are per owner: bob's k-1 is a different job.
    with api.client("bob") as c:
        bobs = c.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": "k-1"})
    assert bobs.status_code == 201 and bobs.json()["id"] != first.json()["id"]
    assert api.job_count() == 2


def test_paging_and_status_filter(api: Any) -> None:
    with api.client() as c:
        ids = [c.post("/v1/jobs", json={**SPEC, "name": f"j{i}"}).json()["id"] for i in range(7)]
        for job_id in ids[:3]:
            assert c.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        page1 = c.get("/v1/jobs", params={"page_size": 3}).json()
        page3 = c.get("/v1/jobs", params={"page_size": 3, "page": 3}).json()
        cancelled = c.get("/v1/jobs", params={"status": "cancelled"}).json()
        queued = c.get("/v1/jobs", params={"status": "queued", "page_size": 100}).json()
        walked: list[str] = []
        url: str | None = "/v1/jobs?page_size=2"
        while url:
            page = c.get(url).json()
            walked += [j["id"] for j in page["items"]]
            url = page["next"]
    assert page1["total"] == 7 and len(page1["items"]) == 3 and page1["next"]
    assert [j["id"] for j in page1["items"]] == ids[::-1][:3]  # newest first
    assert len(page3["items"]) == 1 and page3["next"] is None
    assert {j["id"] for j in cancelled["items"]} == set(ids[:3]) and cancelled["total"] == 3
    assert {j["id"] for j in queued["items"]} == set(ids[3:])
    assert walked == ids[::-1]


def test_status_filter_takes_repeated_values(api: Any) -> None:
    """?status=a&status=b lists jobs in any of them (not only the last), and the next-page
    link keeps every value."""
    with api.client() as c:
        ids = [c.post("/v1/jobs", json={**SPEC, "name": f"j{i}"}).json()["id"] for i in range(5)]
        c.post(f"/v1/jobs/{ids[0]}/cancel")
        JobStore(api.engine).transition(ids[1], "queued", status="failed")
        both = c.get("/v1/jobs", params=[("status", "cancelled"), ("status", "failed")]).json()
        walked: list[str] = []
        url: str | None = "/v1/jobs?status=failed&status=cancelled&page_size=1"
        while url:
            page = c.get(url).json()
            walked += [j["id"] for j in page["items"]]
            url = page["next"]
        bad = c.get("/v1/jobs", params=[("status", "queued"), ("status", "done")])
    assert {j["id"] for j in both["items"]} == set(ids[:2]) and both["total"] == 2
    assert walked == [ids[1], ids[0]]
    assert bad.status_code == 422 and "status" in bad.json()["message"]


def test_ownership_other_key_gets_404_admin_sees_all(api: Any) -> None:
    with api.client("alice") as alice, api.client("bob") as bob, api.client("admin") as admin:
        a = alice.post("/v1/jobs", json=SPEC).json()["id"]
        b = bob.post("/v1/jobs", json=SPEC).json()["id"]
        for path in ("", "/results", "/summary", "/artifacts", "/logs", "/plots"):
            resp = bob.get(f"/v1/jobs/{a}{path}")
            assert resp.status_code == 404, (path, resp.text)
        assert bob.post(f"/v1/jobs/{a}/cancel").status_code == 404
        assert bob.post(f"/v1/jobs/{a}/resume").status_code == 404
        assert [j["id"] for j in bob.get("/v1/jobs").json()["items"]] == [b]
        assert {j["id"] for j in admin.get("/v1/jobs").json()["items"]} == {a, b}
        assert admin.get(f"/v1/jobs/{a}").json()["owner"] == "alice"
        assert admin.post(f"/v1/jobs/{b}/cancel").json()["status"] == "cancelled"
        assert alice.get(f"/v1/jobs/{a}").json()["status"] == "queued"
        assert alice.get("/v1/jobs/qr-doesnotexist").status_code == 404


def test_revoked_key_gets_401_at_once(api: Any) -> None:
    with api.client("bob") as bob:
        assert bob.get("/v1/jobs").status_code == 200
        revoke_key(api.engine, "bob")
        resp = bob.get("/v1/jobs")
    assert resp.status_code == 401 and "revoked" in resp.json()["message"]


def test_key_revoked_by_another_process_is_refused_on_the_next_poll(api: Any) -> None:
    # `quantray keys revoke` runs in its own process, on its own engine: the server must not
    # keep trusting a key it verified a moment ago (no cache of verified keys).
    other = make_engine(api.settings.database_url)
    try:
        with api.client("bob") as bob:
            job_id = bob.post("/v1/jobs", json=SPEC).json()["id"]
            assert bob.get(f"/v1/jobs/{job_id}").status_code == 200
            revoke_key(other, "bob")
            polled = bob.get(f"/v1/jobs/{job_id}")
            posted = bob.post("/v1/jobs", json=SPEC)
    finally:
        other.dispose()
    for resp in (polled, posted):
        assert resp.status_code == 401 and "revoked" in resp.json()["message"]
    assert api.job_count() == 1


def test_cancel_and_resume_state_rules(api: Any) -> None:
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        assert c.post(f"/v1/jobs/{job_id}/resume").status_code == 409  # queued: nothing to resume
        assert c.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        again = c.post(f"/v1/jobs/{job_id}/cancel")
        assert again.status_code == 409 and "already cancelled" in again.json()["message"]
        resumed = c.post(f"/v1/jobs/{job_id}/resume").json()
        # attempt 0 never left the queue: it is not counted, the resumed job runs as attempt 0
        assert resumed["status"] == "queued" and resumed["attempt"] == 0 and resumed["id"] == job_id
        logs = c.get(f"/v1/jobs/{job_id}/logs")
        assert logs.status_code == 409 and "no Ray logs" in logs.json()["message"]
        assert "earlier attempts" not in logs.json()["message"]


def test_resume_refuses_a_job_whose_files_are_not_in_this_storage(api: Any) -> None:
    """A job stored under another QUANTRAY_STORAGE_URI (the setting changed since it was
    submitted): resume would start a driver that fails at once on a missing spec.json, so
    it is refused, naming the setting, and the job is left as it was."""
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        assert c.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        stored = api.storage / "jobs" / job_id
        stored.rename(stored.with_name("elsewhere"))
        refused = c.post(f"/v1/jobs/{job_id}/resume")
        assert refused.status_code == 409
        assert "QUANTRAY_STORAGE_URI=" in refused.json()["message"]
        assert "set it back" in refused.json()["message"]
        # ... or the files were deleted: then nothing brings them back, a new submit does
        assert ("if its files were deleted (or their bucket removed or replaced), the job "
                "cannot be resumed: submit its spec again") in refused.json()["message"]
        assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        stored.with_name("elsewhere").rename(stored)
        assert c.post(f"/v1/jobs/{job_id}/resume").json()["status"] == "queued"


def test_resume_checks_the_dataset_against_the_data_roots_of_now(tmp_path: Any) -> None:
    """A job submitted while its data's directory was allowed, resumed after the operator
    took it out of QUANTRAY_DATA_ROOTS: the resume ran the driver on the data all the
    same (a new submit of the same spec was refused). Refused now, and the job is left as
    it was; with the root allowed again it resumes."""
    import pandas as pd

    from tests.service.conftest import make_settings, start_api

    data, other = tmp_path / "data", tmp_path / "other"
    data.mkdir()
    other.mkdir()
    days = pd.bdate_range("2012-01-02", periods=1500)
    pd.DataFrame({"symbol": "AAA", "date": days, **dict.fromkeys(
        ("open", "high", "low", "close", "volume"), 1.0)}).to_parquet(data / "bars.parquet")
    spec = {**SPEC, "dataset": {"uri": str(data / "bars.parquet"), "symbols": ["AAA"]}}
    home = tmp_path / "home"
    server, api = start_api(make_settings(home, data_roots=(f"file://{data}",)),
                            {"alice": False})
    try:
        with api.client() as c:
            job_id = c.post("/v1/jobs", json=spec).json()["id"]
            assert c.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    finally:
        server.__exit__()
    for roots, allowed in (((f"file://{other}",), False), ((f"file://{data}",), True)):
        server, again = start_api(make_settings(home, data_roots=roots), {})
        again.keys = api.keys
        try:
            with again.client() as c:
                resp = c.post(f"/v1/jobs/{job_id}/resume")
                status = c.get(f"/v1/jobs/{job_id}").json()["status"]
        finally:
            server.__exit__()
        if allowed:
            assert resp.status_code == 200 and status == "queued", resp.text
            continue
        assert resp.status_code == 409, resp.text
        assert resp.json()["message"].startswith(
            f"job {job_id} cannot be resumed: its dataset.uri: ")
        assert "outside the allowed data roots" in resp.json()["message"]
        assert [e["field"] for e in resp.json()["errors"]] == ["dataset.uri"]
        assert status == "cancelled"


def test_the_artifact_listing_of_a_job_without_files_does_not_point_at_itself(
    api: Any,
) -> None:
    """A failed job whose files were deleted: GET .../artifacts answered 404 "has no
    artifacts (list what it has with GET .../artifacts ...)", sending the client in a
    circle. The listing's 404 says what may have happened instead; the other routes still
    point at the listing."""
    import shutil

    store = JobStore(api.engine)
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        store.transition(job_id, "queued", status="running", ray_submission_id=job_id,
                         started_at=1.0)  # fmt: skip
        store.transition(job_id, "running", status="failed", finished_at=2.0)
        shutil.rmtree(api.storage / "jobs" / job_id)
        listing = c.get(f"/v1/jobs/{job_id}/artifacts")
        folder = c.get(f"/v1/jobs/{job_id}/artifacts", params={"prefix": "AAA"})
        results = c.get(f"/v1/jobs/{job_id}/results")
    assert listing.status_code == 404
    message = listing.json()["message"]
    assert f"/v1/jobs/{job_id}/artifacts" not in message, message
    assert message == (
        f"job {job_id} (failed) has no artifacts (its units may have stored none; if "
        "QUANTRAY_STORAGE_URI changed since the job ran, its files are in the storage it ran "
        f"with; if its files were deleted, submit its spec again: the `spec` of GET "
        f"/v1/jobs/{job_id})")
    for other in (folder, results):  # a part of the listing: the listing says more
        assert other.status_code == 404
        assert f"list what it has with GET /v1/jobs/{job_id}/artifacts" in other.json()[
            "message"]


def _write_results(api: Any, job_id: str, progress: dict[str, Any]) -> None:
    base = api.storage / "jobs" / job_id
    (base / "results" / "plots").mkdir(parents=True)
    table = pa.table(
        {
            "symbol": ["AAA", "AAA", "BBB", "BBB"],
            "model": ["ols", "lstm", "ols", "lstm"],
            "horizon": [1, 5, 1, 5],
            "split": ["val", "test", "test", "test"],
            "fold": [0, 0, 0, 1],
            "accuracy": [0.5, 0.6, float("nan"), 0.7],
        }
    )
    pq.write_table(table, base / "results" / "leaderboard.parquet")
    (base / "results" / "summary.json").write_text(json.dumps({"models": [{"model": "ols"}]}))
    (base / "results" / "plots" / "accuracy.png").write_bytes(b"\x89PNG fake")
    (base / "units" / "AAA" / "ols").mkdir(parents=True)
    (base / "units" / "AAA" / "ols" / "model.bin").write_bytes(bytes(range(256)) * 1000)
    (base / "progress.json").write_text(json.dumps(progress))


def test_results_summary_plots_artifacts(api: Any, qr: Any) -> None:
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        missing = c.get(f"/v1/jobs/{job_id}/results")
        assert missing.status_code == 404 and "no results" in missing.json()["message"]
        _write_results(api, job_id, qr.progress_doc(4, 4))
        rows = c.get(f"/v1/jobs/{job_id}/results").json()["rows"]
        assert len(rows) == 4 and rows[2]["accuracy"] is None  # NaN -> null
        only = c.get(f"/v1/jobs/{job_id}/results", params={"model": "lstm", "horizon": 5}).json()
        assert [(r["symbol"], r["model"]) for r in only["rows"]] == [
            ("AAA", "lstm"),
            ("BBB", "lstm"),
        ]
        two = c.get(
            f"/v1/jobs/{job_id}/results",
            params=[("symbol", "AAA"), ("symbol", "BBB"), ("model", "ols")],
        ).json()
        assert two["count"] == 2
        test = c.get(f"/v1/jobs/{job_id}/results", params={"split": "test", "fold": 0}).json()
        assert [(r["symbol"], r["model"]) for r in test["rows"]] == [("AAA", "lstm"),
                                                                    ("BBB", "ols")]
        assert c.get(f"/v1/jobs/{job_id}/results", params={"split": "train"}).status_code == 422
        # a filter value the leaderboard does not have says so, with what it has
        none = c.get(f"/v1/jobs/{job_id}/results", params={"model": "LSTM", "horizon": 7}).json()
        assert none["count"] == 0 and [u["field"] for u in none["unmatched"]] == [
            "query.model", "query.horizon"]
        assert none["unmatched"][0]["message"] == (
            "model 'LSTM' is not in this leaderboard (values are case-sensitive: lstm?); it "
            "has: lstm, ols")
        assert none["unmatched"][1]["message"].endswith("it has: 1, 5")
        assert c.get(f"/v1/jobs/{job_id}/results", params={"model": "ols"}).json()[
            "unmatched"] == []
        noted = c.get(f"/v1/jobs/{job_id}/results", params={"symbol": "ZZZ"},
                      headers={"Accept": "text/csv"})
        assert noted.headers["quantray-unmatched"] == (
            "symbol 'ZZZ' is not in this leaderboard; it has: AAA, BBB")
        unknown = c.get(f"/v1/jobs/{job_id}/results", params={"splitt": "test"})
        assert unknown.status_code == 422 and "splitt" in unknown.json()["message"]
        assert unknown.json()["errors"] == [{"field": "query.splitt",
                                             "message": "not a parameter of this route"}]
        # a one-value parameter given twice was read as one of them (limit=1&limit=5: 5);
        # the filters take several (symbol=AAA&symbol=BBB: either)
        twice = c.get(f"/v1/jobs/{job_id}/results",
                      params=[("limit", 1), ("limit", 5), ("symbol", "AAA"), ("symbol", "BBB")])
        assert twice.status_code == 422, twice.text
        assert twice.json()["errors"] == [{"field": "query.limit", "message": "give it once"}]
        assert "['limit'] given more than once" in twice.json()["message"]
        both = c.get(f"/v1/jobs/{job_id}/results", params=[("symbol", "AAA"), ("symbol", "BBB")])
        assert both.status_code == 200 and both.json()["count"] > 0
        listed = c.get(f"/v1/jobs/{job_id}/artifacts", params=[("prefix", "AAA"),
                                                               ("prefix", "BBB")])
        assert listed.status_code == 422 and "['prefix']" in listed.json()["message"]
        assert c.get("/v1/jobs", params={"limit": "abc"}).status_code == 422
        assert c.get("/v1/jobs", params={"page_size": 2}).status_code == 200
        csv = c.get(
            f"/v1/jobs/{job_id}/results", params={"symbol": "BBB"}, headers={"Accept": "text/csv"}
        )
        assert csv.headers["content-type"].startswith("text/csv")
        preferred = c.get(f"/v1/jobs/{job_id}/results",
                          headers={"Accept": "text/csv;q=0.9, application/json"})
        assert preferred.headers["content-type"].startswith("application/json")
        # a horizon or fold no job can have is a 422 naming the parameter, not a 500 (an
        # integer no leaderboard column can hold) nor an empty page
        for params in ({"horizon": "9" * 25}, {"horizon": ["1", "0"]}, {"fold": "-1"},
                       {"fold": "20"}, {"horizon": "abc"}):
            bad = c.get(f"/v1/jobs/{job_id}/results", params=params)
            assert bad.status_code == 422, (params, bad.text)
            name = next(iter(params))
            assert [e["field"] for e in bad.json()["errors"]] == [f"query.{name}"], bad.text
            assert bad.json()["errors"][0]["message"].startswith(f"{name}="), bad.text
        parsed = pacsv.read_csv(io.BytesIO(csv.content))
        assert parsed.num_rows == 2 and parsed.column("symbol").to_pylist() == ["BBB", "BBB"]
        assert c.get(f"/v1/jobs/{job_id}/summary").json() == {"models": [{"model": "ols"}]}
        assert c.get(f"/v1/jobs/{job_id}/plots").json() == {"plots": ["accuracy.png"]}
        png = c.get(f"/v1/jobs/{job_id}/plots/accuracy.png")
        assert png.headers["content-type"] == "image/png" and png.content == b"\x89PNG fake"
        other = c.get(f"/v1/jobs/{job_id}/plots/other.png")
        assert other.status_code == 404 and "yet" in other.json()["message"]
        # it ran (and wrote the files above), then was cancelled
        JobStore(api.engine).transition(job_id, "queued", status="cancelled", started_at=1.0)
        other = c.get(f"/v1/jobs/{job_id}/plots/other.png")
        assert f"with GET /v1/jobs/{job_id}/plots; if QUANTRAY_STORAGE_URI changed" in (
            other.json()["message"])
        listing = c.get(f"/v1/jobs/{job_id}/artifacts").json()["files"]
        assert listing == [{"path": "AAA/ols/model.bin", "size": 256_000}]
        blob = c.get(f"/v1/jobs/{job_id}/artifacts/AAA/ols/model.bin")
        assert blob.status_code == 200 and blob.content == bytes(range(256)) * 1000
        # HEAD (curl -I) answers as GET, headers only
        for path in (f"/v1/jobs/{job_id}/artifacts/AAA/ols/model.bin",
                     f"/v1/jobs/{job_id}/plots/accuracy.png", f"/v1/jobs/{job_id}"):  # fmt: skip
            got, head = c.get(path), c.head(path)
            assert head.status_code == 200 and head.content == b"", path
            assert head.headers["content-length"] == got.headers["content-length"], path
            assert head.headers["content-type"] == got.headers["content-type"], path
        assert c.head(f"/v1/jobs/{job_id}/plots/other.png").status_code == 404
        assert c.get(f"/v1/jobs/{job_id}/artifacts/AAA/ols/nope.bin").status_code == 404


def test_status_carries_progress_eta_and_unit_errors(api: Any, qr: Any) -> None:
    """progress.json as the driver writes it: 2 done, 1 failed, 1 running of 4 after 10 s."""
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        _write_results(api, job_id, qr.progress_doc(4, 2, (("BBB/lstm", "boom"),), running=1))
        # progress is read once the job has left the queue.
        JobStore(api.engine).transition(
            job_id, "queued", status="running", ray_submission_id=job_id
        )
        job = c.get(f"/v1/jobs/{job_id}").json()
    assert job["progress"] == {
        "phase": "training",
        "message": "",
        "units_total": 4,
        "units_done": 2,
        "units_failed": 1,
        "units_running": 1,
        "units_starting": 0,
        "units_pending": 0,
        "fraction": 0.75,
        "eta_seconds": 3.3,  # 1 unit left at 10 s per 3 finished
        "stale": False,
    }
    assert job["errors"] == [{"unit_id": "BBB/lstm", "error": "boom"}]
    # cancelled mid-job: the last progress.json still holds an ETA, the job has none
    JobStore(api.engine).transition(job_id, "running", status="cancelled")
    with api.client() as c:
        ended = c.get(f"/v1/jobs/{job_id}").json()
    assert ended["progress"]["units_done"] == 2 and ended["progress"]["eta_seconds"] is None


@pytest.mark.parametrize("status", ["failed", "cancelled", "succeeded", "interrupted"])
def test_an_ended_jobs_progress_shows_nothing_running(api: Any, qr: Any, status: str) -> None:
    """A driver killed mid-training leaves a progress.json of units running and pending:
    once the job is final, its status showed them as live (a client polling `running` or
    `pending` waited for work that no one does). They read 0, and the progress is marked
    stale: its phase is the dead driver's last report."""
    store = JobStore(api.engine)
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        progress = api.storage / "jobs" / job_id / "progress.json"
        doc = qr.progress_doc(4, 1, running=2)
        doc["units"].update(running=1, starting=1, pending=1)
        progress.write_text(json.dumps(doc))
        store.transition(job_id, "queued", status="running", ray_submission_id=job_id)
        live = c.get(f"/v1/jobs/{job_id}").json()["progress"]
        store.transition(job_id, "running", status=status)
        ended = c.get(f"/v1/jobs/{job_id}").json()["progress"]
        # a driver that wrote its end (phase failed) is not stale; nothing runs either way
        progress.write_text(json.dumps({**doc, "phase": "failed"}))
        reported = c.get(f"/v1/jobs/{job_id}").json()["progress"]
        # ... but one killed while it wrote a stopped job's results did not write its end
        progress.write_text(json.dumps({**doc, "phase": "stopped",
                                        "message": f"stopped by SIGTERM: {WRITING_RESULTS}"}))
        cut_off = c.get(f"/v1/jobs/{job_id}").json()["progress"]
        progress.write_text(json.dumps({**doc, "phase": "stopped",
                                        "message": f"stopped by SIGTERM: {RESULTS_WRITTEN}"}))
        written = c.get(f"/v1/jobs/{job_id}").json()["progress"]
    assert cut_off["stale"] is True and written["stale"] is False
    assert (live["units_running"], live["units_starting"], live["units_pending"]) == (1, 1, 1)
    assert live["stale"] is False and live["phase"] == "training"
    assert (ended["units_running"], ended["units_starting"], ended["units_pending"]) == (
        0, 0, 0)
    assert ended["stale"] is True and ended["phase"] == "training"
    assert ended["units_done"] == 1 and ended["units_total"] == 4
    assert reported["stale"] is False and reported["units_running"] == 0


def test_a_resumed_job_shows_no_progress_of_its_previous_attempt(api: Any, qr: Any) -> None:
    """After a resume, progress.json is the cancelled attempt's until the new driver writes
    its own (stamped with the attempt): status shows none rather than the old counts."""
    store = JobStore(api.engine)
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        _write_results(api, job_id, qr.progress_doc(4, 2, running=1))
        store.transition(job_id, "queued", status="running", ray_submission_id=job_id)
        c.post(f"/v1/jobs/{job_id}/cancel")
        store.transition(job_id, "running", status="cancelled")
        assert c.post(f"/v1/jobs/{job_id}/resume").json()["attempt"] == 1
        store.transition(job_id, "queued", status="running", ray_submission_id=f"{job_id}-r1")
        stale = c.get(f"/v1/jobs/{job_id}").json()
        progress = api.storage / "jobs" / job_id / "progress.json"
        progress.write_text(json.dumps(qr.progress_doc(4, 3, running=1, attempt=1)))
        fresh = c.get(f"/v1/jobs/{job_id}").json()
    assert stale["status"] == "running" and stale["progress"] is None
    assert fresh["progress"]["units_done"] == 3 and fresh["progress"]["units_running"] == 1


def test_a_client_that_leaves_mid_body_is_no_server_error(
        api: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A POST whose client closed before sending its declared body was an ERROR traceback
    and a 500 in /metrics: it is a 499 (the client closed the request), logged at INFO."""
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 100\r\nAuthorization: Bearer "
                     + api.keys["alice"].encode() + b"\r\n\r\n{}")
        time.sleep(0.3)  # the route is reading the body
    closed = '{method="POST",route="/v1/jobs",status="499"} 1.0'
    deadline = time.monotonic() + 10
    with api.client() as c:
        while f"_count{closed}" not in (text := c.get("/metrics").text):
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
    assert 'status="500"' not in text
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    with api.client() as c:  # the server goes on
        assert c.post("/v1/jobs", json=SPEC).status_code == 201


def test_an_error_answer_escapes_what_utf8_cannot_encode() -> None:
    """Defence in depth: a lone surrogate echoed in an error (the spec checks refuse them
    first) is sent \\u-escaped, not failed with a 500."""
    from service.errors import ErrorResponse, error_body

    resp = ErrorResponse(error_body("invalid", "key '\ud800' is unknown"), 422)
    assert json.loads(resp.body) == {"error": "invalid", "message": "key '\ud800' is unknown",
                                     "errors": []}
    assert b"\\ud800" in resp.body


def test_metrics_models_health_openapi(api: Any) -> None:
    with api.client() as c:
        c.post("/v1/jobs", json=SPEC)
        c.get("/v1/jobs")
        text = c.get("/metrics").text
        models = c.get("/v1/models").json()
        ready = c.get("/readyz")
        health = c.get("/healthz")
        spec = c.get("/openapi.json").json()
    assert 'quantray_jobs{status="queued"} 1.0' in text
    assert "quantray_queue_depth 1.0" in text
    post_201 = '{method="POST",route="/v1/jobs",status="201"} 1.0'
    assert f"quantray_http_request_duration_seconds_count{post_201}" in text
    names = {m["name"] for m in models["models"]}
    assert {"ols", "lstm", "transformer"} <= names
    assert health.json() == {"status": "ok"}
    # This server only queues (no Ray, QUANTRAY_MAX_RUNNING_JOBS=0): Ray is not its to check.
    assert ready.status_code == 200 and ready.json()["down"] == []
    assert ready.json()["checks"]["ray"].startswith("not used: this server only queues jobs")
    assert ready.json()["checks"]["database"] == "ok" and ready.json()["checks"]["storage"] == "ok"
    body = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/yaml"}
    assert body["application/json"]["examples"]["sp500"]["value"]["models"]


def test_a_queued_job_says_why_it_waits_when_ray_is_down(tmp_path: Any) -> None:
    import time

    from tests.service.conftest import make_settings, start_api

    settings = make_settings(tmp_path, ray_address="http://127.0.0.1:9", max_running_jobs=1)
    server, api = start_api(settings, {"alice": False})
    try:
        with api.client() as c:
            job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
            deadline = time.monotonic() + 15
            job = c.get(f"/v1/jobs/{job_id}").json()
            while not job["message"] and time.monotonic() < deadline:
                time.sleep(0.1)
                job = c.get(f"/v1/jobs/{job_id}").json()
            # claimed for submission, so a cancel waits for Ray to say whether it got it
            cancel = c.post(f"/v1/jobs/{job_id}/cancel").json()
    finally:
        server.__exit__()
    assert job["status"] == "queued"
    assert job["message"].startswith("waiting to be submitted:"), job
    assert "127.0.0.1:9" in job["message"]
    assert cancel["status"] == "queued" and cancel["cancel_requested"] is True
    assert cancel["message"].startswith("cancel requested, settled once Ray answers again:")


def _moto(monkeypatch: Any) -> tuple[Any, int]:
    """A started moto S3 server on a free loopback port (the caller stops it), with test
    credentials in the environment."""
    from moto.server import ThreadedMotoServer

    from service.local_ray import free_port

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"
                       }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    return moto, port


def test_storage_that_cannot_be_written_is_a_503_naming_it_and_stores_nothing(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """A missing bucket behind a real S3 endpoint (moto on loopback): the submit is a JSON
    503 naming QUANTRAY_STORAGE_URI and the bucket, no job row is left, and /readyz says
    storage is down (it said ok: the endpoint answered)."""
    from tests.service.conftest import job_count, make_settings, start_api

    moto, port = _moto(monkeypatch)
    try:
        uri = f"s3://no-such-bucket/store?endpoint_override=http://127.0.0.1:{port}"
        server, api = start_api(make_settings(tmp_path, storage_uri=uri), {"alice": False})
        try:
            with api.client() as c:
                submit = c.post("/v1/jobs", json=SPEC)
                ready = c.get("/readyz")
                listed = c.get("/v1/jobs").json()
        finally:
            server.__exit__()
    finally:
        moto.stop()
    assert submit.status_code == 503, submit.text
    body = submit.json()
    assert body["error"] == "storage_unavailable"
    assert "QUANTRAY_STORAGE_URI" in body["message"] and "no-such-bucket" in body["message"]
    assert job_count(api.engine) == 0 and listed["total"] == 0
    assert ready.status_code == 503 and "storage" in ready.json()["down"]
    assert "no-such-bucket" in ready.json()["checks"]["storage"]


def test_readyz_names_the_setting_of_a_storage_endpoint_that_does_not_answer(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """A refused S3 endpoint: /readyz said only pyarrow's "AWS Error NETWORK_CONNECTION",
    where a missing bucket names QUANTRAY_STORAGE_URI: both name it."""
    from tests.service.conftest import make_settings, start_api

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    uri = "s3://b/store?endpoint_override=http://127.0.0.1:9&region=us-east-1&scheme=http"
    server, api = start_api(make_settings(tmp_path, storage_uri=uri), {"alice": False})
    try:
        with api.client() as c:
            ready = c.get("/readyz")
    finally:
        server.__exit__()
    assert ready.status_code == 503 and ready.json()["down"] == ["storage"]
    storage = ready.json()["checks"]["storage"]
    assert storage.startswith("down: OSError") and "127.0.0.1:9" in storage
    assert storage.endswith("(check QUANTRAY_STORAGE_URI and its server)")


def test_an_unexpected_error_is_a_json_500(api: Any, monkeypatch: Any) -> None:
    from service import routes_jobs

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(routes_jobs, "_create", broken)
    with api.client() as c:
        r = c.post("/v1/jobs", json=SPEC)
    assert r.status_code == 500
    assert r.json()["error"] == "internal" and "RuntimeError" in r.json()["message"]


READ_ROUTES = ("results", "summary", "artifacts", "artifacts/AAA/ols/f0/metrics.json", "plots",
               "plots/comparison.png")  # fmt: skip


def test_read_routes_say_storage_is_unavailable_not_missing_files(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """Every route that reads job storage answers a JSON 503 `storage_unavailable` naming
    QUANTRAY_STORAGE_URI when the bucket is gone or the endpoint does not answer (not a 500,
    a 404 "has no results" or an empty plot list); an absent file in a reachable bucket
    stays a 404 (moto on loopback)."""
    import pyarrow.fs as pafs

    from tests.service.conftest import make_settings, start_api

    moto, port = _moto(monkeypatch)
    endpoint = f"http://127.0.0.1:{port}"
    s3 = pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1", scheme="http",
                           allow_bucket_creation=True, allow_bucket_deletion=True)
    s3.create_dir("qr-store")
    uri = f"s3://qr-store/store?endpoint_override={endpoint}&region=us-east-1&scheme=http"
    server, api = start_api(make_settings(tmp_path, storage_uri=uri), {"alice": False})
    answers: dict[str, dict[str, Any]] = {}
    try:
        with api.client() as c:
            job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
            # attempt 0 ran on Ray and was cancelled there
            JobStore(api.engine).transition(job_id, "queued", status="cancelled",
                                            ray_submission_id=job_id)
            assert c.post(f"/v1/jobs/{job_id}/resume").json()["attempt"] == 1
            for when in ("reachable", "no bucket", "endpoint down"):
                if when == "no bucket":
                    s3.delete_dir("qr-store")
                elif when == "endpoint down":
                    moto.stop()
                answers[when] = {r: c.get(f"/v1/jobs/{job_id}/{r}") for r in READ_ROUTES}
                # resume reads spec.json, and an earlier attempt's log is the stored copy
                answers[when]["resume"] = c.post(f"/v1/jobs/{job_id}/resume")
                answers[when]["logs?attempt=0"] = c.get(f"/v1/jobs/{job_id}/logs?attempt=0")
    finally:
        server.__exit__()
        if "endpoint down" not in answers:
            moto.stop()
    reachable = answers.pop("reachable")
    assert {r: a.status_code for r, a in reachable.items()} == {
        **dict.fromkeys(READ_ROUTES, 404), "plots": 200, "resume": 409, "logs?attempt=0": 404}
    assert reachable["plots"].json() == {"plots": []}
    for when, by_route in answers.items():
        for route, answer in by_route.items():
            assert answer.status_code == 503, (when, route, answer.text)
            body = answer.json()
            assert body["error"] == "storage_unavailable", (when, route, body)
            assert "QUANTRAY_STORAGE_URI" in body["message"] and "qr-store" in body["message"]
            assert job_id in body["message"]
    assert "does not exist" in answers["no bucket"]["summary"].json()["message"]


def test_artifacts_found_by_the_symbol_as_the_data_spells_it(api: Any) -> None:
    """Units of BRK.B are stored under units/BRK_B/ (data.symbols.safe_symbol): the path's
    symbol and ?prefix= may be spelled either way."""
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        model = api.storage / "jobs" / job_id / "units" / "BRK_B" / "ols" / "f0" / "model"
        model.mkdir(parents=True)
        (model / "metadata.json").write_text('{"symbol": "BRK.B"}')
        for prefix in ("BRK.B/ols/", "BRK_B/ols/f0/model/"):  # a folder, as a shell gives it
            listed = c.get(f"/v1/jobs/{job_id}/artifacts", params={"prefix": prefix})
            assert [f["path"] for f in listed.json()["files"]] == [
                "BRK_B/ols/f0/model/metadata.json"], (prefix, listed.text)
        for symbol in ("BRK.B", "BRK_B"):
            got = c.get(f"/v1/jobs/{job_id}/artifacts/{symbol}/ols/f0/model/metadata.json")
            assert got.status_code == 200, (symbol, got.text)
            assert got.json() == {"symbol": "BRK.B"}
            listed = c.get(f"/v1/jobs/{job_id}/artifacts", params={"prefix": symbol})
            assert listed.status_code == 200, (symbol, listed.text)
            assert listed.json()["files"] == [
                {"path": "BRK_B/ols/f0/model/metadata.json", "size": 19}]
        assert c.get(f"/v1/jobs/{job_id}/artifacts/BRK.B/ols/f1/x.json").status_code == 404


def test_an_artifact_path_with_a_slash_symbol_is_told_its_safe_form(api: Any) -> None:
    """BF/B's units are stored under units/BF_B/: `BF/B/ols/...` reads as symbol BF with a
    folder B, which is not there. The 400 names the path to use (a plain 404 did not);
    a path that is simply missing stays a 404."""
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        model = api.storage / "jobs" / job_id / "units" / "BF_B" / "ols" / "f0" / "model"
        model.mkdir(parents=True)
        (model / "metadata.json").write_text('{"symbol": "BF/B"}')
        got = c.get(f"/v1/jobs/{job_id}/artifacts/BF/B/ols/f0/model/metadata.json")
        assert got.status_code == 400, got.text
        assert got.json()["errors"] == [{"field": "path.path", "message": (
            "'BF/B/ols/f0/model/metadata.json': a symbol with a '/' is stored under its "
            "file-safe name: use 'BF_B/ols/f0/model/metadata.json'")}]
        listed = c.get(f"/v1/jobs/{job_id}/artifacts", params={"prefix": "BF/B/ols"})
        assert listed.status_code == 400 and "use 'BF_B/ols'" in listed.text, listed.text
        assert c.get(f"/v1/jobs/{job_id}/artifacts/BF_B/ols/f0/model/metadata.json").json() \
            == {"symbol": "BF/B"}
        assert c.get(f"/v1/jobs/{job_id}/artifacts/XY/Z/ols/f0/x.json").status_code == 404
        # BF_B is there but not this file: no path to use is offered, a plain 404
        assert c.get(f"/v1/jobs/{job_id}/artifacts/BF/B/ols/f1/x.json").status_code == 404
        assert c.get(f"/v1/jobs/{job_id}/artifacts",
                     params={"prefix": "XY/Z"}).status_code == 404
        # a symbol with two '/'s is found too
        (api.storage / "jobs" / job_id / "units" / "A_B_C" / "ols" / "f0").mkdir(parents=True)
        listed = c.get(f"/v1/jobs/{job_id}/artifacts", params={"prefix": "A/B/C/ols"})
        assert listed.status_code == 400 and "use 'A_B_C/ols'" in listed.text, listed.text
        # X/ols of a stored symbol X without ols is missing, whatever X_ols (a symbol
        # `X.ols`) holds: no path to use is offered
        for folder in ("X/lasso/f0", "X_ols/ols/f0"):
            (api.storage / "jobs" / job_id / "units" / folder).mkdir(parents=True)
        got = c.get(f"/v1/jobs/{job_id}/artifacts", params={"prefix": "X/ols"})
        assert got.status_code == 404, got.text
        got = c.get(f"/v1/jobs/{job_id}/artifacts", params={"prefix": "X.ols/ols"})
        assert got.status_code == 200, got.text  # the data's spelling of X_ols still works


def test_a_summary_with_nan_is_served_with_null(api: Any) -> None:
    """summary.json as Python's json writes it may hold NaN/Infinity (not JSON): the route
    answers 200 with null there, as the leaderboard's rows do, not a 500."""
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        results = api.storage / "jobs" / job_id / "results"
        results.mkdir(parents=True)
        (results / "summary.json").write_text(
            '{"models": [{"model": "ols", "accuracy": {"mean": NaN, "std": Infinity}}]}')
        got = c.get(f"/v1/jobs/{job_id}/summary")
    assert got.status_code == 200, got.text
    assert got.json() == {"models": [{"model": "ols", "accuracy": {"mean": None, "std": None}}]}


def test_logs_of_a_resumed_job_waiting_in_the_queue_point_to_earlier_attempts(api: Any) -> None:
    """A resumed job back in the queue has no Ray log yet, but its earlier attempts stored
    theirs: the 409 says how to read them."""
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        # attempt 0 ran on Ray and was cancelled there
        JobStore(api.engine).transition(job_id, "queued", status="cancelled",
                                        ray_submission_id=job_id)
        assert c.post(f"/v1/jobs/{job_id}/resume").json()["attempt"] == 1
        got = c.get(f"/v1/jobs/{job_id}/logs")
    assert got.status_code == 409, got.text
    assert "?attempt=0 to 0" in got.json()["message"], got.json()
    assert f"quantray logs {job_id} -f" in got.json()["message"]


def test_a_json_spec_with_a_utf8_bom_is_accepted_as_yaml_is(api: Any) -> None:
    """A spec file saved with a UTF-8 byte order mark (Windows editors, PowerShell) is
    accepted as JSON, as it already was as YAML (RFC 8259 lets a parser ignore it)."""
    body = b"\xef\xbb\xbf" + json.dumps(SPEC).encode()
    with api.client() as c:
        for kind in ("application/json", "application/yaml"):
            got = c.post("/v1/jobs", content=body, headers={"Content-Type": kind})
            assert got.status_code == 201, (kind, got.text)


def test_results_sort_and_page_a_big_leaderboard(api: Any, qr: Any) -> None:
    """`sort` (descending with '-', NaN last either way), `limit` and `offset` page the
    filtered rows; `total` counts them all and `next` names the following page."""
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        _write_results(api, job_id, qr.progress_doc(4, 4))
        url = f"/v1/jobs/{job_id}/results"
        best = c.get(url, params={"sort": "-accuracy", "limit": 2}).json()
        assert [r["accuracy"] for r in best["rows"]] == [0.7, 0.6]
        assert best["count"] == 2 and best["total"] == 4 and best["offset"] == 0
        rest = c.get(best["next"]).json()
        assert [r["accuracy"] for r in rest["rows"]] == [0.5, None] and rest["next"] is None
        worst = c.get(url, params={"sort": "accuracy"}).json()
        assert [r["accuracy"] for r in worst["rows"]] == [0.5, 0.6, 0.7, None]
        assert worst["next"] is None and worst["total"] == 4
        tests = c.get(url, params={"split": "test", "sort": "symbol", "offset": 1}).json()
        assert tests["total"] == 3 and [r["symbol"] for r in tests["rows"]] == ["BBB", "BBB"]
        csv = c.get(url, params={"sort": "-accuracy", "limit": 1},
                    headers={"Accept": "text/csv"})
        assert csv.headers["quantray-total-rows"] == "4"
        assert pacsv.read_csv(io.BytesIO(csv.content)).column("accuracy").to_pylist() == [0.7]
        bad = c.get(url, params={"sort": "-acc"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query.sort"
        assert "'acc' is not a leaderboard column" in bad.json()["message"]
        assert c.get(url, params={"limit": 0}).status_code == 422
        assert c.get(url, params={"offset": -1}).status_code == 422
