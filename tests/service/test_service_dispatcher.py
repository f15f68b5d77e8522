"""The dispatcher against a fake Ray Jobs server over real HTTP: the running cap, oldest
first, Ray state mapping, cancel, reconcile after a restart, resume, crash recovery."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from service.db import make_engine
from service.dispatcher import Dispatcher, map_ray_state, submission_id
from service.job_files import JobFiles, parse_progress
from service.ray_client import (
    RayError,
    RayJobInfo,
    RayJobsClient,
    RaySubmissionExists,
    RayUnavailable,
)
from service.store import JobStore

SPEC: dict[str, Any] = {"name": "a", "models": ["ols"], "dataset": {"uri": "sample:sp500"}}


def _nothing(_job_id: str) -> None:
    """No files to write or remove for store-level tests."""


class Rig:
    """A store, a storage root and a dispatcher wired to the fake Ray server."""

    def __init__(self, tmp: Path, ray_url: str, max_running: int = 2, token: str | None = None):
        self.engine = make_engine(f"sqlite:///{tmp / 'q.db'}")
        self.store = JobStore(self.engine)
        self.storage = f"file://{tmp / 'storage'}"
        self.files = JobFiles(self.storage)
        self.ray_url, self.max_running, self.token = ray_url, max_running, token

    def new_job(self) -> str:
        job, _ = self.store.create(
            owner="alice",
            name="a",
            spec=SPEC,
            idempotency_key=None,
            write_files=_nothing,
            remove_files=_nothing,
        )
        return job.id

    def status(self, job_id: str) -> str:
        return self.store.get(job_id).status

    def ticks(self, n: int = 1, *, max_running: int | None = None) -> Dispatcher:
        """Run `n` ticks of a fresh dispatcher (a fresh one = what a restarted API builds)."""

        async def go() -> Dispatcher:
            ray = RayJobsClient(self.ray_url, token=self.token, timeout_s=5)
            cap = self.max_running if max_running is None else max_running
            env = {"env_vars": {"A": "1"}}
            disp = Dispatcher(
                self.store,
                ray,
                self.files,
                max_running_jobs=cap,
                storage_uri=self.storage,
                runtime_env=env,
            )
            try:
                for _ in range(n):
                    await disp.tick()
            finally:
                await ray.aclose()
            return disp

        return asyncio.run(go())


@pytest.fixture
def rig(tmp_path: Path, fake_ray: tuple[Any, str]) -> tuple[Rig, Any]:
    fake, url = fake_ray
    return Rig(tmp_path, url), fake


def test_cap_respected_oldest_first_and_exact_submission(rig: tuple[Rig, Any]) -> None:
    r, fake = rig
    ids = [r.new_job() for _ in range(5)]
    r.ticks(2)
    assert [s["submission_id"] for s in fake.submissions] == ids[:2]
    assert [r.status(i) for i in ids] == ["running"] * 2 + ["queued"] * 3
    first = fake.submissions[0]
    assert shlex.split(first["entrypoint"]) == [
        "python",
        "-m",
        "ray_jobs.run",
        "--job-id",
        ids[0],
        "--storage",
        r.storage,
        "--attempt",
        "0",
    ]
    assert first["metadata"] == {
        "quantray_job_id": ids[0],
        "quantray_owner": "alice",
        "quantray_attempt": "0",
    }
    # the operator's env vars, and time for a cancelled driver to write partial results
    assert first["runtime_env"] == {"env_vars": {"A": "1", "RAY_JOB_STOP_WAIT_TIME_S": "30"}}
    fake.set_status(ids[1], "SUCCEEDED")
    r.ticks()
    assert r.status(ids[1]) == "succeeded"
    assert [s["submission_id"] for s in fake.submissions] == ids[:3]
    fake.set_status(ids[0], "RUNNING")
    r.ticks(3)
    assert len(fake.submissions) == 3  # still two running: the cap holds


def test_max_running_zero_submits_nothing(tmp_path: Path, fake_ray: tuple[Any, str]) -> None:
    fake, url = fake_ray
    r = Rig(tmp_path, url, max_running=0)
    ids = [r.new_job() for _ in range(3)]
    r.ticks(2)
    assert fake.submissions == [] and {r.status(i) for i in ids} == {"queued"}


def _info(status: str, message: str | None = None) -> RayJobInfo:
    return RayJobInfo("sid", status, message, None, None, None, {})


@pytest.mark.parametrize(
    ("ray", "cancelled", "progress", "expected", "text"),
    [
        ("PENDING", False, None, "running", None),
        ("RUNNING", True, None, "running", None),
        ("SUCCEEDED", False, None, "succeeded", None),
        ("SUCCEEDED", False, (4, 4, ()), "succeeded", None),
        ("SUCCEEDED", False, (4, 3, (("AAA/lstm", "nan loss"),)), "failed", "1 of 4 units failed"),
        ("FAILED", False, None, "failed", "driver crashed"),
        ("STOPPED", True, None, "cancelled", "before any unit ended"),
        ("STOPPED", True, (4, 1, (), 0, 0, "stopped"), "cancelled", "partial results kept"),
        # the driver was killed while it wrote them (it says so before it starts)
        ("STOPPED", True, (4, 1, (), 0, 0, "stopped",
                           "stopped by SIGTERM: writing the finished units' results"),
         "cancelled", "stopped while it wrote their leaderboard and plots, which may be "
         "incomplete"),
        # the cancel came as the driver wrote its report, which it finished
        ("STOPPED", True, (4, 4, (), 0, 0, "succeeded"), "cancelled",
         "as the job wrote its results: all its units had ended, and the results are "
         "complete"),
        # Ray's grace ran out before the driver wrote the ended units' results
        ("STOPPED", True, (4, 1, ()), "cancelled", "1 units had ended, but the driver was "
         "stopped before it wrote their leaderboard"),
        ("STOPPED", False, None, "interrupted", "without a cancel request"),
    ],
)
def test_state_mapping(
    ray: str, cancelled: bool, progress: Any, expected: str, text: Any, qr: Any
) -> None:
    """`progress`: (total, done, failures) for a progress.json written by the driver's code."""
    parsed = parse_progress(qr.progress_doc(*progress)) if progress is not None else None
    out = map_ray_state(_info(ray, "driver crashed"), cancel_requested=cancelled, progress=parsed)
    assert out.status == expected
    if text:
        assert text in (out.message or "")
    if expected == "failed" and progress:
        assert out.errors == ({"unit_id": "AAA/lstm", "error": "nan loss"},)


def test_failed_job_message_is_a_summary_not_the_log(qr: Any) -> None:
    """A driver that ran to the end with failed units exits 1 (Ray: FAILED, with 20,000
    characters of log as the message): the job says how many units failed. A crash keeps
    the end of the log, where the cause is."""
    log = "progress line\n" * 3000 + "ValueError: the real cause"
    doc = qr.progress_doc(4, 3, (("AAA__lstm__f0", "nan loss"),))
    ended = parse_progress({**doc, "phase": "failed"})
    out = map_ray_state(_info("FAILED", log), cancel_requested=False, progress=ended)
    assert out.status == "failed" and out.message == "1 of 4 units failed; partial results kept"
    assert out.errors == ({"unit_id": "AAA__lstm__f0", "error": "nan loss"},)
    crashed = parse_progress(doc)  # phase "training": the driver died mid-job
    out = map_ray_state(_info("FAILED", log), cancel_requested=False, progress=crashed)
    assert out.status == "failed" and "ValueError: the real cause" in out.message
    assert len(out.message) < 2200 and "/logs" in out.message
    # from a line's start, not cut mid-word
    for cause in ("ValueError: the real cause", "ValueError: the real cause!!"):
        info = _info("FAILED", "progress line\n" * 3000 + cause)
        out = map_ray_state(info, cancel_requested=False, progress=crashed)
        assert "... progress line\n" in out.message and out.message.count("progress") == 141
    # a log that the line's start brings back whole is not said to be cut
    whole = "x" * 300 + "\n" + "ValueError: " + "y" * 1900
    out = map_ray_state(_info("FAILED", whole), cancel_requested=False, progress=crashed)
    assert "..." not in out.message and whole in out.message
    # a driver that could not even plan (exit 2) says why in its progress: that is the job's
    unusable = parse_progress({**qr.progress_doc(0, 0, ()), "phase": "failed",
                               "message": "the job's dataset cannot be used: not found"})
    out = map_ray_state(_info("FAILED", log), cancel_requested=False, progress=unusable)
    assert out.status == "failed" and out.message == (
        "the job's dataset cannot be used: not found")


@pytest.mark.parametrize("code", [-9, 137])  # the process itself, or the shell around it
def test_a_killed_driver_says_so_and_how_to_go_on(code: int, qr: Any) -> None:
    """Ray's message for a driver killed mid-job is its log's last 20,000 characters
    ending in 'Killed': the job says it was killed, where, and that resume goes on."""
    crashed = parse_progress(qr.progress_doc(24, 20, ()))  # phase "training"
    info = dataclasses.replace(_info("FAILED", "Reporting training result...\nKilled"),
                               driver_exit_code=code, metadata={"quantray_job_id": "qr-7"})
    out = map_ray_state(info, cancel_requested=False, progress=crashed)
    assert out.status == "failed"
    assert out.message.startswith("the job's driver was ended by SIGKILL in phase 'training' "
                                  "with 20 of 24 units done (by hand, or out of memory)")
    assert "quantray resume qr-7" in out.message and "Reporting" not in out.message
    # SIGTERM sent to the driver itself (a cancel through the API is Ray's STOPPED)
    term = dataclasses.replace(info, driver_exit_code=143)
    out = map_ray_state(term, cancel_requested=False, progress=crashed)
    assert "ended by SIGTERM" in out.message and "not a cancel through the API" in out.message
    # killed after it wrote every result: nothing is missing, no resume to ask for
    finished = parse_progress({**qr.progress_doc(24, 24, ()), "phase": "succeeded"})
    out = map_ray_state(info, cancel_requested=False, progress=finished)
    assert out.status == "succeeded" and "results written" in out.message
    assert "resume" not in out.message
    # an ordinary failure (exit 1 with a traceback) keeps the log's end
    info = dataclasses.replace(info, message="ValueError: the cause", driver_exit_code=1)
    out = map_ray_state(info, cancel_requested=False, progress=crashed)
    assert "ValueError: the cause" in out.message


def test_failed_units_from_progress_fail_the_job(rig: tuple[Rig, Any], qr: Any) -> None:
    r, fake = rig
    job_id = r.new_job()
    r.ticks()
    progress = Path(r.storage[len("file://") :]) / "jobs" / job_id / "progress.json"
    progress.parent.mkdir(parents=True)
    progress.write_text(json.dumps(qr.progress_doc(2, 1, (("BBB/ols", "singular matrix"),))))
    fake.set_status(job_id, "SUCCEEDED")
    r.ticks()
    job = r.store.get(job_id)
    assert job.status == "failed" and "1 of 2 units failed" in (job.message or "")
    assert job.errors == [{"unit_id": "BBB/ols", "error": "singular matrix"}]
    assert job.finished_at is not None


def test_cancel_stops_on_ray_then_cancelled(rig: tuple[Rig, Any], qr: Any) -> None:
    """The stop goes to Ray; the job ends cancelled, and its message says whether any unit
    had ended (its partial results are kept) from the job's progress.json."""
    r, fake = rig
    messages = []
    for done in (0, 4):
        job_id = r.new_job()
        r.ticks()
        fake.set_status(job_id, "RUNNING")
        if done:
            progress = Path(r.storage[len("file://") :]) / "jobs" / job_id / "progress.json"
            progress.parent.mkdir(parents=True)
            progress.write_text(json.dumps(qr.progress_doc(8, done, phase="stopped")))
        r.store.request_cancel(r.store.get(job_id))
        r.ticks()  # sees RUNNING + cancel_requested: (re)sends the stop
        assert fake.stops[-1] == job_id and fake.jobs[job_id]["status"] == "STOPPED"
        r.ticks()
        assert r.status(job_id) == "cancelled"
        messages.append(r.store.get(job_id).message)
    assert "before any unit ended" in messages[0]
    assert messages[1] == "cancelled on request; partial results kept"


def test_restart_reconcile_marks_vanished_interrupted_and_resume_resubmits(
    rig: tuple[Rig, Any],
) -> None:
    r, fake = rig
    job_id = r.new_job()
    r.ticks()
    fake.forget_all()  # the Ray head restarted while the API was down
    r.ticks()
    job = r.store.get(job_id)
    assert job.status == "interrupted" and job_id in (job.message or "")
    resumed = r.store.resume(job)
    assert submission_id(resumed) == f"{job_id}-r1"
    r.ticks()
    assert r.status(job_id) == "running"
    last = fake.submissions[-1]
    assert last["submission_id"] == f"{job_id}-r1"
    args = shlex.split(last["entrypoint"])
    assert args[4] == job_id  # same job id: finished units skipped
    assert args[-2:] == ["--attempt", "1"]  # stamped on its progress.json
    assert last["metadata"]["quantray_attempt"] == "1"


def test_cancel_while_ray_is_away_ends_cancelled_when_ray_forgot_the_job(
    rig: tuple[Rig, Any],
) -> None:
    """A cancel sent while the Ray head is down is stored (cancel_requested); a head that
    comes back without the job means the job stopped: `cancelled`, not `interrupted`."""
    r, fake = rig
    job_id = r.new_job()
    r.ticks()
    fake.set_status(job_id, "RUNNING")
    flagged = r.store.request_cancel(r.store.get(job_id))  # the stop could not be delivered
    assert flagged.status == "running" and flagged.cancel_requested
    fake.forget_all()  # the head restarted without it
    r.ticks()
    job = r.store.get(job_id)
    assert job.status == "cancelled", job
    assert job.message.startswith("cancelled on request;") and job_id in job.message
    assert r.store.resume(job).status == "queued"  # what finished is kept; resume goes on


def test_crash_between_claim_and_post(rig: tuple[Rig, Any]) -> None:
    """A claimed-but-unposted job is posted once; a posted-but-unrecorded one is adopted."""
    r, fake = rig
    lost, posted = r.new_job(), r.new_job()
    for job_id in (lost, posted):
        assert r.store.claim_for_submission(r.store.get(job_id), job_id)
    fake.jobs[posted] = {
        "type": "SUBMISSION",
        "submission_id": posted,
        "status": "RUNNING",
        "entrypoint": "x",
        "message": None,
        "error_type": None,
        "start_time": 0,
        "end_time": None,
        "metadata": {},
        "logs": "",
    }
    r.ticks(2)
    assert [s["submission_id"] for s in fake.submissions] == [lost]
    assert r.status(lost) == "running" and r.status(posted) == "running"


def test_ray_down_or_bad_token_is_reported_not_raised(
    tmp_path: Path, fake_ray: tuple[Any, str]
) -> None:
    fake, url = fake_ray
    fake.token = "s3cret"
    r = Rig(tmp_path, url, token=None)
    job_id = r.new_job()
    disp = r.ticks()
    assert "QUANTRAY_RAY_AUTH_TOKEN" in (disp.last_error or "")
    assert fake.auth_headers[-1] is None
    r.token = "s3cret"
    assert r.ticks().last_error is None
    assert fake.auth_headers[-1] == "Bearer s3cret" and r.status(job_id) == "running"
    r.ray_url = "http://127.0.0.1:9"  # nothing listens there
    disp = r.ticks()
    assert "unreachable" in (disp.last_error or "") and r.status(job_id) == "running"


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_api_restart_keeps_jobs_and_reconciles(
    tmp_path: Path, db_url: str, fake_ray: tuple[Any, str], qr: Any
) -> None:
    """Through real HTTP, on SQLite and PostgreSQL: stop the API, lose the Ray side, start a
    new API on the same database: nothing is lost, the vanished job is interrupted, the
    queued one starts, and resume brings the first back under the same id."""
    fake, url = fake_ray
    settings = qr.make_settings(tmp_path, database_url=db_url, ray_address=url, max_running_jobs=1)
    server, api = qr.start_api(settings, {"alice": False})
    with api.client() as c:
        first = c.post("/v1/jobs", json=qr.SPEC).json()["id"]
        second = c.post("/v1/jobs", json={**qr.SPEC, "name": "t2"}).json()["id"]
        _wait(lambda: c.get(f"/v1/jobs/{first}").json()["status"] == "running", "first running")
        job = c.get(f"/v1/jobs/{first}").json()
        assert job["ray"]["submission_id"] == first
        assert job["ray"]["dashboard_url"] == f"{url}/#/jobs/{first}"
        assert c.get(f"/v1/jobs/{first}/logs").text == f"log of {first}\n"
        assert c.get(f"/v1/jobs/{second}").json()["status"] == "queued"
    server.__exit__()
    fake.forget_all()
    server, api2 = qr.start_api(settings, {})
    api2.keys.update(api.keys)  # the keys live in the same database
    try:
        with api2.client() as c:
            _wait(
                lambda: c.get(f"/v1/jobs/{first}").json()["status"] == "interrupted",
                "first interrupted",
            )
            _wait(
                lambda: c.get(f"/v1/jobs/{second}").json()["status"] == "running", "second running"
            )
            assert c.get("/v1/jobs").json()["total"] == 2
            # Ray forgot the first job's log; the copy its driver stored is served instead
            missing = c.get(f"/v1/jobs/{first}/logs")
            assert missing.status_code == 404 and "stored no driver log" in missing.json()[
                "message"]
            stored = Path(urlsplit(settings.storage_uri).path) / "jobs" / first / "logs"
            stored.mkdir(parents=True)
            (stored / "driver-0.log").write_text("12:00 quantray.driver progress 3/9\n")
            logs = c.get(f"/v1/jobs/{first}/logs")
            assert logs.status_code == 200 and "Ray has no record of submission" in logs.text
            assert logs.text.endswith("12:00 quantray.driver progress 3/9\n")
            fake.set_status(second, "SUCCEEDED")
            resumed = c.post(f"/v1/jobs/{first}/resume").json()
            assert resumed["id"] == first and resumed["attempt"] == 1
            earlier = c.get(f"/v1/jobs/{first}/logs", params={"attempt": 0})
            assert earlier.text.endswith("progress 3/9\n") and "attempt 0" in earlier.text
            beyond = c.get(f"/v1/jobs/{first}/logs", params={"attempt": 2})
            assert beyond.status_code == 422 and "attempts 0..1" in beyond.json()["message"]
            _wait(
                lambda: c.get(f"/v1/jobs/{first}").json()["status"] == "running",
                "first running again",
            )
            assert c.get(f"/v1/jobs/{second}").json()["status"] == "succeeded"
            sids = [s["submission_id"] for s in fake.submissions]
            assert sids == [first, second, f"{first}-r1"]
            # attempt 1 fails and is resumed: Ray still holds attempt 1's whole log (a killed
            # driver's stored copy misses its last seconds, or is not there at all): it is
            # served from Ray
            fake.set_status(f"{first}-r1", "FAILED", "driver crashed")
            _wait(lambda: c.get(f"/v1/jobs/{first}").json()["status"] == "failed", "failed")
            assert c.post(f"/v1/jobs/{first}/resume").json()["attempt"] == 2
            earlier = c.get(f"/v1/jobs/{first}/logs", params={"attempt": 1})
            assert earlier.status_code == 200 and earlier.text == f"log of {first}-r1\n"
    finally:
        server.__exit__()


def test_client_maps_ray_answers_to_errors(fake_ray: tuple[Any, str]) -> None:
    fake, url = fake_ray

    async def go() -> None:
        client = RayJobsClient(url, token=None)
        try:
            await client.submit(entrypoint="echo", submission_id="dup", metadata={"a": "1"})
            with pytest.raises(RaySubmissionExists, match="dup"):
                await client.submit(entrypoint="echo", submission_id="dup")
            with pytest.raises(RayError, match="entrypoint must be a string") as err:
                await client.submit(entrypoint=None, submission_id="bad")  # type: ignore[arg-type]
            assert not isinstance(err.value, RayUnavailable)
            assert (await client.get("dup")).metadata == {"a": "1"}
            assert await client.get("nope") is None and await client.logs("nope") is None
            assert await client.stop("dup") is True and await client.stop("dup") is False
            assert await client.delete("dup") is True and await client.get("dup") is None
        finally:
            await client.aclose()

    asyncio.run(go())


def test_a_replica_whose_count_is_stale_does_not_pass_the_cap(
    rig: tuple[Rig, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two API replicas on one database: replica B counted the jobs on Ray just before
    replica A claimed the free slots. B's claims must fail instead of putting four jobs on
    Ray with max_running_jobs 2 (the claim itself counts the jobs on Ray)."""
    r, fake = rig
    ids = [r.new_job() for _ in range(4)]
    r.ticks()  # replica A fills both slots
    assert [s["submission_id"] for s in fake.submissions] == ids[:2]
    real_on_ray = r.store.on_ray
    calls = {"n": 0}

    def stale_once() -> list:
        calls["n"] += 1  # replica B's first count was taken before A's claims
        return [] if calls["n"] == 1 else real_on_ray()

    monkeypatch.setattr(r.store, "on_ray", stale_once)

    async def replica_b_submits() -> None:
        ray = RayJobsClient(r.ray_url, token=None, timeout_s=5)
        disp = Dispatcher(r.store, ray, r.files, max_running_jobs=2, storage_uri=r.storage)
        try:
            await disp.submit_queued()
        finally:
            await ray.aclose()

    asyncio.run(replica_b_submits())
    assert calls["n"] == 1
    assert [s["submission_id"] for s in fake.submissions] == ids[:2]
    assert [r.status(i) for i in ids] == ["running"] * 2 + ["queued"] * 2
    assert all(r.store.get(i).ray_submission_id is None for i in ids[2:])


def test_a_driver_that_died_of_its_storage_says_so_first_and_to_resume(qr: Any) -> None:
    """The chaos probe's S3 outage right after the leaderboard was written: summary.json's
    write failed and the driver died with a StorageError; the job said "Ray job failed ...
    resubmit". It names the storage first, and resume (what was stored is skipped)."""
    log = ("results written\nTraceback (most recent call last):\n"
           "ray_jobs.storage.StorageError: write s3://b/p/qr-9/results/summary.json: "
           "still failing after 5 attempts")
    crashed = parse_progress(qr.progress_doc(12, 12, ()))  # phase "training": no reason
    info = dataclasses.replace(_info("FAILED", log), metadata={"quantray_job_id": "qr-9"})
    out = map_ray_state(info, cancel_requested=False, progress=crashed)
    assert out.status == "failed"
    assert out.message.startswith("the job storage was unavailable")
    assert "/v1/jobs/qr-9/resume" in out.message and "/v1/jobs/qr-9/logs" in out.message
    # the StorageError's own line, though worker lines follow it in a long log
    long_log = log + "\n" + "(TrainWorker pid=1) epoch 3\n" * 2000
    out = map_ray_state(dataclasses.replace(info, message=long_log), cancel_requested=False,
                        progress=crashed)
    assert ("The error: ray_jobs.storage.StorageError: write s3://b/p/qr-9/results/summary"
            ".json: still failing after 5 attempts (the whole log") in out.message
    assert "TrainWorker" not in out.message
    # a StorageError handled earlier (a logged warning's traceback) and then another
    # death: the job died of the other
    other = dataclasses.replace(info, message=log + "\nlater\nValueError: the cause")
    assert map_ray_state(other, cancel_requested=False, progress=crashed).message.startswith(
        "Ray job failed")
    # another failure keeps the plain message
    other = dataclasses.replace(info, message="ValueError: the cause")
    assert map_ray_state(other, cancel_requested=False, progress=crashed).message.startswith(
        "Ray job failed")


def test_a_driver_that_found_its_files_gone_says_submit_again_not_resume(
    tmp_path: Path, qr: Any
) -> None:
    """The job's files (its spec.json too) were deleted under a running driver, which died
    of the StorageError `ray_jobs.reporting` raises then. A resume fails the same way (the
    API refuses it: no spec.json), so the job says its files are gone and to submit it
    again; it used to say "once the storage answers, resume the job"."""
    from ray_jobs.reporting import _check_job_files_are_there
    from ray_jobs.storage import JobStorage, StorageError

    with pytest.raises(StorageError) as died:  # the driver's own error, text and all
        _check_job_files_are_there(JobStorage(f"file://{tmp_path}", "qr-9"), 3)
    log = (f"Traceback (most recent call last):\n{type(died.value).__module__}."
           f"{type(died.value).__qualname__}: {died.value}")
    info = dataclasses.replace(_info("FAILED", log), metadata={"quantray_job_id": "qr-9"})
    crashed = parse_progress(qr.progress_doc(12, 4, ()))
    out = map_ray_state(info, cancel_requested=False, progress=crashed)
    assert out.status == "failed"
    assert out.message.startswith("the job's files are gone from the job storage"), out.message
    assert ("submit it again (its spec: GET /v1/jobs/qr-9), or resume it once its files are "
            "back") in out.message
    assert "the job storage was unavailable" not in out.message
    assert "/v1/jobs/qr-9/resume" not in out.message and "/v1/jobs/qr-9/logs" in out.message


def _unreadable_progress(r: Rig, job_id: str) -> Path:
    """progress.json as a directory: reading it raises an OSError, as a storage outage does."""
    progress = Path(r.storage[len("file://") :]) / "jobs" / job_id / "progress.json"
    progress.mkdir(parents=True)
    return progress


def test_an_ended_job_whose_storage_does_not_answer_says_so_then_fails_at_a_deadline(
    rig: tuple[Rig, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver died (Ray: FAILED) while the job storage does not answer: the job stayed
    `running` with no message, the dead driver's progress shown as live, and for ever if
    the storage never came back. Its message says the driver ended and the final status
    waits for the storage; after STORAGE_WAIT_S it fails, saying why and that resume goes
    on; a cancel sent meanwhile is told it did not act."""
    from service import dispatcher

    r, fake = rig
    job_id = r.new_job()
    r.ticks()
    _unreadable_progress(r, job_id)
    fake.set_status(job_id, "FAILED", "Job entrypoint command failed with exit code 1")
    r.ticks(2)
    job = r.store.get(job_id)
    assert job.status == "running"
    assert job.message.startswith(
        f"the job's driver ended on Ray (FAILED); its final status waits for the job storage "
        f"({r.storage}), which does not answer: it is settled once the storage answers, or "
        "at "), job.message
    assert "as failed if it still does not" in job.message and "cancel" not in job.message
    # a cancel is accepted (the job is `running`); the message says it cannot act
    r.store.request_cancel(job)
    r.ticks()
    job = r.store.get(job_id)
    assert job.status == "running"
    assert job.message.endswith("the cancel requested cannot act: the job had already ended "
                                "on Ray"), job.message
    monkeypatch.setattr(dispatcher, "STORAGE_WAIT_S", 0.0)  # the deadline has passed
    r.ticks()
    job = r.store.get(job_id)
    assert job.status == "failed" and job.finished_at is not None
    assert job.message.startswith(
        f"the job storage ({r.storage}) did not answer for 0 minutes after the job's driver "
        "ended on Ray (FAILED), so what the job finished is not known: once the storage "
        f"answers, resume the job (POST /v1/jobs/{job_id}/resume"), job.message
    assert "what it stored is skipped" in job.message
    assert "exit code 1" in job.message  # Ray's own report follows
    assert job.message.endswith("the cancel requested did not act: the job ended on Ray "
                                "(FAILED) before the cancel could stop it"), job.message
    assert r.store.resume(job).status == "queued"


def test_a_cancel_that_came_after_the_job_ended_on_ray_says_it_did_not_act(
    rig: tuple[Rig, Any], qr: Any
) -> None:
    """The driver finished before the stop reached it, and the storage answers: the job is
    what its driver made of it (succeeded), and its message says the cancel did not act."""
    r, fake = rig
    job_id = r.new_job()
    r.ticks()
    fake.set_status(job_id, "RUNNING")
    r.ticks()
    r.store.request_cancel(r.store.get(job_id))
    progress = Path(r.storage[len("file://") :]) / "jobs" / job_id / "progress.json"
    progress.parent.mkdir(parents=True)
    progress.write_text(json.dumps({**qr.progress_doc(2, 2), "phase": "succeeded"}))
    fake.set_status(job_id, "SUCCEEDED")
    r.ticks()
    job = r.store.get(job_id)
    assert job.status == "succeeded"
    assert job.message == ("the cancel requested did not act: the job ended on Ray "
                           "(SUCCEEDED) before the cancel could stop it")


def test_a_stopped_job_settled_without_its_storage_does_not_guess_what_it_finished(
    rig: tuple[Rig, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled job (Ray: STOPPED) settled at the storage deadline was said to be
    "cancelled on request before any unit ended", which nothing could know then."""
    from service import dispatcher

    r, fake = rig
    job_id = r.new_job()
    r.ticks()
    r.store.request_cancel(r.store.get(job_id))
    _unreadable_progress(r, job_id)
    fake.set_status(job_id, "STOPPED", "Job was intentionally stopped.")
    r.ticks(2)
    assert r.store.get(job_id).status == "running"
    monkeypatch.setattr(dispatcher, "STORAGE_WAIT_S", 0.0)
    r.ticks()
    job = r.store.get(job_id)
    assert job.status == "cancelled", job.message
    assert "before any unit ended" not in job.message
    assert job.message.startswith("cancelled on request; the job storage") and (
        "what it finished is not known" in job.message), job.message


def test_cancel_stops_the_ray_job_at_once_not_at_the_next_tick(
    rig: tuple[Rig, Any], tmp_path: Path, qr: Any
) -> None:
    """POST /v1/jobs/{id}/cancel on a running job sends the stop to Ray itself: with an
    hour between the dispatcher's ticks (its first one done before the cancel), Ray has
    stopped the job when the call returns, not one poll interval (or a stuck loop) later."""
    r, fake = rig
    job_id = r.new_job()
    r.ticks()
    fake.set_status(job_id, "RUNNING")
    settings = qr.make_settings(tmp_path, database_url=f"sqlite:///{tmp_path / 'q.db'}",
                                storage_uri=r.storage, ray_address=r.ray_url,
                                max_running_jobs=1, poll_interval_s=3600)  # fmt: skip
    server, api = qr.start_api(settings, {"alice": False})
    try:
        dispatcher = server.server.config.app.state.qr.dispatcher
        _wait(lambda: dispatcher.last_tick_at is not None, "the dispatcher's first tick")
        ticked = dispatcher.last_tick_at
        assert fake.stops == [] and r.status(job_id) == "running"
        with api.client() as c:
            answer = c.post(f"/v1/jobs/{job_id}/cancel")
        assert answer.status_code == 200, answer.text
        assert fake.stops == [job_id] and fake.jobs[job_id]["status"] == "STOPPED"
        assert dispatcher.last_tick_at == ticked  # no tick in between
    finally:
        server.__exit__()
