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
    ray.kill(runs.relay)
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
