"""The job driver: plan, prepare each symbol once, fan out linear tasks and deep runs,
then write the leaderboard, summary, ensembles and plots.

Resumable: finished units leave a `status/{unit_id}.json` marker, the plan is stored
(`plan.json`) and reloaded, so rerunning a job id trains only what is missing and deep runs
continue from their checkpoints under the same run names.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray

from ray_jobs.cluster_gc import remove_leaked_placement_groups
from ray_jobs.planner import Plan, Unit
from ray_jobs.planner import plan as make_plan
from ray_jobs.progress import ProgressTracker, ProgressWriter
from ray_jobs.spec import JobSpec
from ray_jobs.storage import JobStorage
from ray_jobs.tasks import ensemble_task, linear_task, prepare_task
from ray_jobs.units import fail_unit

log = logging.getLogger("quantray.driver")


class JobSpecMismatch(ValueError):
    pass


def resolve_symbols(spec: JobSpec) -> tuple[list[str], dict[str, str]]:
    """The job's symbols, and those asked for but absent from the dataset (with a reason)."""
    from data.loading import list_symbols

    available = list_symbols(spec.dataset.uri)
    if isinstance(spec.dataset.symbols, int):
        return available[: spec.dataset.symbols], {}
    present = set(available)
    missing = {
        s: f"symbol {s!r} is not in dataset {spec.dataset.uri}" for s in spec.dataset.symbols
        if s not in present
    }
    return list(spec.dataset.symbols), missing


def store_spec(spec: JobSpec, storage: JobStorage) -> None:
    """Write spec.json, or check that a resumed job runs the spec it started with."""
    if storage.exists("spec.json"):
        stored = JobSpec.from_dict(storage.read_spec())
        if stored.fingerprint() != spec.fingerprint():
            raise JobSpecMismatch(
                f"job {storage.job_id} already exists with another spec (fingerprint "
                f"{stored.fingerprint()} != {spec.fingerprint()}): use a new job id"
            )
        return
    storage.write_spec(spec.to_dict())


def load_or_plan(spec: JobSpec, symbols: list[str], storage: JobStorage) -> Plan:
    if storage.exists("plan.json"):
        return Plan.from_dict(storage.read_json("plan.json"))
    from ray_jobs.deep_runs import deep_slots

    plan = make_plan(spec, symbols, slots=deep_slots(spec, ray.cluster_resources()))
    storage.write_json("plan.json", plan.to_dict())
    return plan


def _prepare_all(
    spec: JobSpec, symbols: list[str], tracker: ProgressTracker
) -> tuple[dict[str, Any], dict[str, str]]:
    """Start one preparation task per symbol; returns refs of the good ones and errors."""
    spec_dict = spec.to_dict()
    refs = {s: prepare_task.remote(spec_dict, s) for s in symbols}
    ok: dict[str, Any] = {}
    errors: dict[str, str] = {}
    pending = dict(refs)
    while pending:
        ready, _ = ray.wait(list(pending.values()), num_returns=1)
        symbol = next(s for s, r in pending.items() if r == ready[0])
        del pending[symbol]
        try:
            ray.get(ready[0])
            ok[symbol] = refs[symbol]
        except Exception as exc:  # the symbol's units fail alone, with this message
            cause = getattr(exc, "cause", None) or exc
            errors[symbol] = f"data: {type(cause).__name__}: {cause}"
            log.warning("preparing %s failed: %s", symbol, errors[symbol])
    return ok, errors


def run_job(spec: JobSpec, storage: JobStorage, *, progress_interval_s: float = 2.0) -> dict:
    """Run (or resume) the job; returns the final summary dict."""
    from ray_jobs.deep_runs import run_deep_groups
    from ray_jobs.reporting import write_results

    t0 = time.time()
    store_spec(spec, storage)
    # A job stopped mid-training may have leaked a Train placement group that would starve
    # this job's deep runs for good (see ray_jobs/cluster_gc.py).
    remove_leaked_placement_groups()
    tracker = ProgressTracker(job_id=storage.job_id)
    with ProgressWriter(tracker, storage, interval_s=progress_interval_s):
        symbols, missing = resolve_symbols(spec)
        plan = load_or_plan(spec, symbols, storage)
        statuses = storage.unit_statuses()
        done = {u for u, s in statuses.items() if s.get("state") == "done"}
        todo = plan.pending(done)
        tracker.set_total(len(plan.units))
        tracker.skip_done(len(plan.units) - len(todo.units))
        log.info("plan: %s; %d units already done", plan.summary(), len(done))

        tracker.set_phase("preparing", f"{len(symbols)} symbols")
        prepared, prep_errors = _prepare_all(spec, [s for s in symbols if s not in missing],
                                             tracker)
        prep_errors.update(missing)
        for unit in todo.units:
            if unit.symbol in prep_errors:
                tracker.unit_started(unit.unit_id)
                fail_unit(unit, spec.target.horizons, prep_errors[unit.symbol], storage)
                tracker.unit_failed(unit.unit_id, prep_errors[unit.symbol])

        tracker.set_phase("training", f"{len(todo.units)} units to train")
        spec_dict = spec.to_dict()
        linear_refs: dict[Any, list[Unit]] = {}
        by_symbol: dict[str, list[Unit]] = {}
        for unit in todo.linear_units:
            if unit.symbol in prepared:
                by_symbol.setdefault(unit.symbol, []).append(unit)
        for symbol, units in by_symbol.items():
            for unit in units:
                tracker.unit_started(unit.unit_id)
            ref = linear_task.remote([u.to_dict() for u in units], prepared[symbol], spec_dict,
                                     storage.storage_uri, storage.job_id)
            linear_refs[ref] = units
        refit = _tune(spec, plan, todo, prepared, storage, tracker)
        tracker.set_phase("training", f"{len(todo.units)} units to train")
        deep = run_deep_groups(todo, prepared, spec, storage, tracker, refit)
        while linear_refs:
            ready, _ = ray.wait(list(linear_refs), num_returns=1, timeout=1.0)
            deep.poll()
            for ref in ready:
                _finish(tracker, linear_refs.pop(ref), ref, spec, storage)
        deep.wait()

        tracker.set_phase("reporting", "leaderboard, ensembles, plots")
        ensemble_rows = _ensembles(plan, prepared, storage)
        summary = write_results(spec, plan, storage, ensemble_rows, prep_errors,
                                elapsed_s=time.time() - t0)
        failed = summary["failed_units"]
        tracker.set_phase("failed" if failed else "succeeded",
                          f"{len(failed)} failed units" if failed else "all units done")
    return summary


def _tune(spec: JobSpec, plan: Plan, todo: Plan, prepared: dict[str, Any],
          storage: JobStorage, tracker: ProgressTracker) -> dict[str, dict[str, Any]]:
    """Search each deep model (tune.num_samples > 0) and return its refit overrides. A model
    whose search fails has its pending units failed with the search's error."""
    if not spec.tune.num_samples or not todo.deep_groups:
        return {}
    from ray_jobs.deep_runs import deep_slots, gpu_fraction
    from ray_jobs.tune_search import refit_overrides, search_model, search_symbols

    resources = ray.cluster_resources()
    symbols = [s for s in search_symbols(spec, list(plan.symbols)) if s in prepared]
    refit: dict[str, dict[str, Any]] = {}
    for model in spec.deep_models:
        if not any(u.model == model for u in todo.deep_units):
            continue
        tracker.set_phase("tuning", f"{model}: {spec.tune.num_samples} trials on {len(symbols)}"
                                    " symbols")
        try:
            if not symbols:
                raise RuntimeError("no search symbol could be prepared")
            best = search_model(model, spec, storage, {s: prepared[s] for s in symbols},
                                gpu=gpu_fraction(spec, resources),
                                slots=deep_slots(spec, resources))
            refit[model] = refit_overrides(best)
        except Exception as exc:  # the model's units fail alone with the search's error
            log.warning("tune search for %s failed: %s", model, exc)
            for unit in todo.deep_units:
                if unit.model == model:
                    tracker.unit_started(unit.unit_id)
                    fail_unit(unit, spec.target.horizons, f"tune: {exc}", storage)
                    tracker.unit_failed(unit.unit_id, str(exc))
    return refit


def _finish(tracker: ProgressTracker, units: list[Unit], ref: Any, spec: JobSpec,
            storage: JobStorage) -> None:
    """Count a linear task's units as done or failed (all failed if its worker died)."""
    try:
        per_unit = ray.get(ref)
    except Exception as exc:  # worker died past its retries: its units fail, the rest go on
        per_unit = [fail_unit(u, spec.target.horizons, f"worker: {exc}", storage)
                    for u in units]
    for unit, rows in zip(units, per_unit, strict=True):
        error = next((r["error"] for r in rows if r.get("error")), None)
        if error:
            tracker.unit_failed(unit.unit_id, error)
        else:
            tracker.unit_done(unit.unit_id)


def _ensembles(plan: Plan, prepared: dict[str, Any], storage: JobStorage) -> list[dict]:
    """Soft-voting ensemble rows per symbol over its successfully finished units."""
    statuses = storage.unit_statuses()
    by_symbol: dict[str, dict[int, dict[str, str]]] = {}
    for unit in plan.units:
        if statuses.get(unit.unit_id, {}).get("state") == "done":
            by_symbol.setdefault(unit.symbol, {}).setdefault(unit.fold, {})[unit.model] = (
                unit.rel_dir
            )
    refs = [
        ensemble_task.remote(sym, prepared[sym], dirs, storage.storage_uri, storage.job_id)
        for sym, dirs in by_symbol.items()
        if sym in prepared and any(len(d) >= 2 for d in dirs.values())
    ]
    rows: list[dict] = []
    for ref in refs:
        try:
            rows += ray.get(ref)
        except Exception as exc:  # ensembles are extra rows; a failure is logged, not fatal
            log.warning("ensemble failed: %s", exc)
    return rows
