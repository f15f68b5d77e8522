"""What an operator sees when things go wrong on a real deployment: a Ray head whose GCS
died (dashboard still up), units that failed on their data, storage that does not answer."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from sqlalchemy import create_engine, make_url, text

from service import api_client
from service.cli import main
from tests.service.conftest import PG_URL
from tests.service.support import TcpProxy

SPEC = {"name": "ops", "dataset": {"uri": "sample:sp500", "symbols": 2}, "models": ["ols"]}


def _until(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def _running_job(tmp_path: Path, fake_ray: tuple[Any, str], qr: Any) -> tuple[Any, Any, str]:
    fake, url = fake_ray
    settings = qr.make_settings(tmp_path, ray_address=url, max_running_jobs=1, auth=False,
                                ray_timeout_s=2.0)  # fmt: skip
    server, api = qr.start_api(settings, {})
    with api.client(None) as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
        _until(lambda: job_id in fake.jobs)
        fake.set_status(job_id, "RUNNING")
        _until(lambda: c.get(f"/v1/jobs/{job_id}").json()["status"] == "running")
    return server, api, job_id


def test_gcs_dead_head_is_not_ready_and_running_jobs_say_so(
    tmp_path: Path, fake_ray: tuple[Any, str], qr: Any
) -> None:
    fake, _ = fake_ray
    server, api, job_id = _running_job(tmp_path, fake_ray, qr)
    try:
        with api.client(None) as c:
            assert c.get("/readyz").status_code == 200
            assert c.get(f"/v1/jobs/{job_id}").json()["message"] is None
            fake.jobs_down = True  # SIGKILLed GCS: /api/version answers, /api/jobs does not
            ready = c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["down"] == ["ray"], ready.json()
            job = _until(lambda: (j := c.get(f"/v1/jobs/{job_id}").json())["message"] and j)
            assert job["status"] == "running"
            assert "last known status" in job["message"] and "interrupted" in job["message"]
            c.post(f"/v1/jobs/{job_id}/cancel")
            job = c.get(f"/v1/jobs/{job_id}").json()
            assert job["cancel_requested"] and "`cancelled` if it stopped" in job["message"]
            fake.jobs_down = False  # Ray is back, and stops the job as asked
            job = _until(lambda: (j := c.get(f"/v1/jobs/{job_id}").json())["status"]
                         == "cancelled" and j)  # fmt: skip
            assert "last known status" not in job["message"]
            assert c.get("/readyz").status_code == 200
    finally:
        server.__exit__()


NO_AGENT = "No available agent to submit job, please try again later."


def test_readyz_is_not_ready_while_every_job_submission_fails(
    tmp_path: Path, fake_ray: tuple[Any, str], qr: Any
) -> None:
    """The dashboard answers GETs, but its job agent is gone: each POST /api/jobs/ fails
    (500), and the jobs stay queued. /readyz says so, and is ready again once one is
    submitted."""
    fake, url = fake_ray
    fake.submit_error = f"Traceback (most recent call last):\nRuntimeError: {NO_AGENT}\n"
    settings = qr.make_settings(tmp_path, ray_address=url, max_running_jobs=1, auth=False)
    server, api = qr.start_api(settings, {})
    try:
        with api.client(None) as c:
            assert c.get("/readyz").status_code == 200  # no submission tried yet
            job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
            ready = _until(lambda: (r := c.get("/readyz")).status_code == 503 and r)
            body = ready.json()
            assert body["down"] == ["ray"] and body["status"] == "not ready", body
            ray = body["checks"]["ray"]
            assert ray.startswith("down: the Ray dashboard answers, but job submissions have "
                                  "failed since "), ray  # fmt: skip
            assert " s ago), so jobs stay queued: POST /api/jobs/ failed with 500: " \
                f"RuntimeError: {NO_AGENT}" in ray, ray  # fmt: skip
            assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
            fake.submit_error = None  # the agent is back
            _until(lambda: c.get(f"/v1/jobs/{job_id}").json()["status"] == "running")
            assert c.get("/readyz").status_code == 200
    finally:
        server.__exit__()


@pytest.mark.parametrize("ray_status", ["SUCCEEDED", "FAILED"])
def test_units_failed_on_data_say_resume_will_not_help_until_fixed(
    ray_status: str, tmp_path: Path, fake_ray: tuple[Any, str], qr: Any
) -> None:
    fake, _ = fake_ray
    server, api, job_id = _running_job(tmp_path, fake_ray, qr)
    bad = "data: DataValidationError: symbol 'BAD': 10 rows with non-positive prices"
    failures = (("BAD__ols__f0", bad), ("BAD__mlp__f0", bad), ("AAPL__mlp__f0", "NaN loss"))
    doc = qr.progress_doc(6, 3, failures=failures)
    doc["phase"] = "failed"
    (api.storage / "jobs" / job_id / "progress.json").write_text(json.dumps(doc))
    try:
        with api.client(None) as c:
            fake.set_status(job_id, ray_status)
            job = _until(lambda: (j := c.get(f"/v1/jobs/{job_id}").json())["status"] == "failed"
                         and j)  # fmt: skip
    finally:
        server.__exit__()
    message = job["message"]
    assert message.startswith("3 of 6 units failed; partial results kept"), message
    assert "the data of BAD could not be used (see each unit's error" in message
    assert "AAPL" not in message
    # AAPL's units finished on the data as it was: a resume on fixed data is refused
    assert "and is refused once the data changed (its other units were trained on it as " \
        "it was), so fix the data and submit a job for those symbols, or one with wider " \
        "dates or without them" in message


def test_units_that_all_failed_on_data_say_to_fix_it_then_resume() -> None:
    """No unit finished: nothing was trained on the data as it was, so the job resumed
    after the fix runs on the fixed data (`ray_jobs.driver.dataset_changes`)."""
    from service.dispatcher import _data_failures

    bad = [{"unit_id": "BAD__ols__f0", "error": "data: DataValidationError: bad prints"}]
    text = _data_failures(bad, done=0)
    assert text.startswith("; the data of BAD could not be used")
    assert "so fix the data first, then resume, or submit a job" in text
    assert "refused" not in text and "refused" in _data_failures(bad, done=2)


def test_cli_status_shows_why_progress_is_missing(
    tmp_path: Path, fake_ray: tuple[Any, str], qr: Any, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    server, api, job_id = _running_job(tmp_path, fake_ray, qr)
    (api.storage / "jobs" / job_id / "progress.json").write_text("{not json")
    monkeypatch.setenv("QUANTRAY_API", api.url)
    try:
        code = main(["status", job_id])
        out, _ = capsys.readouterr()
    finally:
        server.__exit__()
    assert code == 0
    assert "progress:  unreadable: " in out, out


def test_cli_status_and_wait_show_the_phase_of_a_job_between_units(
    tmp_path: Path, fake_ray: tuple[Any, str], qr: Any, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """A Tune search ends no unit for minutes (ETA --): `status` and `--wait` say what the
    job does, from progress.json's phase and message."""
    from service.api_client import ApiClient
    from service.cli_jobs import _follow

    fake, _ = fake_ray
    server, api, job_id = _running_job(tmp_path, fake_ray, qr)
    doc = qr.progress_doc(4, 0, running=1, phase="tuning",
                          message="lstm: 0 of 2 trials ended, 1 running")  # fmt: skip
    (api.storage / "jobs" / job_id / "progress.json").write_text(json.dumps(doc))
    monkeypatch.setenv("QUANTRAY_API", api.url)
    try:
        code = main(["status", job_id])
        out, _ = capsys.readouterr()
        assert code == 0
        assert "phase:     tuning: lstm: 0 of 2 trials ended, 1 running\n" in out, out
        ended = threading.Timer(1.0, fake.set_status, (job_id, "SUCCEEDED"))
        ended.start()
        with ApiClient(api.url, None) as client:
            code = _follow(client, job_id, 0.2)  # `submit --wait`'s loop
        ended.join()
        _, err = capsys.readouterr()
    finally:
        server.__exit__()
    assert code == 0, err
    assert "0/4 units    0%  ETA --  running, tuning: lstm: 0 of 2 trials ended, 1 running\n" \
        in err, err  # fmt: skip


def test_an_ended_job_whose_progress_cannot_be_read_does_not_stall_the_others(
    tmp_path: Path, fake_ray: tuple[Any, str], qr: Any
) -> None:
    """Storage that does not answer when a job ends on Ray: that job waits for it (its
    final status depends on progress.json), the other jobs are still synced."""
    fake, url = fake_ray
    settings = qr.make_settings(tmp_path, ray_address=url, max_running_jobs=2, auth=False)
    server, api = qr.start_api(settings, {})
    try:
        with api.client(None) as c:
            first = c.post("/v1/jobs", json=SPEC).json()["id"]
            second = c.post("/v1/jobs", json={**SPEC, "name": "ops2"}).json()["id"]
            _until(lambda: first in fake.jobs and second in fake.jobs)
            _until(lambda: all(c.get(f"/v1/jobs/{j}").json()["status"] == "running"
                               for j in (first, second)))  # fmt: skip
            unreadable = api.storage / "jobs" / first / "progress.json"
            unreadable.mkdir()  # reading it raises an OSError, as a storage outage does
            fake.set_status(first, "SUCCEEDED")
            fake.set_status(second, "SUCCEEDED")
            _until(lambda: c.get(f"/v1/jobs/{second}").json()["status"] == "succeeded")
            # not `running` alone: the driver has ended, the final status waits for the storage
            # (the dispatcher may see `first` end a tick after `second`: its message is waited
            # for, where a single read found none about 1 run in 5)
            said = ("the job's driver ended on Ray (SUCCEEDED); its final status waits for the "
                    f"job storage ({settings.storage_uri}), which does not answer")
            _until(lambda: (c.get(f"/v1/jobs/{first}").json()["message"] or "").startswith(said))
            waiting = c.get(f"/v1/jobs/{first}").json()
            assert waiting["status"] == "running"
            assert waiting["message"].startswith(said), waiting["message"]
            unreadable.rmdir()  # the storage is back
            unreadable.write_text(json.dumps(qr.progress_doc(2, 2)))
            _until(lambda: c.get(f"/v1/jobs/{first}").json()["status"] == "succeeded")
    finally:
        server.__exit__()


def test_a_driver_that_failed_on_a_missing_bucket_says_so(
    tmp_path: Path, fake_ray: tuple[Any, str], qr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bucket vanished mid-job: the driver crashed without a progress.json; the job's
    message leads with the storage, not with Ray's log tail of worker noise."""
    import pyarrow.fs as pafs

    from tests.service.test_service_api import _moto

    fake, url = fake_ray
    moto, port = _moto(monkeypatch)
    try:
        s3 = pafs.S3FileSystem(endpoint_override=f"http://127.0.0.1:{port}", scheme="http",
                               region="us-east-1", allow_bucket_creation=True,
                               allow_bucket_deletion=True)  # fmt: skip
        s3.create_dir("ops-bucket")
        uri = f"s3://ops-bucket/store?endpoint_override=http://127.0.0.1:{port}&scheme=http"
        settings = qr.make_settings(tmp_path, ray_address=url, max_running_jobs=1, auth=False,
                                    storage_uri=uri)  # fmt: skip
        server, api = qr.start_api(settings, {})
        try:
            with api.client(None) as c:
                job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
                _until(lambda: job_id in fake.jobs)
                s3.delete_dir("ops-bucket")
                fake.set_status(job_id, "FAILED", "Job entrypoint command failed with exit "
                                "code 1, last available logs: (RayTrainWorker) noise")  # fmt: skip
                job = _until(lambda: (j := c.get(f"/v1/jobs/{job_id}").json())["status"]
                             == "failed" and j)  # fmt: skip
        finally:
            server.__exit__()
    finally:
        moto.stop()
    message = job["message"]
    assert message.startswith("the job storage is unavailable (bucket 'ops-bucket' does not "
                              "exist"), message  # fmt: skip
    assert "then resume the job" in message and "Ray job failed" in message


def test_cli_list_says_how_to_get_the_next_page(
    tmp_path: Path, qr: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    server, api = qr.start_api(qr.make_settings(tmp_path, auth=False), {})
    monkeypatch.setenv("QUANTRAY_API", api.url)
    try:
        with api.client(None) as c:
            for n in range(3):
                c.post("/v1/jobs", json={**SPEC, "name": f"j{n}"})
        first = main(["list", "--page-size", "2"]), capsys.readouterr()
        last = main(["list", "--page-size", "2", "--page", "2"]), capsys.readouterr()
    finally:
        server.__exit__()
    assert first[0] == 0 and "page 1: 2 of 3 jobs (next: --page 2)" in first[1].err
    assert last[0] == 0 and last[1].err.strip() == "page 2: 1 of 3 jobs"


def test_a_job_with_no_usable_symbol_gives_the_drivers_reason(
    tmp_path: Path, fake_ray: tuple[Any, str], qr: Any
) -> None:
    """Every symbol failed validation: the driver fails its units, says why in progress.json
    and exits 2. The job's message is that reason, not "partial results kept"."""
    fake, _ = fake_ray
    server, api, job_id = _running_job(tmp_path, fake_ray, qr)
    bad = "data: DataValidationError: symbol 'BAD': 10 rows with non-positive prices"
    doc = qr.progress_doc(1, 0, failures=(("BAD__ols__f0", bad),))
    reason = ("the job's dataset cannot be used: no usable symbol: all 1 symbols failed their "
              f"data checks (each reason is in summary.json's data_errors), e.g. {bad}")
    doc.update(phase="failed", message=reason)
    (api.storage / "jobs" / job_id / "progress.json").write_text(json.dumps(doc))
    try:
        with api.client(None) as c:
            fake.jobs[job_id]["driver_exit_code"] = 2
            fake.set_status(job_id, "FAILED", "Job entrypoint command failed with exit code 2")
            job = _until(lambda: (j := c.get(f"/v1/jobs/{job_id}").json())["status"] == "failed"
                         and j)  # fmt: skip
    finally:
        server.__exit__()
    assert job["message"] == reason
    assert [e["unit_id"] for e in job["errors"]] == ["BAD__ols__f0"]


def test_results_of_an_interrupted_job_say_to_resume(
    tmp_path: Path, fake_ray: tuple[Any, str], qr: Any
) -> None:
    """The Ray head was restarted mid-job: no leaderboard was written; the 404 says why
    and what to do, not that the storage setting may have changed."""
    fake, _ = fake_ray
    server, api, job_id = _running_job(tmp_path, fake_ray, qr)
    try:
        with api.client(None) as c:
            fake.forget_all()
            _until(lambda: c.get(f"/v1/jobs/{job_id}").json()["status"] == "interrupted")
            results = c.get(f"/v1/jobs/{job_id}/results")
    finally:
        server.__exit__()
    assert results.status_code == 404
    message = results.json()["message"]
    assert "interrupted before writing it: resume it" in message, message
    assert "QUANTRAY_STORAGE_URI" not in message


def test_cli_submit_that_times_out_says_it_may_have_been_created_and_how_to_retry(
    tmp_path: Path, qr: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The API is up but its submit outlasts the client (S3 retrying the spec write): the
    CLI must not say the API is unreachable (start `quantray serve`), since the job may be
    created; it says how to resubmit without a duplicate, and that works."""
    app, seen = FastAPI(), []

    @app.post("/v1/jobs", status_code=201)
    async def slow_submit(request: Request) -> dict:
        key = request.headers.get("idempotency-key")
        first = key not in seen
        seen.append(key)
        if first:
            await asyncio.sleep(1.0)  # stored meanwhile; the client has given up
        return {"id": "qr-0123456789abcdef", "status": "queued"}

    spec = tmp_path / "job.yaml"
    spec.write_text("name: x\ndataset: {uri: 'sample:sp500', symbols: 2}\nmodels: [ols]\n")
    monkeypatch.setattr(api_client, "SUBMIT_TIMEOUT_S", 0.3)
    with qr.LiveServer(app) as server:
        monkeypatch.setenv("QUANTRAY_API", server.url)
        code = main(["submit", str(spec)])
        _, err = capsys.readouterr()
        assert code == 1 and seen and seen[0], err
        assert "cannot reach" not in err and "quantray serve" not in err, err
        assert "did not answer POST /v1/jobs in time" in err
        assert f"`--idempotency-key {seen[0]}`" in err
        code = main(["submit", str(spec), "--idempotency-key", seen[0]])
        out, _ = capsys.readouterr()
    assert code == 0 and out.strip() == "qr-0123456789abcdef"


def test_status_reads_stay_fast_while_the_s3_storage_hangs(
    tmp_path: Path, qr: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The S3 endpoint stops answering mid-job (it accepts connections, never replies: a
    read would wait ~10 s on the AWS SDK's timeouts and retries). A status poll answers
    within the read budget, the next ones at once, with the last progress read and a
    progress_error saying the storage does not answer; the outage is not hidden."""
    import socket

    import pyarrow.fs as pafs

    from service.store import JobStore
    from tests.service.test_service_api import _moto

    moto, port = _moto(monkeypatch)
    hang = None
    try:
        s3 = pafs.S3FileSystem(endpoint_override=f"http://127.0.0.1:{port}", scheme="http",
                               region="us-east-1", allow_bucket_creation=True)  # fmt: skip
        s3.create_dir("ops-hang")
        uri = f"s3://ops-hang/store?endpoint_override=http://127.0.0.1:{port}&scheme=http"
        settings = qr.make_settings(tmp_path, auth=False, storage_uri=uri)
        server, api = qr.start_api(settings, {})
        try:
            with api.client(None) as c:
                job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
                assert JobStore(api.engine).transition(job_id, "queued", status="running")
                with s3.open_output_stream(f"ops-hang/store/jobs/{job_id}/progress.json") as f:
                    f.write(json.dumps(qr.progress_doc(8, 3)).encode())
                before = c.get(f"/v1/jobs/{job_id}").json()
                moto.stop()
                hang = socket.socket()
                hang.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                hang.bind(("127.0.0.1", port))
                hang.listen(64)  # connections complete, nothing ever answers
                took = []
                for _ in range(3):
                    t0 = time.monotonic()
                    job = c.get(f"/v1/jobs/{job_id}").json()
                    took.append(time.monotonic() - t0)
        finally:
            server.__exit__()
    finally:
        if hang is not None:
            hang.close()
        else:
            moto.stop()
    assert before["progress"]["units_done"] == 3 and before["progress_error"] is None
    assert took[0] < 4 and max(took[1:]) < 0.5, took
    assert job["status"] == "running" and job["progress"]["units_done"] == 3, job
    error = job["progress_error"]
    assert error.startswith(f"the job storage ({uri}) does not answer since"), error
    assert "the progress shown was read at" in error, error


def test_a_database_outage_is_a_503_to_retry_and_the_api_recovers(
    tmp_path: Path, qr: Any
) -> None:
    """PostgreSQL through a TCP relay that is cut: each request that needs the database is
    a 503 that names it and says to retry (not a 500 "report it"), with nothing stored; the
    same requests succeed once the relay is back, on the same server."""
    schema = f"qr_cut_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    proxy = TcpProxy(("127.0.0.1", make_url(PG_URL).port or 5432))
    url = make_url(PG_URL).set(host="127.0.0.1", port=proxy.port)
    url_text = url.render_as_string(hide_password=False) + f"?options=-csearch_path%3D{schema}"
    server, api = qr.start_api(qr.make_settings(tmp_path, database_url=url_text),
                               {"alice": False})  # fmt: skip
    try:
        with api.client() as c:
            job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
            proxy.cut()
            for r in (c.get(f"/v1/jobs/{job_id}"), c.get("/v1/jobs"),
                      c.post("/v1/jobs", json=SPEC)):  # fmt: skip
                assert r.status_code == 503, r.text
                body = r.json()
                assert body["error"] == "database_unavailable", body
                assert body["message"].startswith("the job database could not be reached ("), body
                assert "; retry: reads are safe to repeat, and a submit with the same " \
                    "Idempotency-Key returns its job if it was created" in body["message"], body
                assert "QUANTRAY_DATABASE_URL" in body["message"], body
                assert r.headers["Retry-After"] == "5"
            ready = c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["down"] == ["database"], ready.text
            # the CLI's client: retried as an API that is restarting (`quantray status --wait`)
            with api_client.ApiClient(api.url, api.keys["alice"]) as cli, \
                    pytest.raises(api_client.ApiUnreachable, match="job database could not be "):
                cli.job(job_id)
            proxy.restore()
            assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
            assert c.post("/v1/jobs", json=SPEC).status_code == 201
            assert api.job_count() == 2
            assert c.get("/readyz").json()["checks"]["database"] == "ok"
    finally:
        server.__exit__()
        api.engine.dispose()
        proxy.close()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_sqlite_errors_that_are_bugs_stay_500_and_a_lock_is_an_outage() -> None:
    """sqlite3 raises OperationalError for bad SQL and a missing table too: those are a
    500 to report, not a 503 to retry; a lock held past the busy timeout is an outage."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from service.errors import is_database_outage

    def error(message: str) -> OperationalError:
        return OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))

    assert is_database_outage(error("database is locked"))
    assert is_database_outage(error("unable to open database file"))
    assert not is_database_outage(error('near "selec": syntax error'))
    assert not is_database_outage(error("no such table: quantray_jobs"))
    assert not is_database_outage(error("attempt to write a readonly database"))

