"""Acceptance (issue 4, item 4): the job driver (`python -m ray_jobs.run`) is SIGKILLed
mid-job; rerunning the job id finishes without retraining finished units (their status
stamps and files are untouched), and the deep unit that was mid-training resumes from its
checkpoint under the same run name."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from ray_jobs.storage import JobStorage
from tests._support import log_tail, wait_for
from tests.ray_jobs._jobs import (
    finish_entrypoint,
    registered_epoch,
    slow_lstm,
    start_entrypoint,
    start_spec,
    stop_entrypoint,
    tiny_spec,
)

JOB = "resume"
EPOCHS = 16
LINEAR = ("AAPL__ols__f0", "AAPL__ridge__f0", "ABT__ols__f0", "ABT__ridge__f0")
DEEP = ("AAPL__lstm__f0", "ABT__lstm__f0")  # one run: AAPL first, then ABT


def _metrics_mtime(root: Path, unit_id: str) -> float:
    symbol, model, fold = unit_id.split("__")
    return (root / "units" / symbol / model / fold / "metrics.json").stat().st_mtime


def _mid_training(storage: JobStorage, train_root: Path) -> tuple[str, int] | None:
    """(deep unit, its registered checkpoint epoch) once some unit has finished and a deep
    unit without a status has a registered checkpoint at epoch >= 2; else None."""
    statuses = storage.unit_statuses()
    if not statuses:
        return None
    for unit_id in DEEP:
        epoch = registered_epoch(train_root, unit_id)
        if unit_id not in statuses and epoch >= 2:
            return unit_id, epoch
    return None


@pytest.mark.timeout(900)
def test_rerun_after_driver_kill_skips_finished_units(ray_cluster: str, tmp_path: Path) -> None:
    import ray

    spec = tiny_spec(
        "resume", ["ols", "ridge", "lstm"], max_epochs=None,
        dataset={"uri": "sample:sp500", "symbols": ["AAPL", "ABT"]},
        overrides={"lstm": slow_lstm(EPOCHS)}, resources={"units_per_run": 2},
    )  # fmt: skip
    store = tmp_path / "store"
    train_root = store / "jobs" / JOB / "ray" / "train"
    first, storage, log = start_spec(spec, tmp_path, ray_cluster)
    try:
        # Kill when some units are done and a deep unit is mid-training. Which deep unit
        # depends on how the linear tasks and the run share the 2 CPUs: either will do.
        cut, registered = wait_for(
            lambda: _mid_training(storage, train_root), timeout_s=400, every_s=0.3,
            what="a finished unit and a registered checkpoint epoch >= 2 of an lstm unit",
            alive=lambda: None if first.poll() is None else
            f"the driver exited with {first.returncode}:\n{log_tail(log)}",
        )  # fmt: skip
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        stop_entrypoint(first)
    killed_at = time.time()
    # Ray ends a dead driver's tasks and actors; wait until their CPUs are free again, so
    # that nothing of the killed job still writes when we look, nor during the rerun. A run
    # group Ray 2.60 leaks is removed as the rerun's driver would (ray_jobs/cluster_gc.py).
    from ray_jobs.cluster_gc import remove_leaked_placement_groups

    seen: list[dict] = []

    def cpus_free() -> bool:
        remove_leaked_placement_groups()
        seen.append(ray.available_resources())
        return seen[-1].get("CPU", 0) >= 2

    try:  # usually seconds; Train's placement-group cleaner can take a minute or more
        wait_for(cpus_free, timeout_s=180, what="the killed job's workers to exit")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last available resources: {seen[-1:]}; placement "
                             f"groups: {ray.util.placement_group_table()}") from None
    before = storage.unit_statuses()
    assert 0 < len(before) < len(LINEAR) + len(DEEP) and cut not in before, sorted(before)
    job_root = store / "jobs" / JOB
    files_before = {u: _metrics_mtime(job_root, u) for u in before}

    second = start_entrypoint(["--job-id", JOB, "--storage", store.as_uri()], ray_cluster, log)
    rc = finish_entrypoint(second, log, timeout_s=400)
    assert rc == 0, f"rerun exit status {rc}; log:\n{log_tail(log)}"

    after = storage.unit_statuses()
    assert set(after) == set(LINEAR) | set(DEEP)
    assert all(s["state"] == "done" for s in after.values()), after
    for unit_id, old in before.items():  # finished units were not trained again
        assert after[unit_id]["started"] == old["started"], unit_id
        assert after[unit_id]["finished"] == old["finished"], unit_id
        assert _metrics_mtime(job_root, unit_id) == files_before[unit_id], unit_id

    # The unit killed mid-training resumed from its checkpoint (same run name), and went on
    # counting epochs; the units that had not started trained after the restart.
    resumed = after[cut]
    assert resumed["resumed_from_epoch"] is not None, f"{cut} was trained from scratch"
    assert resumed["resumed_from_epoch"] >= registered >= 2
    assert [h["epoch"] for h in resumed["history"]] == list(range(EPOCHS))
    assert resumed["finished"] > killed_at
    for unit_id in set(after) - set(before) - {cut}:
        assert after[unit_id]["started"] > killed_at, unit_id
        assert after[unit_id].get("resumed_from_epoch") is None, unit_id

    board = storage.read_table("results/leaderboard.parquet").to_pandas()
    test = board[(board["split"] == "test") & ~board["model"].str.startswith("ensemble")]
    assert sorted(test["unit_id"]) == sorted(u for u in after for _ in (1, 5))
    assert test["error"].isna().all()
    summary = storage.read_json("results/summary.json")
    assert summary["failed_units"] == [] and summary["units"] == len(LINEAR) + len(DEEP)


@pytest.mark.timeout(600)
def test_a_stopped_job_writes_the_finished_units_results(
    ray_cluster: str, tmp_path: Path
) -> None:
    """SIGTERM (what `ray job stop` and the API's cancel send) mid-training: the driver
    writes the leaderboard and summary of the units that ended, marks progress cancelled,
    and exits 128 + 15; the unit that was training has no rows."""
    spec = tiny_spec(
        "stopped", ["ols", "ridge", "lstm"], max_epochs=None,
        dataset={"uri": "sample:sp500", "symbols": ["AAPL", "ABT"]},
        # 4x the kill test's epochs: the stop must land while a unit still trains
        overrides={"lstm": slow_lstm(4 * EPOCHS)}, resources={"units_per_run": 2},
    )  # fmt: skip
    proc, storage, log = start_spec(spec, tmp_path, ray_cluster)
    try:
        wait_for(
            lambda: storage.exists("progress.json")
            and storage.read_json("progress.json")["phase"] == "training"
            and storage.read_json("progress.json")["running"],
            timeout_s=300, every_s=0.3, what="a deep unit training",
            alive=lambda: None if proc.poll() is None else
            f"the driver exited with {proc.returncode}:\n{log_tail(log)}",
        )  # fmt: skip
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        stop_entrypoint(proc)
    assert rc == 128 + signal.SIGTERM, f"exit status {rc}; log:\n{log_tail(log)}"
    summary = storage.read_json("results/summary.json")
    assert summary["stopped"] is True and "cancelled" not in summary
    assert summary["units_reported"] + summary["not_finished"] == summary["units"] == 6
    board = storage.read_table("results/leaderboard.parquet").to_pandas()
    linear = board[board["model"].isin(["ols", "ridge"])]
    assert len(linear[linear["split"] == "test"]) == 2 * 2 * 2  # symbols x models x horizons
    assert linear["error"].isna().all()
    ended = {u for u, s in storage.unit_statuses().items() if s.get("state") in ("done", "failed")}
    lstm_rows = board[board["model"] == "lstm"]
    assert set(lstm_rows["symbol"]) <= {u.split("__")[0] for u in ended if "__lstm__" in u}
    assert summary["not_finished"] >= 1  # the unit that was training
    # every unit stored as ended is in the results, also one that ended while they were
    # being written (they are written again after the driver disconnects)
    assert summary["units_reported"] == len(ended), summary
    progress = storage.read_json("progress.json")
    assert progress["phase"] == "stopped" and "results are written" in progress["message"]
    assert storage.exists("results/leaderboard.csv")
    # Ray 2.60 leaks a stopped run's placement group (ray_jobs/cluster_gc.py); this cluster
    # has no dashboard, so the next job's clean-up reads the GCS tables to find it.
    import ray

    from ray_jobs.cluster_gc import remove_leaked_placement_groups

    removed: list[str] = []

    def cpus_free() -> bool:
        removed.extend(remove_leaked_placement_groups())
        return ray.available_resources().get("CPU", 0) >= 2

    wait_for(cpus_free, timeout_s=120, every_s=2.0, what="the stopped job's CPUs back")
    table = ray.util.placement_group_table()
    assert all(table[g]["state"] == "REMOVED" for g in removed)
    # ... and its runs' detached PlacementGroupCleaner actors (which poll the state API
    # this head lacks, forever) are stopped rather than left holding ~200 MB each.
    from ray._private.state import actors, jobs

    dead = {j["JobID"] for j in jobs() if j["IsDead"]}

    def no_orphaned_cleaners() -> bool:
        remove_leaked_placement_groups()
        return not [a for a in actors().values() if a["ActorClassName"] ==
                    "PlacementGroupCleaner" and a["State"] == "ALIVE" and a["JobID"] in dead]

    wait_for(no_orphaned_cleaners, timeout_s=60, every_s=2.0,
             what="the stopped job's PlacementGroupCleaner actors to end")
