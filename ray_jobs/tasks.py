"""Ray tasks and actors of a job: prepare a symbol once, fit linear units, ensembles, and a
relay through which training workers report progress to the driver."""

from __future__ import annotations

from typing import Any

import ray

from data.prepared import PreparedSymbol
from ray_jobs.planner import Unit
from ray_jobs.spec import JobSpec
from ray_jobs.storage import JobStorage
from ray_jobs.units import run_unit


def load_symbol_frame(spec: JobSpec, symbols: list[str]):
    """The spec's dataset rows of `symbols` (Parquet predicate pushdown when it applies)."""
    from data.loading import load_bars, load_lob

    loader = load_lob if spec.dataset.kind == "lob" else load_bars
    return loader(spec.dataset.uri, symbols=symbols, start=spec.dataset.start, end=spec.dataset.end)


def prepare_one(spec: JobSpec, symbol: str) -> list[PreparedSymbol]:
    """Load, validate and prepare one symbol; raises with a message naming the problem."""
    from data.prepare import PrepareConfig, prepare_frame

    cfg = PrepareConfig(**spec.prepare_config_kwargs())
    frame = load_symbol_frame(spec, [symbol])
    result = prepare_frame(frame, cfg, on_error="raise")
    return result.prepared[symbol]


@ray.remote(num_cpus=1, max_retries=2, retry_exceptions=False)
def prepare_task(spec_dict: dict[str, Any], symbol: str) -> list[PreparedSymbol]:
    """One symbol's features, targets, splits and scaling, computed once per job; every unit
    of the symbol reads the result from the object store."""
    return prepare_one(JobSpec.from_dict(spec_dict), symbol)


@ray.remote(num_cpus=1, max_retries=2)
def linear_task(
    unit_dicts: list[dict[str, Any]],
    folds: list[PreparedSymbol],
    spec_dict: dict[str, Any],
    storage_uri: str,
    job_id: str,
) -> list[list[dict[str, Any]]]:
    """Fit, score and store one symbol's linear units (a Ray CPU task). A linear fit on
    daily data takes milliseconds, so one task per symbol keeps Ray's per-task cost small
    next to the work; each unit still has its own results, status and error."""
    spec, storage = JobSpec.from_dict(spec_dict), JobStorage(storage_uri, job_id)
    out = []
    for d in unit_dicts:
        unit = Unit(**d)
        out.append(run_unit(unit, folds[unit.fold], spec, storage))
    return out


@ray.remote(num_cpus=1, max_retries=2)
def ensemble_task(
    symbol: str,
    folds: list[PreparedSymbol],
    unit_dirs: dict[int, dict[str, str]],
    storage_uri: str,
    job_id: str,
) -> list[dict[str, Any]]:
    """Soft-voting ensemble rows of one symbol from its units' stored predictions."""
    from ray_jobs.ensembles import symbol_ensemble_rows

    storage = JobStorage(storage_uri, job_id)
    rows: list[dict[str, Any]] = []
    for fold, dirs in unit_dirs.items():
        rows += symbol_ensemble_rows(symbol, folds[fold], dirs, storage)
    return rows


@ray.remote(num_cpus=0)
class ProgressRelay:
    """Training workers push unit events here; the driver drains them into its tracker."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []

    def push(self, event: dict[str, Any]) -> None:
        self._events.append(event)

    def drain(self) -> list[dict[str, Any]]:
        events, self._events = self._events, []
        return events


def apply_events(tracker: Any, events: list[dict[str, Any]]) -> None:
    """Replay relay events on a ProgressTracker (done/failed are counted by the driver)."""
    for e in events:
        kind, uid = e.get("type"), e.get("unit_id", "")
        if kind == "start":
            tracker.unit_started(uid, run_name=e.get("run_name"), max_epochs=e.get("max_epochs"))
        elif kind == "epoch":
            try:
                tracker.unit_epoch(uid, int(e["epoch"]), str(e["metric"]), float(e["value"]))
            except KeyError:  # the start event of a resumed unit came before a driver restart
                tracker.unit_started(uid, run_name=e.get("run_name"))
                tracker.unit_epoch(uid, int(e["epoch"]), str(e["metric"]), float(e["value"]))
