"""Deep units on Ray Train V2: each run group is one Tune trial whose function builds a
`TorchTrainer`; the trainer's single worker trains the group's units one after another
(amortizing the run's fixed cost), reporting a checkpoint every epoch.

Fault tolerance:
- a killed worker: `FailureConfig(max_failures)` restarts the worker group; the loop finds
  the latest checkpoint with `ray.train.get_checkpoint()`, skips units already stored and
  resumes the checkpoint's unit at its next epoch;
- a killed driver: a rerun of the job uses the same run names and storage path, so Train
  restores each run's checkpoint manager from storage and the same resume applies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ray_jobs.cluster_gc import LeakSweeper
from ray_jobs.placement import DeepPlacement
from ray_jobs.planner import Plan, RunGroup, Unit
from ray_jobs.progress import ProgressTracker
from ray_jobs.spec import JobSpec
from ray_jobs.stop import calls_ray, check_stop, sleep_unless_stopped
from ray_jobs.storage import JobStorage
from ray_jobs.tasks import ProgressRelay, apply_events
from ray_jobs.units import fail_unit, run_unit

log = logging.getLogger("quantray.deep")
RELAY_TIMEOUT_S = 60.0

MAX_FAILURES = 2  # worker-group restarts per run before its remaining units fail
# Waits before a run that a storage outage failed is fitted again (ray_jobs/storage.py
# retries the job's own reads and writes; Ray Train's checkpoint bookkeeping does not).
RUN_RETRY_WAITS_S = (10.0, 30.0)
TRIAL_CPU = 0.01  # a trial only drives its trainer; the trainer's worker holds the CPU
# The trainer's worker takes the rest of one CPU: trial + worker = exactly 1 CPU per run
# slot. A whole CPU per worker on top of the trial's share starved the second of two runs
# on a 2-CPU node (2 x 0.01 + 1 leaves 0.98 < 1 CPU free), so runs went one at a time.
WORKER_CPU = 1.0 - TRIAL_CPU
UNIT_FILE = "unit.json"
SCORE = "val_score"  # higher is better: -val_loss, so "keep the best" is one order
# Ray Train V2 polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default)
# and takes one report per poll. With synchronous uploads each per-epoch report would block
# ~1.8 s, longer than a fast-preset epoch on daily data; with ASYNC uploads the report
# returns at once, but the reports queue up in the worker and drain at one per poll: a run
# of 88 fast-preset units makes ~15 reports/s, so at a 0.2 s poll its last unit was
# followed by ~20 s of draining with both CPUs idle. 0.05 s (20 reports/s) keeps up. These
# are read by the process calling fit() and passed on to the controller and workers
# (docs/ray-notes.md has the numbers).
TRAIN_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.05",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_METRICS_ENABLED": "0",
}


class DeepRuns:
    """The deep part of a job, running in a background thread of the driver."""

    def __init__(self, groups: list[RunGroup], spec: JobSpec, storage: JobStorage,
                 tracker: ProgressTracker) -> None:
        self.groups, self.spec, self.storage, self.tracker = groups, spec, storage, tracker
        # On the driver's own node: placed on a worker node that is then lost, the relay
        # took the driver down with it (ActorUnavailableError from `drain`)
        self.relay = ProgressRelay.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)).remote() if groups else None
        self._relay_lost = False
        self._counted: set[str] = set()  # units whose end the tracker has from the relay
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.trial_errors: dict[str, str] = {}

    def start(self, target: Callable[[], None]) -> DeepRuns:
        def guarded() -> None:
            try:
                target()
            except BaseException as exc:  # surfaced by wait(); units get marked failed
                self.error = exc

        self._thread = calls_ray(threading.Thread(target=guarded, name="deep-runs",
                                                  daemon=True))
        self._thread.start()
        return self

    def poll(self) -> None:
        """Replay the workers' unit events on the tracker. Progress only: a relay that is
        gone (the driver's node in trouble) is logged once and training goes on, each
        unit's result and status being in storage."""
        if self.relay is not None and not self._relay_lost:
            try:
                events = ray.get(self.relay.drain.remote(), timeout=RELAY_TIMEOUT_S)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
                self._relay_lost = True
                log.warning("the progress relay does not answer (%s): the deep units' epochs "
                            "and ends are no longer shown until the runs end; their results "
                            "are stored as they end", exc)
                return
            for e in events:  # in order: a run's start, its units' starts, epochs, ends
                if e.get("type") == "run_start":
                    self._run_starting(e)
                elif e.get("type") in ("start", "epoch"):
                    apply_events(self.tracker, [e])
                elif e.get("type") == "done":
                    self.tracker.unit_done(e["unit_id"])
                    self._counted.add(e["unit_id"])
                elif e.get("type") == "failed":
                    self.tracker.unit_failed(e["unit_id"], e.get("error", ""))
                    self._counted.add(e["unit_id"])

    def _run_starting(self, event: dict[str, Any]) -> None:
        """A run (Tune trial) starts: its first unit not ended yet is listed as starting
        until its worker trains it (the run's start-up: 14-25 s on 2 idle cores, minutes
        on a busy machine, showed 0 running and nothing else)."""
        for unit_id in event.get("units") or ():
            if unit_id not in self._counted:
                self.tracker.unit_starting(unit_id, run_name=event.get("run_name"))
                return

    def wait(self) -> None:
        sweep = LeakSweeper()
        while self._thread is not None and self._thread.is_alive():
            check_stop()  # a stop request an `except` swallowed (ray_jobs/stop.py)
            sweep()  # groups of stopped jobs, created after this job's first look
            self._thread.join(timeout=1.0)
            self.poll()
        self.poll()
        if self._relay_lost:  # the ends it did not relay, from the units' stored statuses
            statuses = self.storage.unit_statuses()
            for unit in (u for g in self.groups for u in g.units):
                status = statuses.get(unit.unit_id)
                if unit.unit_id in self._counted or status is None:
                    continue
                if status.get("state") == "done":
                    self.tracker.unit_done(unit.unit_id)
                else:
                    self.tracker.unit_failed(unit.unit_id, status.get("error", ""))
        # Units that never stored a status: their run failed past its restarts.
        for group in self.groups:
            for unit in group.units:
                if not self.storage.exists(f"status/{unit.unit_id}.json"):
                    why = self.trial_errors.get(group.run_name) or (
                        f"{type(self.error).__name__}: {self.error}" if self.error else
                        "run ended without training this unit"
                    )
                    fail_unit(unit, self.spec.target.horizons, f"run {group.run_name}: {why}",
                              self.storage)
                    self.tracker.unit_failed(unit.unit_id, why)


def run_deep_groups(
    todo: Plan, prepared: dict[str, Any], spec: JobSpec, storage: JobStorage,
    tracker: ProgressTracker, placement: DeepPlacement,
    refit: dict[str, dict[str, Any]] | None = None,
) -> DeepRuns:
    """Start every pending deep group whose symbols were prepared; returns at once.
    `refit`: model -> overrides of its Tune search's best config (refit on train+val)."""
    groups = [
        RunGroup(g.run_name, tuple(u for u in g.units if u.symbol in prepared))
        for g in todo.deep_groups
    ]
    groups = [g for g in groups if g.units]
    runs = DeepRuns(groups, spec, storage, tracker)
    if not groups:
        return runs.start(lambda: None)
    ctx = {
        "spec": spec.to_dict(),
        "storage_uri": storage.storage_uri,
        "job_id": storage.job_id,
        "groups": {g.run_name: [u.to_dict() for u in g.units] for g in groups},
        "prepared": {s: prepared[s] for g in groups for s in {u.symbol for u in g.units}},
        "relay": runs.relay,
        "gpu": placement.gpu,
        "attempt": f"{time.time():.0f}",
        "refit": refit or {},
    }
    return runs.start(lambda: _tune(groups, ctx, placement.slots, storage, runs))


def storage_outage(error: str) -> bool:
    """Whether a run's error is storage that could not be reached (a network error, a
    timeout, a 5xx), not a fault of its own: Ray Train's own checkpoint bookkeeping does not
    retry those, and its controller fails the whole run. The quoted key (a job id, a
    symbol) is cut out before the message is read."""
    from ray_jobs.storage import is_transient

    last = error.strip().splitlines()[-1] if error.strip() else ""
    # "When <op> key '<key>' in bucket '<bucket>': AWS Error <CODE> during <Op>: <text>";
    # the key may hold quotes, so it is cut from "key '" to the last "' in bucket '"
    last = re.sub(r"key '.*' in bucket '[^']*'", "key <key> in bucket <bucket>", last)
    return "AWS Error" in last and is_transient(OSError(re.sub(r"'[^']*'", "<path>", last)))


def _tune(groups: list[RunGroup], ctx: dict[str, Any], slots: int, storage: JobStorage,
          runs: DeepRuns) -> None:
    """Fit the runs; a run that a storage outage failed, or whose Tune trial or Train
    controller process died (`retryable`), is fitted again (up to RUN_RETRY_WAITS_S), from
    its checkpoints and skipping its stored units, as a rerun of the job would. An outage
    that fails the experiment itself (Tune's own reads and writes of its state in the
    driver, e.g. listing the experiment folder as it ends) fails every run of it alike, and
    they are fitted again the same way."""
    pending = groups
    for retry, wait_s in enumerate((0.0, *RUN_RETRY_WAITS_S)):
        if retry:
            check_stop()  # a cancel kills the runs' processes: no retry to announce
            names = ", ".join(g.run_name for g in pending)
            log.warning("run(s) %s failed on a storage outage or a lost Ray process (%s); "
                        "fitting them again in %.0fs from their checkpoints (retry %d of %d)",
                        names,
                        runs.trial_errors[pending[0].run_name], wait_s, retry,
                        len(RUN_RETRY_WAITS_S))  # fmt: skip
            sleep_unless_stopped(wait_s)
            check_stop()  # a stop request: no new runs
        try:
            errors = _fit(pending, ctx, slots, storage, f"deep-{ctx['attempt']}"
                          + (f"-retry{retry}" if retry else ""))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - an outage is retried, the rest re-raised
            error = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
            if not storage_outage(error):
                raise
            errors = {g.run_name: error for g in pending}
        for group in pending:
            runs.trial_errors.pop(group.run_name, None)
        silent = _silently_unfinished(pending, errors, storage)
        errors.update(silent)
        runs.trial_errors.update(errors)
        pending = [g for g in pending
                   if g.run_name in silent or retryable(errors.get(g.run_name, ""))]
        if not pending:
            return


# A run whose Tune trial or Train controller process died (killed, OOM, its node lost): not
# the units' fault, and the run restarts from its checkpoints like a storage outage's. A
# run whose *workers* died past FailureConfig's restarts (WorkerGroupError) is not retried.
LOST_PROCESS = ("ActorDiedError", "RayTaskError(ActorDiedError)", "RayActorError",
                "RayTaskError(RayActorError)", "ActorUnavailableError", "NodeDiedError",
                "RayTaskError(NodeDiedError)", "OwnerDiedError")


def retryable(error: str) -> bool:
    """A run error worth fitting the run again for: a storage outage, or a lost process."""
    return storage_outage(error) or error.startswith(LOST_PROCESS)


SILENT_END = ("the run reported no error but left units without a status (Tune's record "
              "of it was lost, e.g. to a storage outage as its experiment ended)")


def _silently_unfinished(groups: list[RunGroup], errors: dict[str, str],
                         storage: JobStorage | None) -> dict[str, str]:
    """run name -> SILENT_END for the runs that reported no error but left a unit without a
    stored status. A storage outage as the experiment ended kept Tune from saving its
    state: its results then came back without the trials' errors (a fresh-clone CI failed
    both units of the outage test so), and such a run is fitted again like one an outage
    failed (a unit that ran stored its status, done or failed)."""
    quiet = [g for g in groups if g.run_name not in errors and g.units]
    if not quiet or storage is None:
        return {}
    try:
        stored = set(storage.list_dir("status", missing_ok=True))
    except Exception:  # noqa: BLE001 - the storage is still out: none can be told done
        stored = set()
    return {g.run_name: SILENT_END for g in quiet
            if any(f"{u.unit_id}.json" not in stored for u in g.units)}


def _fit(groups: list[RunGroup], ctx: dict[str, Any], slots: int, storage: JobStorage,
         name: str) -> dict[str, str]:
    """One Tune experiment `name` over the groups' runs; returns run name -> error."""
    from ray import tune

    ray_storage = storage.ray_storage()
    trainable = tune.with_resources(tune.with_parameters(_trial, ctx=ctx), {"CPU": TRIAL_CPU})
    tuner = tune.Tuner(
        trainable,
        param_space={"run": tune.grid_search([g.run_name for g in groups])},
        tune_config=tune.TuneConfig(max_concurrent_trials=slots, reuse_actors=False),
        run_config=tune.RunConfig(
            name=name, storage_path=ray_storage.storage_path,
            storage_filesystem=ray_storage.storage_filesystem, verbose=0,
        ),  # fmt: skip
    )
    errors = {}
    for result in tuner.fit():
        if result.error is not None:
            errors[result.config["run"]] = f"{type(result.error).__name__}: " + str(
                result.error
            ).strip().splitlines()[-1][:500]
    return errors


def _trial(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    """Tune function: build and fit the TorchTrainer of one run group (Train V2 style)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    os.environ.update(TRAIN_ENV)
    name = config["run"]
    try:  # progress only: the run's units are listed as starting while it starts up
        ctx["relay"].push.remote({"type": "run_start", "run_name": name,
                                  "units": [Unit(**u).unit_id for u in ctx["groups"][name]]})
    except Exception:  # noqa: BLE001 - a relay gone does not stop the run
        pass
    storage = JobStorage(ctx["storage_uri"], ctx["job_id"])
    ray_storage = storage.ray_storage()
    gpu = float(ctx["gpu"])
    worker = {"CPU": WORKER_CPU} | ({"GPU": gpu} if gpu > 0 else {})
    trainer = TorchTrainer(
        _train_group,
        train_loop_config={**ctx, "run_name": name, "units": ctx["groups"][name],
                           "groups": None},
        scaling_config=ray.train.ScalingConfig(
            num_workers=1, use_gpu=gpu > 0, resources_per_worker=worker
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=f"{ray_storage.storage_path}/train",
            storage_filesystem=ray_storage.storage_filesystem,
            failure_config=ray.train.FailureConfig(max_failures=MAX_FAILURES),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=SCORE, checkpoint_score_order="max"
            ),
        ),
    )
    trainer.fit()


class _ReportEachEpoch:
    """Training-loop callback: checkpoint + `ray.train.report` every epoch, and a progress
    event to the driver."""

    def __init__(self, unit: Unit, run_name: str, relay: Any) -> None:
        self.unit, self.run_name, self.relay = unit, run_name, relay

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any], trainer_state: Any) -> None:
        import ray.train

        from models.training.checkpoint import save_checkpoint

        val_loss = float(metrics.get("val_loss", math.nan))
        report = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        report.update(unit_id=self.unit.unit_id, epoch=epoch,
                      **{SCORE: -val_loss if math.isfinite(val_loss) else -math.inf})
        # A directory of its own: with ASYNC upload Ray uploads it in the background and
        # deletes it afterwards, so the loop does not wait for storage.
        d = tempfile.mkdtemp(prefix=CKPT_PREFIX)
        save_checkpoint(d, trainer_state())
        with open(os.path.join(d, UNIT_FILE), "w", encoding="utf-8") as f:
            json.dump({"unit_id": self.unit.unit_id, "epoch": epoch}, f)
        ray.train.report(
            report,
            checkpoint=ray.train.Checkpoint.from_directory(d),
            checkpoint_dir_name=f"{self.unit.unit_id}/epoch_{epoch:04d}",
            checkpoint_upload_mode=ray.train.CheckpointUploadMode.ASYNC,
        )
        self.relay.push.remote({"type": "epoch", "unit_id": self.unit.unit_id, "epoch": epoch,
                                "metric": "val_loss", "value": val_loss,
                                "run_name": self.run_name})


@contextlib.contextmanager
def _latest_checkpoint() -> Iterator[tuple[str | None, str | None, int | None]]:
    """(unit id, local dir, epoch) of the run's latest checkpoint, if any, downloaded for
    the run's life and removed after it: `Checkpoint.to_directory()` alone left a copy in
    /tmp (`checkpoint_tmp_*`) at every resume, for good. Named `CKPT_PREFIX...`, so a copy
    a killed worker leaves is swept as stale."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        yield None, None, None
        return
    local = tempfile.mkdtemp(prefix=f"{CKPT_PREFIX}resume-")
    try:
        ckpt.to_directory(local)
        with open(os.path.join(local, UNIT_FILE), encoding="utf-8") as f:
            info = json.load(f)
        yield info["unit_id"], local, int(info["epoch"])
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _max_epochs(unit: Unit, spec: JobSpec, refit: dict[str, dict[str, Any]]) -> int | None:
    """The epochs `unit` trains at most (its progress and the ETA show them); None when its
    config does not resolve (run_unit then records why)."""
    from models.registry import resolve
    from ray_jobs.units import unit_overrides

    overrides = unit_overrides(spec, unit.model, refit.get(unit.model))
    try:
        return resolve(unit.model, spec.preset, overrides).train.epochs
    except (ValueError, TypeError):
        return None


CKPT_PREFIX = "quantray-ckpt-"
# A checkpoint directory left this long is one whose upload was cut off (its worker killed
# mid-upload: Ray deletes it only after the upload); an upload takes seconds to minutes.
STALE_CKPT_S = 3600.0


def remove_stale_checkpoint_dirs(tmp: str | None = None, max_age_s: float = STALE_CKPT_S,
                                 now: float | None = None) -> int:
    """Remove this node's `quantray-ckpt-*` directories untouched for `max_age_s` (each run
    sweeps once as it starts): a worker killed mid-upload left ~2 MB each in /tmp for good.
    Returns how many were removed."""
    tmp = tmp or tempfile.gettempdir()
    now = time.time() if now is None else now
    removed = 0
    try:
        names = [n for n in os.listdir(tmp) if n.startswith(CKPT_PREFIX)]
    except OSError:
        return 0
    for name in names:
        path = os.path.join(tmp, name)
        try:
            if now - os.stat(path).st_mtime < max_age_s or not os.path.isdir(path):
                continue
            shutil.rmtree(path)
            removed += 1
        except OSError:  # another run removed it, or it is not ours to remove
            continue
    return removed


def _train_group(cfg: dict[str, Any]) -> None:
    """Per-worker loop: the run's units one after another, each stored when it ends."""
    if removed := remove_stale_checkpoint_dirs():
        log.info("removed %d checkpoint directories of uploads cut off earlier", removed)
    spec = JobSpec.from_dict(cfg["spec"])
    storage = JobStorage(cfg["storage_uri"], cfg["job_id"])
    relay, run_name = cfg["relay"], cfg["run_name"]
    with _latest_checkpoint() as (resume_unit, resume_dir, resume_epoch):
        for unit_dict in cfg["units"]:
            unit = Unit(**unit_dict)
            status_rel = f"status/{unit.unit_id}.json"
            if storage.exists(status_rel):
                status = storage.read_json(status_rel)
                if status.get("state") == "done" or status.get("attempt") == cfg["attempt"]:
                    continue  # finished, or failed earlier in this attempt: not retrained
            folds = ray.get(cfg["prepared"][unit.symbol])
            resume = resume_dir if resume_unit == unit.unit_id else None
            relay.push.remote({"type": "start", "unit_id": unit.unit_id, "run_name": run_name,
                               "max_epochs": _max_epochs(unit, spec, cfg["refit"])})
            extra = {"run_name": run_name, "attempt": cfg["attempt"],
                     "resumed_from_epoch": resume_epoch if resume else None}
            rows = run_unit(unit, folds[unit.fold], spec, storage,
                            callbacks=[_ReportEachEpoch(unit, run_name, relay)],
                            resume_from=resume, extra=extra, refit=cfg["refit"].get(unit.model),
                            propagate=(ray.exceptions.RayError,))
            error = next((r["error"] for r in rows if r.get("error")), None)
            relay.push.remote({"type": "failed" if error else "done", "unit_id": unit.unit_id,
                               "error": error or ""})
