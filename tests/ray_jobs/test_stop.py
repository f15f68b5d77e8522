"""A stop request (SIGTERM/SIGINT) is recognised however it surfaces: as JobCancelled, in
an exception's chain, or as the SystemError Ray's C calls turn it into; the driver then
writes partial results and re-raises JobCancelled (no Ray needed)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from ray_jobs import driver, stop
from ray_jobs.spec import JobSpec
from ray_jobs.stop import JobCancelled
from ray_jobs.storage import JobStorage


@pytest.fixture(autouse=True)
def _no_request():
    stop.reset()
    yield
    stop.reset()


def test_a_request_is_found_in_the_chain_or_by_its_record() -> None:
    assert stop.as_cancel(SystemError("x")) is None
    stop.check_stop()  # nothing requested: no raise
    with pytest.raises(JobCancelled) as raised:
        stop.request_stop(signal.SIGTERM)
    request = raised.value
    assert request.signum == signal.SIGTERM and str(request) == "stopped by SIGTERM"
    # What Ray makes of it inside ray.get: a SystemError with nothing chained.
    assert stop.as_cancel(SystemError("returned a result with an exception set")) is request
    with pytest.raises(JobCancelled):
        stop.check_stop()
    stop.reset()
    wrapped = RuntimeError("while polling")
    wrapped.__context__ = JobCancelled(signal.SIGINT)
    assert stop.as_cancel(wrapped) is wrapped.__context__
    assert stop.as_cancel(RuntimeError("a task failed")) is None


def test_run_job_treats_a_stop_surfacing_as_systemerror_as_a_cancel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper's repro: SIGTERM early in the deep phase came out of `ray.get` as a
    SystemError, the driver exited 1 and wrote no results. Now it is a cancel."""
    spec = JobSpec.from_dict({"name": "s", "dataset": {"uri": "sample:sp500", "symbols": 1},
                              "models": ["ols"]})  # fmt: skip
    storage = JobStorage(f"file://{tmp_path}", "s")
    written: list[bool] = []

    def run_then_stop(*_args: object) -> dict:
        try:
            stop.request_stop(signal.SIGTERM)
        except JobCancelled:  # what Ray's C call does with it
            raise SystemError("<built-in method __new__> returned a result with an "
                              "exception set") from None
        return {}

    monkeypatch.setattr(driver, "remove_leaked_placement_groups", lambda: [])
    # the stop path leaves Ray connected (the entrypoint's exit disconnects it): a
    # shutdown under the deep runs' thread ended a driver with status 1
    shutdowns: list[bool] = []
    monkeypatch.setattr(driver.ray, "shutdown", lambda *a, **k: shutdowns.append(True))
    monkeypatch.setattr(driver, "_run", run_then_stop)
    monkeypatch.setattr(driver, "_write_partial", lambda *a: written.append(True))
    with pytest.raises(JobCancelled) as raised:
        driver.run_job(spec, storage, progress_interval_s=60)
    assert raised.value.signum == signal.SIGTERM and written == [True]
    assert shutdowns == []
    assert isinstance(raised.value.__cause__, SystemError)
    assert storage.read_progress()["phase"] == "stopped"

    # An unrelated failure stays a failure.
    stop.reset()
    monkeypatch.setattr(driver, "_run", lambda *a: (_ for _ in ()).throw(SystemError("bug")))
    with pytest.raises(SystemError, match="bug"):
        driver.run_job(spec, storage, progress_interval_s=60)


def test_the_last_progress_of_a_stopped_job_counts_the_units_stored_as_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit that ended while the driver stopped (its status stored, its end never heard
    by the tracker) was in the stopped summary but not in the last progress.json: 8 done
    where the summary said 9. Units of an earlier attempt count once (skipped_on_resume)."""
    from ray_jobs.planner import plan

    spec = JobSpec.from_dict({"name": "s", "dataset": {"uri": "sample:sp500", "symbols": 2},
                              "models": ["ols", "ridge"]})  # fmt: skip
    storage = JobStorage(f"file://{tmp_path}", "s")
    units = [u.unit_id for u in plan(spec, ["AAPL", "ABT"]).units]
    storage.write_unit_status(units[0], {"state": "done"})  # an earlier attempt's

    def run_then_stop(spec, storage, tracker, known, t0) -> dict:
        known.plan = plan(spec, ["AAPL", "ABT"])
        known.done_before = {units[0]}
        tracker.plan_units({u.unit_id: u.kind for u in known.plan.units},
                           already_done=known.done_before)
        tracker.unit_started(units[1])
        tracker.unit_done(units[1])
        storage.write_unit_status(units[1], {"state": "done"})
        for unit, state in ((units[2], "done"), (units[3], "failed")):  # ended, unheard
            storage.write_unit_status(unit, {"state": state, "error": "bad data"})
        stop.request_stop(signal.SIGTERM)
        return {}

    monkeypatch.setattr(driver, "remove_leaked_placement_groups", lambda: [])
    monkeypatch.setattr(driver, "_run", run_then_stop)
    monkeypatch.setattr(driver, "_write_partial", lambda *a: 4)
    with pytest.raises(JobCancelled):
        driver.run_job(spec, storage, progress_interval_s=60)
    progress = storage.read_progress()
    assert progress["phase"] == "stopped"
    assert {k: progress["units"][k] for k in ("total", "done", "failed", "skipped_on_resume")} \
        == {"total": 4, "done": 3, "failed": 1, "skipped_on_resume": 1}
    assert progress["failures"] == [{"unit_id": units[3], "error": "bad data"}]


def test_a_stop_while_the_report_is_written_lets_it_finish_and_is_recorded() -> None:
    """The chaos probe cancelled a job in its reporting phase: the SIGTERM cut the
    leaderboard short, and the partial rewrite lost the ensemble rows already written.
    Once every unit has ended, `defer_stops` records a request instead of raising it."""
    import os

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for sig in saved:
            signal.signal(sig, stop.request_stop)
        with pytest.raises(JobCancelled):  # before: raised where the driver is
            os.kill(os.getpid(), signal.SIGTERM)
        stop.reset()
        stop.defer_stops()
        assert signal.getsignal(signal.SIGTERM) is stop.record_stop
        os.kill(os.getpid(), signal.SIGTERM)  # no raise: the report goes on
        recorded = stop._requested  # recorded, not raised (nor raised later: see below)
        assert isinstance(recorded, JobCancelled) and recorded.signum == signal.SIGTERM
        # a handler that is not the entrypoint's (a test, an embedding program) is kept
        signal.signal(signal.SIGINT, signal.default_int_handler)
        stop.defer_stops()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_a_deferred_request_raises_nowhere_until_the_next_job() -> None:
    """After `defer_stops`, a recorded request is not raised by `check_stop` (an ensemble
    task's failure calls it) nor taken for the cause of another error: the report
    finishes, and a real error in it stays an error."""
    stop.defer_stops()
    stop.record_stop(signal.SIGTERM)
    stop.check_stop()  # no raise
    assert stop.as_cancel(RuntimeError("the report failed")) is None
    stop.reset()  # a new job: requests count again
    stop.record_stop(signal.SIGTERM)
    with pytest.raises(JobCancelled):
        stop.check_stop()


def test_the_threads_that_call_ray_are_known_while_they_run() -> None:
    """The driver's exit skips ray.shutdown() while a thread of its own may be inside a Ray
    call (`run.exit_promptly`): the orphan sweeper is one such thread while it runs, and
    not once it has stopped."""
    import threading

    from ray_jobs.cluster_gc import OrphanSweeper

    assert "orphan-sweeper" not in stop.threads_in_ray()
    with OrphanSweeper(every_s=3600):  # no sweep within the test: no Ray call
        assert "orphan-sweeper" in stop.threads_in_ray()
    assert "orphan-sweeper" not in stop.threads_in_ray()
    release = threading.Event()
    worker = stop.calls_ray(threading.Thread(target=release.wait, name="deep-runs"))
    assert "deep-runs" not in stop.threads_in_ray()  # registered, not started
    worker.start()
    assert "deep-runs" in stop.threads_in_ray()
    release.set()
    worker.join()
    assert "deep-runs" not in stop.threads_in_ray()
