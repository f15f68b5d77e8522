"""Helpers of the job-executor acceptance tests: tiny specs, waiting, finding and killing the
processes a test started (never anyone else's), and running the job entrypoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ray_jobs.storage import JobStorage
from service.local_ray import process_table
from tests._support import log_tail

REPO = Path(__file__).resolve().parents[2]

# The bundled sample, cut to ~2 years: every symbol keeps > 344 rows (PrepareConfig.min_rows
# for seq_len 10, horizons [1, 5]) while an epoch stays a fraction of a second.
TINY_DATES = {"start": "2016-02-08", "end": "2018-02-07"}


def slow_lstm(epochs: int) -> dict[str, Any]:
    """lstm overrides for the kill tests: on the full 5 years (~870 training windows), with
    batches of 16, an epoch takes ~0.2-0.5 s of one CPU. Slower than the Train
    controller's poll (0.2 s), so Ray registers each checkpoint about as soon as the worker
    reports it (uploads are async: a fast worker would run far ahead), and a kill that
    follows a registered epoch 2 lands well before the last epoch."""
    return {"hidden_size": 64, "num_layers": 2,
            "train": {"epochs": epochs, "patience": epochs, "batch_size": 16}}  # fmt: skip


def tiny_spec(name: str, models: list[str], **changes: Any) -> dict[str, Any]:
    """A tiny job spec dict: 2 sample symbols, horizons [1, 5], seq_len 10, 1 epoch."""
    spec: dict[str, Any] = {
        "name": name,
        "dataset": {"uri": "sample:sp500", "symbols": ["AAPL", "ABT"], **TINY_DATES},
        "target": {"kind": "direction", "horizons": [1, 5]},
        "features": {"seq_len": 10},
        "models": models,
        "preset": "fast",
        "max_epochs": 1,
        "resources": {"units_per_run": 2},
    }
    spec.update(changes)
    return spec


def write_spec(spec: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def descendants(root: int) -> dict[int, bytes]:
    """pid -> command line of every live descendant of `root` (not `root` itself)."""
    table = process_table()
    found: dict[int, bytes] = {}
    frontier = {root}
    while frontier:
        children = {p for p, (parent, _) in table.items() if parent in frontier} - set(found)
        found.update({p: table[p][1] for p in children})
        frontier = children
    return found


def own_ray_processes(prefix: bytes) -> list[int]:
    """Pids of this test process's descendants (its private Ray's workers) whose process
    title starts with `prefix`, e.g. b"ray::RayTrainWorker". Other engineers' Ray clusters
    on this machine are not our descendants, so they are never touched."""
    return sorted(p for p, cmd in descendants(os.getpid()).items() if cmd.startswith(prefix))


def kill_and_reap(pids: list[int], grace_s: float = 10.0) -> None:
    """SIGKILL `pids` and wait until they are gone (or zombies)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        table = process_table()
        if not any(p in table for p in pids):
            return
        time.sleep(0.1)


def start_entrypoint(args: list[str], ray_address: str, log_path: Path) -> subprocess.Popen:
    """`python -m ray_jobs.run ARGS` against the Ray at `ray_address`, in its own session
    (so a SIGKILL reaches it alone), output to `log_path`."""
    env = dict(os.environ, RAY_ADDRESS=ray_address, PYTHONUNBUFFERED="1")
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "ray_jobs.run", *args], cwd=REPO, env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    finally:
        log.close()  # the child holds its own copy of the descriptor


def start_spec(
    spec: dict[str, Any], tmp_path: Path, ray_address: str
) -> tuple[subprocess.Popen, JobStorage, Path]:
    """Write `spec` to tmp_path/spec.yaml and start the entrypoint on it, as job
    `spec["name"]` with its storage under tmp_path/store and its output in
    tmp_path/driver.log; returns (the process, the job's storage, the log's path)."""
    store, log = tmp_path / "store", tmp_path / "driver.log"
    proc = start_entrypoint(
        ["--spec", str(write_spec(spec, tmp_path / "spec.yaml")), "--storage", store.as_uri(),
         "--name", spec["name"]], ray_address, log,
    )  # fmt: skip
    return proc, JobStorage(store.as_uri(), spec["name"]), log


def finish_entrypoint(proc: subprocess.Popen, log_path: Path, timeout_s: float) -> int:
    """Wait for the entrypoint; on timeout (or a test timeout) kill it, and fail with its
    log tail."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        stop_entrypoint(proc)
        raise AssertionError(
            f"ray_jobs.run did not finish in {timeout_s:.0f}s; log tail:\n{log_tail(log_path)}"
        ) from None
    except BaseException:
        stop_entrypoint(proc)
        raise


def stop_entrypoint(proc: subprocess.Popen) -> None:
    """SIGKILL the entrypoint if it still runs, and reap it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def epoch_dirs(train_root: Path, unit_id: str) -> list[int]:
    """Epochs of `unit_id`'s checkpoint directories under `ray/train/{run}/{unit}/epoch_N`."""
    return sorted(
        int(p.name.split("_")[1]) for p in train_root.glob(f"*/{unit_id}/epoch_*") if p.is_dir()
    )


def registered_epoch(train_root: Path, unit_id: str) -> int:
    """Epoch of `unit_id`'s checkpoint that Ray Train has registered as its run's latest,
    or -1. That is what a restarted worker group gets from `ray.train.get_checkpoint()`;
    a checkpoint directory on storage is not enough (the controller registers a worker's
    report a poll later). Read from Train V2's `checkpoint_manager_snapshot.json`."""
    latest = -1
    for snap in train_root.glob("*/checkpoint_manager_snapshot.json"):
        try:
            state = json.loads(snap.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):  # being rewritten: the next poll reads it
            continue
        name = (state.get("latest_checkpoint_result") or {}).get("checkpoint_dir_name") or ""
        if name.startswith(f"{unit_id}/epoch_"):
            latest = max(latest, int(name.rsplit("_", 1)[1]))
    return latest
