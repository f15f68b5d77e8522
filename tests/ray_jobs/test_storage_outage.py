"""An S3 outage in the middle of deep training (the endpoint refuses connections for a few
seconds, then comes back with its data) does not fail the job: the job's own reads and
writes retry (ray_jobs/storage.py), and a run whose Train controller failed on its
checkpoint bookkeeping is fitted again from its checkpoints (ray_jobs/deep_runs.py). It
used to fail every unit of the run, started or not."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from ray_jobs.deep_runs import storage_outage as outage
from ray_jobs.spec import JobSpec
from ray_jobs.storage import JobStorage
from tests.ray_jobs._jobs import TINY_DATES, tiny_spec

OUTAGE_S = 8.0
# What Ray Train's controller raised when the endpoint went away (a 2026-11-23 run).
CONTROLLER_ERROR = (
    "RayTaskError(ControllerError): When getting information for key 'store/jobs/qr-a5/ray/"
    "train/run__mix__f0__g000-f49f99/A__lstm__f0/epoch_0014' in bucket 'qrb': AWS Error "
    "NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not connect to "
    "server; Details: Failed to connect to 127.0.0.1:9311 after 0 ms: Could not connect to "
    "server"
)


def test_which_run_errors_are_storage_outages() -> None:
    assert outage(CONTROLLER_ERROR)
    assert outage("ControllerError: Training failed due to controller error:\n"
                          + CONTROLLER_ERROR.split(": ", 1)[1])  # fmt: skip
    assert outage("OSError: When uploading part for key 'a/b' in bucket 'q': AWS "
                          "Error SLOW_DOWN during UploadPart operation: status code: 503")
    # a missing bucket, a denied key, a worker that died past its restarts: not retried
    assert not outage("OSError: When getting information for key 'k' in bucket 'q': "
                              "AWS Error NO_SUCH_BUCKET during HeadObject operation: The "
                              "specified bucket does not exist")
    assert not outage("OSError: When reading 'k' in bucket 'q': AWS Error "
                              "ACCESS_DENIED during GetObject operation: Access Denied")
    assert not outage("WorkerGroupError: Training failed due to worker errors: "
                              "ActorDiedError: the actor died unexpectedly")
    # the key is cut out: a symbol or job id that reads like a network error is not one
    assert not outage("OSError: When getting information for key 'network/timeout' "
                              "in bucket 'q': AWS Error NO_SUCH_KEY during HeadObject")
    assert not outage("")
    # not storage at all, though it reads "When ... connection"
    assert not outage("RuntimeError: When starting worker group: connection to GCS lost")
    # a key with a quote in it is still cut out whole
    assert not outage("OSError: When getting information for key 'it's/network' in bucket "
                      "'q': AWS Error NO_SUCH_KEY during HeadObject operation: not found")


def test_only_runs_failed_by_an_outage_are_fitted_again(monkeypatch) -> None:
    """The retry loop without Ray: a run the outage failed is fitted again after each wait
    and its error replaced; another run's own error is kept, not retried; the last retry's
    error stays; a stop request during a wait starts no new run."""
    from ray_jobs import deep_runs, stop
    from ray_jobs.planner import RunGroup

    fits: list[tuple[str, list[str]]] = []
    answers = iter([
        {"a": CONTROLLER_ERROR, "b": "WorkerGroupError: died past its restarts"},
        {"a": CONTROLLER_ERROR},
        {"a": CONTROLLER_ERROR},
    ])  # fmt: skip

    def fake_fit(groups, ctx, slots, storage, name):
        fits.append((name, [g.run_name for g in groups]))
        return next(answers)

    monkeypatch.setattr(deep_runs, "_fit", fake_fit)
    monkeypatch.setattr(deep_runs.time, "sleep", lambda s: None)
    monkeypatch.setattr(deep_runs, "RUN_RETRY_WAITS_S", (0.0, 0.0))
    runs = type("Runs", (), {"trial_errors": {}})()
    groups = [RunGroup("a", ()), RunGroup("b", ()), RunGroup("c", ())]
    deep_runs._tune(groups, {"attempt": "1"}, 2, None, runs)
    assert fits == [("deep-1", ["a", "b", "c"]), ("deep-1-retry1", ["a"]),
                    ("deep-1-retry2", ["a"])]  # fmt: skip
    assert runs.trial_errors == {"a": CONTROLLER_ERROR,
                                 "b": "WorkerGroupError: died past its restarts"}
    # a stop request while waiting: no new experiment
    fits.clear()
    answers = iter([{"a": CONTROLLER_ERROR}])
    stop.reset()
    monkeypatch.setattr(stop, "_requested", stop.JobCancelled(15))
    with pytest.raises(stop.JobCancelled):
        deep_runs._tune(groups, {"attempt": "2"}, 2, None, runs)
    assert fits == [("deep-2", ["a", "b", "c"])]


def test_an_outage_that_fails_the_experiment_itself_is_retried_too(monkeypatch) -> None:
    """Tune's own storage I/O in the driver (listing the experiment folder as it ends) can
    hit the outage: tuner.fit() raises, for every run of the experiment. Those runs are
    fitted again like runs a trial error failed (a fresh-clone CI failed both units of the
    outage test this way); an error that is not an outage still ends the runs."""
    from ray_jobs import deep_runs
    from ray_jobs.planner import RunGroup

    listing = ("OSError: When listing objects under key 'store/jobs/outage/ray/deep-1/' in "
               "bucket 'outage': AWS Error NETWORK_CONNECTION during ListObjectsV2 "
               "operation: curlCode: 7, Could not connect to server")  # fmt: skip
    fits: list[tuple[str, list[str]]] = []
    answers = iter([OSError(listing.split(": ", 1)[1]), {}])

    def fake_fit(groups, ctx, slots, storage, name):
        fits.append((name, [g.run_name for g in groups]))
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(deep_runs, "_fit", fake_fit)
    monkeypatch.setattr(deep_runs, "RUN_RETRY_WAITS_S", (0.0, 0.0))
    runs = type("Runs", (), {"trial_errors": {}})()
    groups = [RunGroup("a", ()), RunGroup("b", ())]
    deep_runs._tune(groups, {"attempt": "0"}, 2, None, runs)
    assert fits == [("deep-0", ["a", "b"]), ("deep-0-retry1", ["a", "b"])]
    assert runs.trial_errors == {}
    # not an outage: raised as before (the caller fails the runs' units with it)
    answers = iter([RuntimeError("When starting worker group: connection to GCS lost")])
    with pytest.raises(RuntimeError, match="connection to GCS lost"):
        deep_runs._tune(groups, {"attempt": "1"}, 2, None, runs)


@pytest.mark.timeout(900)
def test_a_storage_outage_mid_training_is_ridden_out(ray_cluster: str) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    from ray_jobs.driver import run_job
    from service.local_ray import free_port

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    servers = [ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)]
    servers[0].start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="outage")
    uri = f"s3://outage/store?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    outage: dict[str, float] = {}

    def cut_the_endpoint() -> None:
        """Once the first runs have checkpoints: refuse connections for OUTAGE_S, then
        serve the same bucket again (moto keeps its state in the process)."""
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                listed = client.list_objects_v2(Bucket="outage", Prefix="store/jobs/outage/ray/")
            except Exception:  # noqa: BLE001 - the server is ours and up; try again
                listed = {}
            if sum("epoch_0003" in o["Key"] for o in listed.get("Contents", [])) >= 1:
                break
            time.sleep(0.2)
        else:
            return
        servers[0].stop()
        outage["from"] = time.monotonic()
        time.sleep(OUTAGE_S)
        servers.append(ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False))
        servers[-1].start()
        outage["to"] = time.monotonic()

    # Long units (no early stopping) so that the outage lands while they train: the cut
    # comes at a unit's 4th checkpoint, and an epoch's report with its S3 checkpoint takes
    # about a controller poll (docs/ray-notes.md), so 30 epochs leave ~50 s of training.
    slow = {"hidden_size": 8, "train.epochs": 30, "train.patience": 1000}
    # One symbol: two runs of one unit each, in flight together on the two CPUs.
    spec = JobSpec.from_dict(tiny_spec(
        "outage", ["lstm", "gru"], max_epochs=30, overrides={"lstm": slow, "gru": slow},
        resources={"units_per_run": 1},
        dataset={"uri": "sample:sp500", "symbols": ["AAPL"], **TINY_DATES},
    ))  # fmt: skip
    storage = JobStorage(uri, "outage")
    cutter = threading.Thread(target=cut_the_endpoint, daemon=True)
    cutter.start()
    try:
        summary = run_job(spec, storage, progress_interval_s=1.0)
        ended = time.monotonic()
        cutter.join(timeout=OUTAGE_S + 60)
        statuses = storage.unit_statuses()
    finally:
        servers[-1].stop()
    assert "to" in outage, "the outage never started: no checkpoint reached the bucket"
    assert outage["to"] < ended  # it came while the job ran
    assert summary["failed_units"] == [], summary["failed_units"]
    assert summary["units_reported"] == summary["units"] == 2
    assert sorted(s["state"] for s in statuses.values()) == ["done"] * 2


def test_a_run_that_ends_silently_with_units_unstored_is_fitted_again(monkeypatch,
                                                                      tmp_path) -> None:
    """An outage as the experiment ended kept Tune from saving its state, and its results
    came back without the trials' errors: a run that reports no error but left a unit
    without a stored status is fitted again, as an outage-failed one is; a run whose units
    all stored a status is done."""
    from ray_jobs import deep_runs
    from ray_jobs.planner import RunGroup, Unit
    from ray_jobs.storage import JobStorage

    storage = JobStorage(tmp_path.as_uri(), "silent")
    a, b = Unit("AAPL", "lstm"), Unit("ABT", "lstm")
    storage.write_unit_status(b.unit_id, {"state": "done"})
    fits: list[tuple[str, list[str]]] = []

    def fake_fit(groups, ctx, slots, storage_, name):
        fits.append((name, [g.run_name for g in groups]))
        if len(fits) == 2:  # the retry trains it
            storage.write_unit_status(a.unit_id, {"state": "done"})
        return {}

    monkeypatch.setattr(deep_runs, "_fit", fake_fit)
    monkeypatch.setattr(deep_runs, "RUN_RETRY_WAITS_S", (0.0, 0.0))
    runs = type("Runs", (), {"trial_errors": {}})()
    groups = [RunGroup("ra", (a,)), RunGroup("rb", (b,))]
    deep_runs._tune(groups, {"attempt": "0"}, 2, storage, runs)
    assert fits == [("deep-0", ["ra", "rb"]), ("deep-0-retry1", ["ra"])]
    assert runs.trial_errors == {}
    # never trained: retried to the last, then its units fail with the reason
    fits.clear()
    (tmp_path / "jobs" / "silent" / "status" / f"{a.unit_id}.json").unlink()
    monkeypatch.setattr(deep_runs, "_fit", lambda *args: fits.append(args[-1]) or {})
    deep_runs._tune(groups, {"attempt": "1"}, 2, storage, runs)
    assert fits == ["deep-1", "deep-1-retry1", "deep-1-retry2"]
    assert runs.trial_errors == {"ra": deep_runs.SILENT_END}


# The chaos probe killed a run's `ray::TrainController` mid-training: its units failed with
# this (a Tune trial's or controller's process lost with its node would too), and the job
# ended failed without a retry.
CONTROLLER_DIED = ("RayTaskError(ActorDiedError): The actor is dead because its worker "
                   "process has died. Worker exit type: SYSTEM_ERROR")


def test_a_run_whose_controller_died_is_fitted_again(monkeypatch) -> None:
    """A run whose Train controller or Tune trial process died is fitted again from its
    checkpoints, like one an outage failed; one whose workers died past FailureConfig's
    restarts (WorkerGroupError) is not: that is the units' own failure."""
    from ray_jobs import deep_runs
    from ray_jobs.planner import RunGroup

    fits = []
    answers = iter([{"a": CONTROLLER_DIED, "b": "WorkerGroupError: died past its restarts"}, {}])

    def fake_fit(groups, ctx, slots, storage, name):
        fits.append((name, [g.run_name for g in groups]))
        return next(answers)

    monkeypatch.setattr(deep_runs, "_fit", fake_fit)
    monkeypatch.setattr(deep_runs, "RUN_RETRY_WAITS_S", (0.0, 0.0))
    runs = type("Runs", (), {"trial_errors": {}})()
    deep_runs._tune([RunGroup("a", ()), RunGroup("b", ())], {"attempt": "1"}, 2, None, runs)
    assert fits == [("deep-1", ["a", "b"]), ("deep-1-retry1", ["a"])]
    assert runs.trial_errors == {"b": "WorkerGroupError: died past its restarts"}
