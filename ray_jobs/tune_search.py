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
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
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
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from ray_jobs.deep_runs import TRAIN_ENV, WORKER_CPU

    os.environ.update(TRAIN_ENV)
    gpu = float(ctx["gpu"])
    storage = JobStorage(ctx["storage_uri"], ctx["job_id"])
    ray_storage = storage.ray_storage()
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
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def search_model(
    model: str, spec: JobSpec, storage: JobStorage, prepared: dict[str, Any], *,
    gpu: float, slots: int,
) -> dict[str, Any]:
    """Run (or reload) the search for `model`; returns {params, epochs, metric, value}."""
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
    concurrent = slots if spec.tune.max_concurrent == "auto" else int(spec.tune.max_concurrent)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trial, ctx=ctx), {"CPU": TRIAL_CPU}),
        param_space=tune_space(space),
        tune_config=tune.TuneConfig(
            # the limit goes to the generator: Tune ignores max_concurrent_trials (with a
            # warning only) when search_alg is a BasicVariantGenerator
            num_samples=spec.tune.num_samples,
            search_alg=BasicVariantGenerator(random_state=spec.seed,  # the spec's seed
                                             max_concurrent=concurrent),
            scheduler=ASHAScheduler(metric=metric, mode=mode, max_t=epochs,
                                    grace_period=min(spec.tune.grace_period, epochs)),
        ),  # fmt: skip
        run_config=tune.RunConfig(name=f"search-{model}", storage_path=ray_storage.storage_path,
                                  storage_filesystem=ray_storage.storage_filesystem, verbose=0),
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
        hist = r.metrics_dataframe
        if hist is None or metric not in hist:
            continue
        i = int((sign * hist[metric]).values.argmax())
        if sign * float(hist[metric].iloc[i]) > best_value:
            best_value, best, best_epochs = sign * float(hist[metric].iloc[i]), r, i + 1
    result = {"params": cast_params_json(model, best.config), "epochs": best_epochs,
              "metric": metric, "value": sign * best_value, "trials": len(grid),
              "finished_trials": len(ok), "symbols": list(prepared), "fixed": fixed}
    storage.write_json(best_rel, result)
    log.info("tune %s: best %s=%.4f after %d epochs with %s", model, metric, result["value"],
             best_epochs, result["params"])
    return result


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
