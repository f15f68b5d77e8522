"""Ray Tune search over a deep model's search space, then the refit settings for the job.

One trial = one sampled config, trained on the search symbols in lock-step: every epoch
trains each symbol's model one epoch further (the loop resumes exactly from its own state,
so this equals uninterrupted training) and reports the mean validation metrics over the
symbols, so ASHA compares trials epoch against epoch on the same data. Each trial is a
Tune function that builds a `TorchTrainer` (Train V2 style).

The best config is then refitted for every symbol on train+val (the validation samples
join the training set; thresholds and scaler stay those fitted on train) for the best
trial's number of epochs, and scored on test. The result of a model's search is stored
(`tune/{model}/best.json`), so a resumed job does not search again.

A search interrupted before that (a killed driver) goes on where it stopped when the job is
rerun: its Tune experiment (`ray/search-{model}`) is restored with `Tuner.restore`, so its
finished trials (ASHA-stopped ones included) keep their results and are not trained again,
while the trials that were running, pending or errored are restarted from scratch under
their own ids (a trial keeps no checkpoint). Which trials had finished is what the stored
experiment state says: Tune saves it every `STATE_SAVE_S` seconds here (its own default is
10 s or more), so a trial that ended in the last seconds before the interruption runs
again. The trainable is passed again, with this
driver's object refs to the prepared data (the killed driver's refs are dead). What a
restored search samples: Tune restores its `BasicVariantGenerator` (sample counter,
concurrency limit and RNG state, saved with the trial list), so the trials not created
before the interruption get the configs an uninterrupted search with the spec's seed
would have drawn, and the search still has `tune.num_samples` trials. Not restored:
ASHA's rung records (Tune does not save the scheduler), so the trials run after the
restart are compared with each other only and may run longer than they would have; and
`tune.max_concurrent: auto` keeps the limit of the first run's cluster. A search is
resumed only if it was started for the same spec (a fingerprint in
`tune/{model}/search.json`) and its state reads back; otherwise it is removed, with a
warning, and the search starts afresh.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

from data.prepared import PreparedSymbol
from ray_jobs.planner import SEARCH_FOLD
from ray_jobs.spec import JobSpec
from ray_jobs.storage import JobStorage

log = logging.getLogger("quantray.tune")

REFIT_PATIENCE = 10_000  # refit trains a fixed number of epochs: no early stopping
# How long Tune waits for a stopped trial's actor to exit before it kills it (Tune's own
# default is 600 s). A trial actor that lingers keeps its Train controller alive (the
# controller is the actor's child), and with it the controller's worker group and its CPU,
# so later trials could wait for that CPU until the 600 s ran out. Killed, the actor takes
# its controller with it, and the OrphanSweeper frees the worker group.
TRIAL_STOP_GRACE_S = 15
# seconds between two saves of a search's experiment state (a few trials' JSON: cheap)
STATE_SAVE_S = 2


def tune_space(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The registry's search space (data) as Ray Tune sampling objects."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, d in space.items():
        kind = d["type"]
        if kind == "choice":
            out[key] = tune.choice(list(d["values"]))
        elif kind == "uniform":
            out[key] = tune.uniform(d["low"], d["high"])
        elif kind == "loguniform":
            out[key] = tune.loguniform(d["low"], d["high"])
        elif kind == "randint":
            out[key] = tune.randint(d["low"], d["high"])
        else:
            raise ValueError(f"search space {key}: unknown type {kind!r}")
    return out


def search_symbols(spec: JobSpec, symbols: list[str]) -> list[str]:
    """The symbols a search trains on, from `symbols` (the job's usable ones, in order):
    all, the first N (a symbol whose data failed is no reason to search on fewer), or
    those named."""
    t = spec.tune.symbols
    if t is None:
        return list(symbols)
    if isinstance(t, int):
        return list(symbols[:t])
    return [s for s in t if s in symbols]


def train_plus_val(prepared: PreparedSymbol) -> PreparedSymbol:
    """The same symbol with its validation samples added to training (for the refit)."""
    train = np.union1d(prepared.splits["train"], prepared.splits["val"])
    splits = dict(prepared.splits, train=train)
    return dataclasses.replace(prepared, splits=splits, meta={**prepared.meta, "refit": True})


class _OneEpoch:
    """Callback: keep the epoch's metrics and resumable state, then stop."""

    def __init__(self) -> None:
        self.metrics: dict[str, Any] | None = None
        self.state: dict[str, Any] | None = None

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any], trainer_state: Any) -> bool:
        self.metrics, self.state = dict(metrics), trainer_state()
        return True


def _search_worker(cfg: dict[str, Any]) -> None:
    """TorchTrainer worker of one trial: lock-step epochs over the search symbols."""
    import ray
    import ray.train

    from models.deep import fit_deep
    from models.registry import cast_params
    from ray_jobs.units import unit_overrides

    spec = JobSpec.from_dict(cfg["spec"])
    model = cfg["model"]
    params = cast_params(model, cfg["params"])
    overrides = unit_overrides(spec, model, params)
    folds = {s: ray.get(ref) for s, ref in cfg["prepared"].items()}
    fold = SEARCH_FOLD  # walk-forward: fold 0, before every test block (see planner.py)
    states: dict[str, Any] = dict.fromkeys(folds)
    last: dict[str, dict[str, Any]] = {}
    for epoch in range(cfg["epochs"]):
        for symbol, prepared in folds.items():
            step = _OneEpoch()
            fit_deep(model, prepared[fold], preset=spec.preset, overrides=overrides,
                     task=spec.target.kind, callbacks=[step], resume_from=states[symbol])
            if step.state is not None:  # None: this symbol's early stopping already ended it
                states[symbol], last[symbol] = step.state, step.metrics
        keys = {k for m in last.values() for k, v in m.items() if isinstance(v, int | float)}
        report = {k: float(np.mean([m[k] for m in last.values() if k in m])) for k in keys}
        report.update(epoch=epoch, epochs_run=epoch + 1)
        ray.train.report(report)


def _trial(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    from ray_jobs.deep_runs import TRAIN_ENV, WORKER_CPU
    from ray_jobs.tune_relay import ReportRelay, fit_reporting

    os.environ.update(TRAIN_ENV)
    gpu = float(ctx["gpu"])
    storage = JobStorage(ctx["storage_uri"], ctx["job_id"])
    ray_storage = storage.ray_storage()
    reports = Queue(actor_options={"num_cpus": 0})  # owned by this trial: dies with it
    trainer = TorchTrainer(
        _search_worker,
        train_loop_config={**ctx, "params": config},
        scaling_config=ray.train.ScalingConfig(
            num_workers=1, use_gpu=gpu > 0,
            resources_per_worker={"CPU": WORKER_CPU} | ({"GPU": gpu} if gpu > 0 else {}),
        ),  # fmt: skip
        run_config=ray.train.RunConfig(
            storage_path=f"{ray_storage.storage_path}/tune-train",
            storage_filesystem=ray_storage.storage_filesystem,
            # No restart: when ASHA stops a trial, its worker dies with the trial's actor,
            # and a controller allowed a restart outlived the trial, made a new worker
            # group (a live creator: no orphan) and kept its CPU; later trials waited for
            # good. A failed trial is one sample fewer; the search goes on.
            failure_config=ray.train.FailureConfig(max_failures=0),
            # not Ray's TuneReportCallback, which could lose the last report (tune_relay)
            callbacks=[ReportRelay(reports)],
        ),
    )
    fit_reporting(trainer.fit, reports, ray.tune.report)


def search_model(
    model: str, spec: JobSpec, storage: JobStorage, prepared: dict[str, Any], *,
    gpu: float, slots: int, say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or reload) the search for `model`; returns {params, epochs, metric, value}.
    `say` hears the search's progress line on every trial start, result and end
    (`ray_jobs.tune_progress.TrialProgress`)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    from models.registry import get_spec, resolve
    from ray_jobs.deep_runs import TRIAL_CPU
    from ray_jobs.units import unit_overrides

    best_rel = f"tune/{model}/best.json"
    if storage.exists(best_rel):  # a resumed job; the user's overrides win over its params
        best = storage.read_json(best_rel)  # (a search stored before keys could be fixed)
        fixed = set(spec.overrides.get(model, {}))
        return {**best, "params": {k: v for k, v in best["params"].items() if k not in fixed}}
    epochs = resolve(model, spec.preset, unit_overrides(spec, model)).train.epochs
    # A key the spec's overrides set is fixed, not searched: the user's value holds in
    # every trial and in the refit.
    space = get_spec(model).search_space
    fixed = sorted(k for k in space if k in spec.overrides.get(model, {}))
    space = {k: v for k, v in space.items() if k not in fixed}
    if not space:
        raise ValueError(f"overrides.{model} fixes every key of its search space "
                         f"({', '.join(fixed)}): drop some of them or set tune.num_samples: 0")
    if fixed:
        log.info("tune %s: %s fixed by overrides, not searched", model, ", ".join(fixed))
    ctx = {"spec": spec.to_dict(), "model": model, "prepared": prepared, "epochs": epochs,
           "gpu": gpu, "storage_uri": storage.storage_uri, "job_id": storage.job_id}
    ray_storage = storage.ray_storage()
    metric, mode = spec.tune.metric, spec.tune.mode
    # Read by Tune's controller when `fit` starts (in this process); a user's value wins.
    os.environ.setdefault("TUNE_FORCE_TRIAL_CLEANUP_S", str(TRIAL_STOP_GRACE_S))
    # How stale the stored experiment state may be: a trial that ended after its last save
    # is restarted by a resume. Tune's "auto" saves every max(10 s, 19 x a save's time),
    # and a trial that had ended 14 s before a cancel was trained again on resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(STATE_SAVE_S))
    concurrent = slots if spec.tune.max_concurrent == "auto" else int(spec.tune.max_concurrent)
    trainable = tune.with_resources(tune.with_parameters(_trial, ctx=ctx), {"CPU": TRIAL_CPU})
    param_space = tune_space(space)
    fingerprint = search_fingerprint(model, spec, list(prepared), epochs, space, fixed)
    from ray_jobs.tune_progress import TrialProgress

    progress = TrialProgress(model, spec.tune.num_samples, metric, mode, epochs,
                             say or (lambda _: None))
    tuner = restore_search(model, storage, trainable, param_space, fingerprint)
    if tuner is not None:  # its RunConfig is the first run's, with that run's callback
        progress.seed(tuner.get_results())  # the kept trials' best value and epochs
        _use_callback(tuner, progress)
    else:  # a fresh search: its fingerprint first, so a rerun can tell it
        storage.write_json(search_rel(model), fingerprint)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                # the limit goes to the generator: Tune ignores max_concurrent_trials (with
                # a warning only) when search_alg is a BasicVariantGenerator
                num_samples=spec.tune.num_samples,
                search_alg=BasicVariantGenerator(random_state=spec.seed,  # the spec's seed
                                                 max_concurrent=concurrent),
                scheduler=ASHAScheduler(metric=metric, mode=mode, max_t=epochs,
                                        grace_period=min(spec.tune.grace_period, epochs)),
            ),  # fmt: skip
            run_config=tune.RunConfig(
                name=experiment_name(model), storage_path=ray_storage.storage_path,
                storage_filesystem=ray_storage.storage_filesystem, verbose=0,
                callbacks=[progress],
            ),  # fmt: skip
        )
    from ray_jobs.cluster_gc import OrphanSweeper, remove_own_placement_groups

    with OrphanSweeper():  # an ended trial's worker group gives its CPU back meanwhile
        grid = tuner.fit()
    remove_own_placement_groups()  # the stopped trials' worker groups (Ray 2.60 leak)
    ok = [r for r in grid if r.error is None and r.metrics and metric in r.metrics]
    if not ok:
        errors = "; ".join(str(r.error).strip().splitlines()[-1][:200] for r in grid if r.error)
        raise RuntimeError(f"tune search for {model}: no trial finished ({errors or 'no result'})")
    sign = 1 if mode == "max" else -1
    best_value, best_epochs, best = -math.inf, 1, ok[0]
    for r in ok:  # best epoch of every trial, from its full metric history
        hist = last_attempt(r.metrics_dataframe)
        if hist is None or metric not in hist:
            continue
        i = int((sign * hist[metric]).values.argmax())
        if sign * float(hist[metric].iloc[i]) > best_value:
            best_value, best = sign * float(hist[metric].iloc[i]), r
            best_epochs = int(hist["epochs_run"].iloc[i]) if "epochs_run" in hist else i + 1
    result = {"params": cast_params_json(model, best.config), "epochs": best_epochs,
              "metric": metric, "value": sign * best_value, "trials": len(grid),
              "finished_trials": len(ok), "symbols": list(prepared), "fixed": fixed}
    storage.write_json(best_rel, result)
    log.info("tune %s: best %s=%.4f after %d epochs with %s", model, metric, result["value"],
             best_epochs, result["params"])
    return result


def _use_callback(tuner: Any, progress: Any) -> None:
    """Put `progress` in a restored tuner's RunConfig in place of the first run's progress
    callback (unpickled without its sink). Tune's restore takes no callbacks: this reaches
    into the Tuner (Ray 2.60's `_local_tuner`); failing that, the search runs without its
    progress line (logged)."""
    from ray_jobs.tune_progress import TrialProgress

    try:
        run_config = tuner._local_tuner.get_run_config()
        run_config.callbacks = [c for c in (run_config.callbacks or [])
                                if not isinstance(c, TrialProgress)] + [progress]
    except Exception as exc:  # noqa: BLE001 - progress only
        log.warning("tune: the restored search reports no trial progress (%s)", exc)


def experiment_name(model: str) -> str:
    """The Tune experiment of `model`'s search, under the job's Ray storage (`ray/`)."""
    return f"search-{model}"


def search_rel(model: str) -> str:
    """Where the fingerprint of `model`'s search is stored (job-relative)."""
    return f"tune/{model}/search.json"


def search_fingerprint(model: str, spec: JobSpec, symbols: list[str], epochs: int,
                       space: dict[str, Any], fixed: list[str]) -> dict[str, Any]:
    """What a search's trials depend on: the job's spec (data, features, preset, seed,
    tune settings...), the searched symbols, the epoch count and the searched space. A
    stored search is resumed only under the same fingerprint (plain JSON)."""
    fp = {"model": model, "spec": spec.to_dict(), "symbols": list(symbols),
          "epochs": int(epochs), "space": space, "fixed": list(fixed)}
    return json.loads(json.dumps(fp, sort_keys=True, default=str))


def last_attempt(hist: Any) -> Any:
    """A trial's metric history from its last start on: a trial restarted by a resumed
    search (from scratch: it keeps no checkpoint) may have its earlier attempt's rows
    first in its result file, its `epoch` counting from 0 again where it restarted."""
    if hist is None or "epoch" not in hist or not len(hist):
        return hist
    starts = np.flatnonzero(hist["epoch"].to_numpy() == 0)
    return hist.iloc[int(starts[-1]):] if len(starts) else hist


def restore_search(model: str, storage: JobStorage, trainable: Any,
                   param_space: dict[str, Any], fingerprint: dict[str, Any]) -> Any:
    """The interrupted search of `model` restored, ready to go on (`fit`), or None: no
    search to resume, or one that cannot be (started for another spec, or its state does
    not read back), which is then removed with a warning, for a fresh search.

    `Tuner.restore` (Ray 2.60) unpickles the first run's `tuner.pkl` (its TuneConfig:
    the search generator and scheduler, and its RunConfig), checks that `trainable` has
    the first run's name and `param_space` the same keys, and loads the experiment state
    (`experiment_state-*.json`) into its results; its `fit` then resumes the controller
    and the generator (`basic-variant-state-*.json`). When that resume fails, Tune only
    logs it and starts the experiment again in the same folder, and a generator state
    older than the experiment state hangs it; so the state is checked here first
    (`check_search_state`)."""
    from ray import tune
    from ray.tune.execution.tune_controller import TuneController

    rel = f"ray/{experiment_name(model)}"
    if not storage.exists(rel):
        return None
    ray_storage = storage.ray_storage()
    path = f"{ray_storage.storage_path}/{experiment_name(model)}"
    why = None
    try:
        stored = storage.read_json(search_rel(model))
    except Exception:  # missing (an older version's search, or never written) or unreadable
        stored = None
    if stored != fingerprint:
        why = ("it was started for another spec, symbols or search space" if stored
               else f"its fingerprint ({search_rel(model)}) is missing or unreadable")
    elif (not tune.Tuner.can_restore(path, storage_filesystem=ray_storage.storage_filesystem)
          or not _state_files(storage, rel, TuneController.CKPT_FILE_TMPL)):
        # killed before Tune saved its first state: no trial to keep
        log.info("tune %s: the interrupted search had saved no trial; starting it afresh",
                 model)
    else:
        try:
            tuner = tune.Tuner.restore(
                path, trainable=trainable, param_space=param_space,
                resume_unfinished=True,  # running or pending trials: started again
                # an error may be the interruption's (a cancel, a storage outage): retried
                resume_errored=True,
                storage_filesystem=ray_storage.storage_filesystem,
            )  # fmt: skip
            try:  # loaded by restore, which only logs a failure (then there are none)
                grid = tuner.get_results()
            except RuntimeError:
                raise ValueError("its experiment state (experiment_state-*.json) does not "
                                 "load") from None
            if not len(grid):
                raise ValueError("its experiment state holds no trial")
            check_search_state(storage, rel)
        except Exception as exc:  # an unreadable state: a fresh search is the remedy
            if _storage_outage(exc):  # not the state's fault: keep it for the next resume
                raise
            why = f"its state could not be restored ({type(exc).__name__}: {exc})"
        else:
            log.info("tune %s: resuming the interrupted search: %d trials restored, %d of "
                     "them finished (kept), %d errored; the others and the errored ones are "
                     "started again", model, len(grid), grid.num_terminated, grid.num_errors)
            return tuner
    if why:
        log.warning("tune %s: the interrupted search (%s) is not resumed: %s; it is removed "
                    "and the search starts afresh", model, storage.uri_of(rel), why)
    storage.delete_dir(rel)
    return None


def _storage_outage(exc: BaseException) -> bool:
    """Whether `exc` (or its cause) is the storage being unreachable rather than a state
    that does not read: Tune's own reads are not retried, and a search of hours must not
    be removed over a blip (the model's units then fail with the error; a resume retries)."""
    from ray_jobs.storage import StorageError, is_transient

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, StorageError):
            return seen.outage
        if isinstance(seen, OSError) and is_transient(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _state_files(storage: JobStorage, rel: str, template: str) -> list[str]:
    """Names of the files in folder `rel` that `template` ("name-{}.json") matches."""
    prefix, suffix = template.split("{}")
    return [n for n in storage.list_dir(rel, missing_ok=True)
            if n.startswith(prefix) and n.endswith(suffix)]


def check_search_state(storage: JobStorage, rel: str) -> None:
    """Raise unless the Tune experiment in folder `rel` holds a state Tune can resume: the
    newest experiment state (the trials and their statuses) and the newest search
    generator state (the trials it created, those it counts as running) load, and are of
    the same moment. Tune saves both about every 10 s on the driver, then uploads the
    folder file by file: a driver killed in between leaves them apart, and a generator
    behind its experiment would create trials again under existing ids, or (with
    max_concurrent) wait forever for a finished trial to end. Both are picked as Tune's
    resume picks them (the greatest name)."""
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.search import BasicVariantGenerator

    template = BasicVariantGenerator.CKPT_FILE_TMPL
    names = _state_files(storage, rel, template)
    if not names:
        raise FileNotFoundError(f"no search generator state ({template.format('*')})")
    experiment = max(_state_files(storage, rel, TuneController.CKPT_FILE_TMPL))
    state = json.loads(storage.read_bytes(f"{rel}/{experiment}"))
    trials = [json.loads(t) for t, _ in state["trial_data"]]
    status = {t["trial_id"]: t["status"] for t in trials}
    with tempfile.TemporaryDirectory(prefix="quantray-tune-") as tmp:
        with open(os.path.join(tmp, max(names)), "wb") as f:
            f.write(storage.read_bytes(f"{rel}/{max(names)}"))
        generator = BasicVariantGenerator()
        generator.restore_from_dir(tmp)
    gen = generator.get_state()  # Ray 2.60: one _TrialIterator per experiment (we run one)
    (samples,) = gen["_iterators"]
    created = {f"{samples.uuid_prefix}{i:05d}" for i in range(samples.counter)}
    finished = {t for t, s in status.items() if s == "TERMINATED"}
    if created != set(status) or set(gen["_live_trials"]) & finished:
        raise ValueError(
            f"its search generator's state ({len(created)} trials created, "
            f"{len(gen['_live_trials'])} running) and its experiment state ({len(status)} "
            f"trials, {len(finished)} finished) were saved at different moments")


def cast_params_json(model: str, params: dict[str, Any]) -> dict[str, Any]:
    from models.registry import cast_params

    return {k: (v.item() if hasattr(v, "item") else v) for k, v in cast_params(model,
                                                                                 params).items()}


def refit_overrides(best: dict[str, Any]) -> dict[str, Any]:
    """Overrides of the refit: the best params, the best epoch count, no early stopping,
    and the last epoch's weights kept (its val samples are in the training set, so the
    "best" val epoch would be chosen on data it trained on)."""
    return {**best["params"], "train.epochs": int(best["epochs"]),
            "train.patience": REFIT_PATIENCE, "train.restore_best": False}
