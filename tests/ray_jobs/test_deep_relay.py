"""The deep runs' progress relay: it lives on the driver's node, and when it is gone the
job goes on: the units' ends are counted from their stored statuses instead."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ray_jobs.planner import RunGroup, Unit
from ray_jobs.progress import ProgressTracker
from ray_jobs.spec import JobSpec
from ray_jobs.storage import JobStorage
from tests._support import wait_for
from tests.ray_jobs._jobs import tiny_spec


def test_a_lost_relay_is_logged_and_the_ends_come_from_storage(
        ray_cluster: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import ray

    from ray_jobs.deep_runs import DeepRuns

    units = (Unit("AAPL", "mlp"), Unit("ABT", "mlp"), Unit("ACN", "mlp"))
    storage = JobStorage(tmp_path.as_uri(), "relay")
    tracker = ProgressTracker(total=3)
    runs = DeepRuns([RunGroup("run-0", units)], JobSpec.from_dict(tiny_spec("r", ["mlp"])),
                    storage, tracker)
    from ray._private.state import actors

    ray.get(runs.relay.drain.remote())  # placed and running
    row = actors(runs.relay._actor_id.hex())
    assert row["Address"]["NodeID"] == ray.get_runtime_context().get_node_id()  # the driver's

    runs.relay.push.remote({"type": "done", "unit_id": units[0].unit_id})
    runs.poll()  # relayed: AAPL done
    ray.kill(runs.relay)  # asynchronous: a drain sent at once could still be answered
    wait_for(lambda: actors(runs.relay._actor_id.hex())["State"] == "DEAD", timeout_s=60,
             what="the killed relay dead")
    storage.write_unit_status(units[0].unit_id, {"state": "done"})
    storage.write_unit_status(units[1].unit_id, {"state": "failed", "error": "NaN loss"})
    with caplog.at_level(logging.WARNING, logger="quantray.deep"):
        runs.wait()  # no thread: one last poll, then the ends it did not relay
    assert "the progress relay does not answer" in caplog.text
    counts = tracker.to_dict()["units"]
    assert (counts["done"], counts["failed"]) == (1, 2), counts  # ACN: no status at all
    failed = {f["unit_id"]: f["error"] for f in tracker.to_dict()["failures"]}
    assert failed[units[1].unit_id] == "NaN loss"
    assert "run ended without training this unit" in failed[units[2].unit_id]


def test_a_starting_run_lists_its_next_unit_as_starting(ray_cluster: str,
                                                         tmp_path: Path) -> None:
    """A run (Tune trial) that starts tells the relay; its first unit not ended yet is
    listed as starting until its worker trains it: the runs' start-up (minutes on a busy
    machine) showed "0 running" and nothing else."""
    from ray_jobs.deep_runs import DeepRuns

    units = (Unit("AAPL", "mlp"), Unit("ABT", "mlp"))
    ids = [u.unit_id for u in units]
    storage = JobStorage(tmp_path.as_uri(), "relay")
    tracker = ProgressTracker(total=2)
    runs = DeepRuns([RunGroup("run-0", units)], JobSpec.from_dict(tiny_spec("r", ["mlp"])),
                    storage, tracker)
    runs.relay.push.remote({"type": "run_start", "run_name": "run-0", "units": ids})
    runs.poll()
    d = tracker.to_dict()
    assert [s["unit_id"] for s in d["starting"]] == [ids[0]] and d["units"]["running"] == 0
    assert ", 1 starting |" in tracker.summary_line()
    for event in ({"type": "start", "unit_id": ids[0], "run_name": "run-0", "max_epochs": 1},
                  {"type": "done", "unit_id": ids[0]},
                  # the run restarts (a storage outage): its next unit is the one starting
                  {"type": "run_start", "run_name": "run-0", "units": ids}):
        runs.relay.push.remote(event)
    runs.poll()
    d = tracker.to_dict()
    assert [s["unit_id"] for s in d["starting"]] == [ids[1]]
    assert (d["units"]["done"], d["units"]["running"]) == (1, 0)


def test_a_trial_announces_its_run_before_its_trainer_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray.train.torch

    from ray_jobs import deep_runs

    pushed: list[dict] = []
    order: list[str] = []

    class Relay:
        class push:  # noqa: N801 - an actor method's shape: relay.push.remote(event)
            @staticmethod
            def remote(event: dict) -> None:
                pushed.append(event)
                order.append("push")

    class Trainer:
        def __init__(self, *args: object, **kwargs: object) -> None:
            order.append("trainer")

        def fit(self) -> None:
            order.append("fit")

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", Trainer)
    monkeypatch.setattr(deep_runs, "TRAIN_ENV", {})  # not set in this test process
    units = [Unit("AAPL", "mlp"), Unit("ABT", "mlp")]
    ctx = {"storage_uri": tmp_path.as_uri(), "job_id": "relay", "gpu": 0, "relay": Relay(),
           "groups": {"run-0": [u.to_dict() for u in units]}}
    deep_runs._trial({"run": "run-0"}, ctx)
    assert pushed == [{"type": "run_start", "run_name": "run-0",
                       "units": [u.unit_id for u in units]}]  # fmt: skip
    assert order == ["push", "trainer", "fit"]
