"""Resume edge cases, unit-level (no Ray): what a rerun of a job id does with the files an
earlier attempt left."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from ray_jobs import driver
from ray_jobs.planner import plan as make_plan
from ray_jobs.spec import JobSpec
from ray_jobs.storage import JobStorage
from tests.ray_jobs._jobs import tiny_spec


def _finished_job(tmp_path: Path, uri: str = "sample:sp500") -> tuple[JobSpec, JobStorage]:
    """The files of a job that succeeded: spec, plan, done statuses, report, progress."""
    body = tiny_spec("done", ["ols", "lstm"])
    body["dataset"]["uri"] = uri
    spec = JobSpec.from_dict(body)
    storage = JobStorage((tmp_path / "store").as_uri(), "done")
    storage.write_spec(spec.to_dict())
    plan = make_plan(spec, ["AAPL", "ABT"], slots=1)
    storage.write_json("plan.json", plan.to_dict())
    for unit in plan.units:
        storage.write_unit_status(unit.unit_id, {"state": "done", "rows": [], "started": 1.0,
                                                 "finished": 2.0})
    storage.write_json("results/summary.json", {"units": len(plan.units), "not_finished": 0,
                                                "stopped": False, "failed_units": []})
    storage.write_bytes("results/leaderboard.csv", b"old")
    storage.write_progress({"phase": "succeeded", "attempt": 0})
    return spec, storage


def test_resuming_a_finished_job_is_a_no_op_that_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spec, storage = _finished_job(tmp_path)
    root = tmp_path / "store" / "jobs" / "done"
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()
              and p.name != "progress.json"}  # fmt: skip

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished job was run again")

    monkeypatch.setattr(driver, "_run", must_not_run)
    monkeypatch.setattr(driver, "remove_leaked_placement_groups", must_not_run)
    with caplog.at_level(logging.INFO, logger="quantray.driver"):
        summary = driver.run_job(spec, storage, attempt=1)
    assert summary["units"] == 4 and not summary["failed_units"]
    assert "already finished" in caplog.text and "nothing to do" in caplog.text
    progress = storage.read_progress()  # this attempt's, as the service expects
    assert progress["phase"] == "succeeded" and progress["attempt"] == 1
    assert "already finished" in progress["message"]
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before  # no status, result or plot rewritten


@pytest.mark.parametrize("change", ["killed_in_report", "cancelled", "an_older_cancel",
                                    "a_unit_failed", "a_unit_without_status"])
def test_a_job_not_provably_finished_runs_again(tmp_path: Path, change: str) -> None:
    _, storage = _finished_job(tmp_path)
    assert driver.finished_summary(storage) is not None
    if change == "killed_in_report":
        storage.write_progress({"phase": "reporting", "attempt": 0})
    elif change == "cancelled":
        storage.write_json("results/summary.json", {"units": 4, "not_finished": 1,
                                                    "stopped": True, "failed_units": []})
    elif change == "an_older_cancel":  # a summary from before "stopped": "cancelled"
        storage.write_json("results/summary.json", {"units": 4, "not_finished": 0,
                                                    "cancelled": True, "failed_units": []})
    elif change == "a_unit_failed":
        storage.write_unit_status("AAPL__lstm__f0", {"state": "failed", "rows": []})
    else:
        (tmp_path / "store" / "jobs" / "done" / "status" / "ABT__ols__f0.json").unlink()
    assert driver.finished_summary(storage) is None


def _own_dataset(tmp_path: Path) -> Path:
    from data.sample import sample_path

    data = tmp_path / "bars.parquet"
    shutil.copyfile(sample_path("sp500"), data)
    return data


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("finished", [True, False])
def test_a_rerun_on_changed_data_is_refused_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, finished: bool
) -> None:
    """Rerunning a spec after its data file was overwritten said "already finished" and
    pointed at the results of the old data (a resume would have mixed units trained on
    either): the first run stores the dataset's fingerprint, and a later run on other data
    is refused, naming the file and what to do. A job that had not finished says why in
    this attempt's progress.json (the service's job message); nothing else is written."""
    data = _own_dataset(tmp_path)
    spec, storage = _finished_job(tmp_path, str(data))
    if not finished:
        storage.write_progress({"phase": "failed", "attempt": 0})

    def must_not_run(*args, **kwargs):
        raise AssertionError("the job was run on changed data")

    monkeypatch.setattr(driver, "_run", must_not_run)
    monkeypatch.setattr(driver, "remove_leaked_placement_groups", must_not_run)
    if finished:  # the first rerun, on the same data: a no-op that stores the fingerprint
        driver.run_job(spec, storage, attempt=1)
    else:
        assert driver.dataset_changes(spec, storage) is None
    assert storage.exists(driver.DATASET_JSON)
    shutil.copyfile(data, tmp_path / "copy.parquet")  # the same data copied in again
    (tmp_path / "copy.parquet").replace(data)
    assert driver.dataset_changes(spec, storage) is None

    data.write_bytes(data.read_bytes()[:-100] + b"x" * 100)  # then other data
    root = tmp_path / "store" / "jobs" / "done"
    before = _files(root)
    with pytest.raises(driver.JobDataChanged) as raised:
        driver.run_job(spec, storage, attempt=2)
    message = str(raised.value)
    assert f"its dataset {data} changed since the job first ran (bars.parquet's content " \
           "differs" in message and "start a new job" in message, message
    assert "so the 4 units it finished were trained on other data" in message
    after = _files(root)
    progress = root / "progress.json"
    if finished:
        assert after == before  # its results, progress and fingerprint stand
    else:
        assert {p: b for p, b in after.items() if p != progress} == \
               {p: b for p, b in before.items() if p != progress}
        progress_doc = storage.read_progress()
        assert progress_doc["phase"] == "failed" and progress_doc["message"] == message
        assert progress_doc["attempt"] == 2
        assert progress_doc["units"]["total"] == progress_doc["units"]["done"] == 4


def test_a_job_whose_units_all_failed_goes_on_with_its_fixed_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The service tells a job whose units failed on bad data to fix the data, then
    resume: with no unit finished, nothing was trained on the data as it was, so the
    changed data is the job's from then on (a search's stored best config, found on the
    old data, is dropped: the search runs again). Once a unit finished, the change is refused,
    and this attempt's progress keeps the earlier units' outcomes and errors."""
    data = _own_dataset(tmp_path)
    spec, storage = _finished_job(tmp_path, str(data))
    assert driver.dataset_changes(spec, storage) is None
    stored = storage.read_json(driver.DATASET_JSON)
    units = sorted(storage.unit_statuses())
    for unit_id in units:
        storage.write_unit_status(unit_id, {"state": "failed", "error": "data: bad prints"})
    storage.write_json("tune/lstm/best.json", {"params": {"hidden_size": 8}})  # old data's
    storage.write_json("tune/lstm/search.json", {"model": "lstm"})
    data.write_bytes(data.read_bytes()[:-100] + b"x" * 100)  # the data fixed
    with caplog.at_level(logging.INFO, logger="quantray.driver"):
        assert driver.dataset_changes(spec, storage) is None
    assert "no unit had finished, so the job goes on with the data as it is now" in caplog.text
    assert not storage.exists("tune")  # its searches start afresh, on the fixed data
    assert storage.read_json(driver.DATASET_JSON) != stored  # the fixed data's, from now on
    assert driver.dataset_changes(spec, storage) is None

    storage.write_unit_status(units[0], {"state": "done", "rows": []})
    data.write_bytes(data.read_bytes()[:-100] + b"y" * 100)
    message = driver.dataset_changes(spec, storage)
    assert message is not None and "so the 1 unit it finished was trained on other" in message
    doc = driver._refused_progress(storage, 3, message)
    assert doc["phase"] == "failed" and doc["attempt"] == 3
    assert doc["units"]["done"] == 1 and doc["units"]["failed"] == 3
    assert {f["error"] for f in doc["failures"]} == {"data: bad prints"}


def test_a_direct_rerun_keeps_the_earlier_runs_driver_logs(tmp_path: Path) -> None:
    """`python -m ray_jobs.run --job-id ID` (or a refused `--spec` with a taken `--name`)
    without --attempt used to write logs/driver-0.log again, over the killed run's log."""
    from ray_jobs.run import next_attempt, parse_args

    storage = JobStorage((tmp_path / "store").as_uri(), "job")
    assert parse_args(["--job-id", "job"]).attempt is None  # the service passes its own
    assert parse_args(["--job-id", "job", "--attempt", "3"]).attempt == 3
    assert next_attempt(storage) == 0  # a new job
    storage.write_bytes("logs/driver-0.log", b"the killed run\n")
    assert next_attempt(storage) == 1
    storage.write_bytes("logs/driver-1.log", b"its resume\n")
    assert next_attempt(storage) == 2


class _FlakyEnsembles:
    """Stands in for `tasks.ensemble_task` (`.remote` -> a plain value): each symbol's
    first `outages[symbol]` calls meet a storage outage; "BAD" always fails for good."""

    def __init__(self, outages: dict[str, int]) -> None:
        self.outages, self.calls = dict(outages), []

    def remote(self, symbol: str, *args: object) -> str:
        self.calls.append(symbol)
        return symbol

    def get(self, symbol: str) -> list[dict]:
        from ray_jobs.storage import StorageError

        if symbol == "BAD":
            raise StorageError("read", "file:///x/p.parquet", "not a parquet file", "fix it")
        if self.outages.get(symbol, 0) > 0:
            self.outages[symbol] -= 1
            raise StorageError("read", "s3://b/p.parquet", "connection refused",
                               "check the endpoint", outage=True)
        return [{"symbol": symbol, "model": "ensemble_equal"}]


def test_ensembles_ride_out_a_storage_outage_and_record_what_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 20 s outage while the job wrote its results dropped two symbols' ensembles from a
    job that still succeeded, said only in its log: an outage is tried again after the
    units' waits, and what still fails is returned for summary.json."""
    from ray_jobs import tasks

    spec = JobSpec.from_dict(tiny_spec("ens", ["ols", "lstm"]))
    symbols = ["AAPL", "ABT", "BAD"]
    storage = JobStorage((tmp_path / "store").as_uri(), "ens")
    plan = make_plan(spec, symbols, slots=1)
    for unit in plan.units:
        storage.write_unit_status(unit.unit_id, {"state": "done", "rows": []})
    flaky = _FlakyEnsembles({"AAPL": 1, "ABT": 5})  # ABT: down through every retry
    monkeypatch.setattr(driver, "ensemble_task", flaky)
    monkeypatch.setattr(driver.ray, "get", flaky.get)
    monkeypatch.setattr(tasks, "UNIT_RETRY_WAITS_S", (0.01, 0.01))
    rows, errors = driver._ensembles(plan, dict.fromkeys(symbols, "ref"), storage, skip=set())
    assert [r["symbol"] for r in rows] == ["AAPL"]
    assert sorted(flaky.calls) == ["AAPL", "AAPL", "ABT", "ABT", "ABT", "BAD"]  # BAD: once
    assert set(errors) == {"ABT", "BAD"}
    assert "connection refused" in errors["ABT"] and "not a parquet file" in errors["BAD"]


def test_a_stop_during_the_report_ends_the_ensembles_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stops are deferred while the report is written, and Ray kills the driver after its
    30 s stop grace: waiting 10 s + 30 s for the storage then would lose the whole report.
    With a stop recorded, an outage is not waited out; it is recorded."""
    import signal

    from ray_jobs import stop, tasks

    spec = JobSpec.from_dict(tiny_spec("ens", ["ols", "lstm"]))
    storage = JobStorage((tmp_path / "store").as_uri(), "ens")
    plan = make_plan(spec, ["AAPL", "ABT"], slots=1)
    for unit in plan.units:
        storage.write_unit_status(unit.unit_id, {"state": "done", "rows": []})
    flaky = _FlakyEnsembles({"AAPL": 1})
    monkeypatch.setattr(driver, "ensemble_task", flaky)
    monkeypatch.setattr(driver.ray, "get", flaky.get)
    monkeypatch.setattr(tasks, "UNIT_RETRY_WAITS_S", (60.0, 60.0))
    stop.reset()
    try:
        stop.defer_stops()
        stop.record_stop(signal.SIGTERM)
        rows, errors = driver._ensembles(plan, {"AAPL": "r", "ABT": "r"}, storage, skip=set())
    finally:
        stop.reset()
    assert sorted(flaky.calls) == ["AAPL", "ABT"]  # no retry, no 60 s wait
    assert [r["symbol"] for r in rows] == ["ABT"] and list(errors) == ["AAPL"]


def test_a_rerun_trains_the_failed_units_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resume skips the units whose status is `done`, and only those: a unit whose status
    says `failed` is in the rerun's plan again (linear and deep), not skipped as ended."""
    from ray_jobs.progress import ProgressTracker

    spec, storage = _finished_job(tmp_path)
    storage.write_unit_status("AAPL__lstm__f0", {"state": "failed", "error": "NaN loss"})
    storage.write_unit_status("ABT__ols__f0", {"state": "failed", "error": "data"})
    seen = {}

    class Captured(Exception):
        pass

    def capture(spec, plan, todo, *args, **kwargs):
        seen["todo"] = todo
        raise Captured

    monkeypatch.setattr(driver, "_prepare_and_fit_linear", capture)
    monkeypatch.setattr(driver, "unshared_nodes", lambda *a, **k: {})
    monkeypatch.setattr(driver.ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(driver, "warm_up_plots", lambda *a: None)  # no thread to outlive it
    with pytest.raises(Captured):
        driver._run(spec, storage, ProgressTracker(job_id="done"), driver._Known(), 0.0)
    assert {u.unit_id for u in seen["todo"].units} == {"AAPL__lstm__f0", "ABT__ols__f0"}
    assert {u.unit_id for u in seen["todo"].linear_units} == {"ABT__ols__f0"}
    assert {u.unit_id for u in seen["todo"].deep_units} == {"AAPL__lstm__f0"}
