"""Ray tasks and actors of a job: prepare each symbol once and fit the linear units (one
task per chunk of symbols), ensembles, and a relay through which training workers report
progress to the driver."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray

from data.prepared import PreparedSymbol
from ray_jobs.ensembles import ensemble_rows_from_predictions
from ray_jobs.planner import Unit
from ray_jobs.progress import EventRelay
from ray_jobs.spec import JobSpec
from ray_jobs.storage import JobStorage
from ray_jobs.units import fail_unit, run_unit


def load_symbol_frame(spec: JobSpec, symbols: list[str]):
    """The spec's dataset rows of `symbols` (Parquet predicate pushdown when it applies).
    The driver has refused symbols with padded twins ('XOM ') once for the job
    (`resolve_symbols`), so a chunk does not read the dataset's symbol column again."""
    from data.loading import load_bars, load_lob

    loader = load_lob if spec.dataset.kind == "lob" else load_bars
    return loader(spec.dataset.uri, symbols=symbols, start=spec.dataset.start,
                  end=spec.dataset.end, check_spellings=False)


def prepare_many(
    spec: JobSpec, symbols: list[str], warnings: dict[str, str] | None = None
) -> tuple[dict[str, list[PreparedSymbol]], dict[str, str]]:
    """Prepare `symbols` from one read of the dataset: (symbol -> folds, symbol -> data
    error). A symbol that fails validation or preparation fails alone, with its reason; if
    the shared read itself fails (e.g. one symbol has no rows in the window), every symbol
    is read on its own so that each gets its own error. `warnings`, when given, receives
    symbol -> warning about a kept symbol (suspect data, e.g. a long gap; or a threshold
    that leaves a class (nearly) empty in training: `PrepareResult.warnings`)."""
    from data.prepare import PrepareConfig, prepare_frame

    cfg = PrepareConfig(**spec.prepare_config_kwargs())
    try:
        result = prepare_frame(load_symbol_frame(spec, symbols), cfg, on_error="drop")
    except Exception as exc:  # noqa: BLE001 - the read failed for the chunk; find who
        if len(symbols) == 1:  # the symbol's own data error
            return {}, {symbols[0]: _data_error(symbols[0], exc)}
        ok: dict[str, list[PreparedSymbol]] = {}
        errors: dict[str, str] = {}
        for symbol in symbols:
            one_ok, one_err = prepare_many(spec, [symbol], warnings)
            ok.update(one_ok)
            errors.update(one_err)
        return ok, errors
    errors = {s: _data_error(s, reason) for s, reason in result.dropped.items()}
    if warnings is not None:
        warnings.update({s: f"data: {w}" for s, w in result.warnings.items()
                         if s in symbols and s not in errors})  # fmt: skip
    for symbol in symbols:
        if symbol not in result.prepared and symbol not in errors:
            errors[symbol] = _data_error(symbol, f"no rows for {symbol!r} in {spec.dataset.uri}")
    return {s: f for s, f in result.prepared.items() if s in symbols}, errors


def _data_error(symbol: str, cause: BaseException | str) -> str:
    text = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
    return f"data: {text}" if symbol in text else f"data: {symbol}: {text}"


@dataclass
class ChunkReport:
    """The last value a chunk task returns: what the driver needs to count and report."""

    symbols: list[str]
    data_errors: dict[str, str] = field(default_factory=dict)  # symbol -> data error
    data_warnings: dict[str, str] = field(default_factory=dict)  # symbol -> data warning
    unit_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # unit_id -> rows
    ensemble_rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # symbol ->
    ensemble_errors: dict[str, str] = field(default_factory=dict)


@ray.remote(num_cpus=1, max_retries=2)
def chunk_task(
    spec_dict: dict[str, Any],
    symbols: list[str],
    unit_dicts: list[dict[str, Any]],
    ensemble_symbols: list[str],
    storage_uri: str,
    job_id: str,
    relay: Any = None,
) -> tuple[Any, ...]:
    """Prepare a chunk of symbols from one read, then fit, score and store their linear
    units (a Ray CPU task); returns len(symbols) + 1 values: each symbol's folds (None if
    its data failed), then a `ChunkReport`.

    A linear fit on daily bars takes milliseconds, so one task per chunk of symbols keeps
    Ray's per-task cost and the object store's traffic small next to the work; each unit
    still has its own artifacts, status and error. The folds go back through the object
    store once, for the job's deep runs. For `ensemble_symbols` (every unit of the symbol
    is linear and in this task) the ensembles are computed here from the predictions in
    memory instead of being read back from storage by a later task.

    `relay` (a `ProgressRelay`), when given, hears the task's progress one symbol at a time
    (`{"type": "chunk", "start": [unit ids], "ended": {unit id: error or None}}`): its
    first symbol's units start with the task (the chunk's one read and preparation are
    their first step), each symbol's units end together as the next symbol's start; the
    driver counts them from there (`ChunkProgress`), not at submission nor at the chunk's
    end (a 505-symbol job said "1515 running" on 2 CPUs and moved ~190 units at a time)."""
    spec, storage = JobSpec.from_dict(spec_dict), JobStorage(storage_uri, job_id)
    by_symbol: dict[str, list[Unit]] = {}
    for d in unit_dicts:
        unit = Unit(**d)
        by_symbol.setdefault(unit.symbol, []).append(unit)
    steps = list(by_symbol.values())
    if steps:
        _push(relay, {"type": "chunk", "start": [u.unit_id for u in steps[0]]})
    warnings: dict[str, str] = {}
    prepared, errors = prepare_many(spec, symbols, warnings)
    report = ChunkReport(symbols=list(symbols), data_errors=errors, data_warnings=warnings)
    predictions: dict[tuple[str, int], dict[str, Any]] = {}
    outage: dict[str, bool] = {}
    for i, units in enumerate(steps):
        for unit in units:
            if unit.symbol in errors:
                rows = fail_unit(unit, spec.target.horizons, errors[unit.symbol], storage)
            else:
                sink = predictions.setdefault((unit.symbol, unit.fold), {})
                rows = _run_linear_unit(unit, prepared[unit.symbol][unit.fold], spec, storage,
                                        sink, outage)
            report.unit_rows[unit.unit_id] = rows
        nxt = steps[i + 1] if i + 1 < len(steps) else []
        _push(relay, {"type": "chunk", "ended": {u.unit_id: row_error(report.unit_rows[
            u.unit_id]) for u in units}, "start": [u.unit_id for u in nxt]})
    for symbol in ensemble_symbols:
        if symbol in errors:
            continue
        try:
            report.ensemble_rows[symbol] = [
                row for fold in prepared[symbol]
                for row in ensemble_rows_from_predictions(
                    symbol, fold, predictions.get((symbol, fold.fold), {}))
            ]  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - ensembles are extra rows; reported
            report.ensemble_errors[symbol] = f"{type(exc).__name__}: {exc}"
    return (*(prepared.get(s) for s in symbols), report)


# A storage outage longer than JobStorage's own retries (~8 s): the linear unit is fitted
# again after these waits, as a deep run is (deep_runs.RUN_RETRY_WAITS_S), instead of
# failing the unit (and the job) on an outage the deep units ride out. Once a unit of the
# chunk has waited them all out, the chunk's later units fail without waiting again: a
# storage that stays down fails the job (for a resume) in minutes, not hours.
UNIT_RETRY_WAITS_S = (10.0, 30.0)


def _run_linear_unit(unit: Unit, prepared: PreparedSymbol, spec: JobSpec,
                     storage: JobStorage, sink: dict[str, Any],
                     outage: dict[str, bool]) -> list[dict[str, Any]]:
    """`run_unit`, fitted again on a storage outage (`StorageError.outage`); `outage`
    holds the chunk's "gave up" flag."""
    import time

    from ray_jobs.storage import StorageError

    waits = () if outage.get("gave_up") else UNIT_RETRY_WAITS_S
    for retry, wait_s in enumerate((0.0, *waits)):
        time.sleep(wait_s)
        try:
            return run_unit(unit, prepared, spec, storage, predictions=sink,
                            propagate=(StorageError,))
        except StorageError as exc:
            if not exc.outage or retry == len(waits):
                if exc.outage:
                    outage["gave_up"] = True
                return fail_unit(unit, spec.target.horizons, exc, storage)
            print(f"quantray: unit {unit.unit_id}: the storage is still failing ({exc}); "
                  f"fitting it again in {waits[retry]:.0f}s (retry {retry + 1} of "
                  f"{len(waits)})", flush=True)  # to the driver's log
    raise AssertionError("unreachable")


def row_error(rows: list[dict[str, Any]]) -> str | None:
    """A unit's error from its result rows (None: done); no rows at all is an error."""
    if not rows:
        return "no result"
    return next((r["error"] for r in rows if r.get("error")), None)


def _push(relay: Any, event: dict[str, Any]) -> None:
    """Send a progress event without waiting (progress only: a relay gone is ignored)."""
    if relay is None:
        return
    try:
        relay.push.remote(event)
    except Exception:  # noqa: BLE001 - the chunk's results do not depend on it
        pass


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


# Training workers and chunk tasks push unit events here; the driver drains them into its
# tracker. The class lives in ray_jobs.progress, whose imports are the standard library's
# only, so the actor's worker starts without loading pandas and the data layer.
ProgressRelay = ray.remote(num_cpus=0)(EventRelay)


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


class ChunkProgress:
    """The driver's side of the chunk tasks' progress: replays their relayed events
    (`chunk_task`) on the tracker, and counts each unit's end once, from its event or from
    its chunk's report, whichever the driver sees first. The relay is never waited for
    (its actor may still be starting on a busy node while the chunks run): one drain is
    in flight at a time and applied when it has answered. A relay that fails is logged
    once; the chunks' reports count the rest."""

    def __init__(self, tracker: Any, relay: Any, *, log: Any = None) -> None:
        self.tracker, self.relay, self.log = tracker, relay, log
        self.ended: dict[str, str | None] = {}  # unit id -> its error (None: done)
        self.started: set[str] = set()
        self._drain: Any = None  # the drain call in flight

    def poll(self) -> None:
        """Apply the relay's events if its latest drain has answered (late ones, of units
        ended, are dropped), and ask for the next ones."""
        if self.relay is None:
            return
        if self._drain is not None:
            ready, _ = ray.wait([self._drain], timeout=0)
            if not ready:
                return
            try:
                events = ray.get(self._drain)
            except ray.exceptions.RayError as exc:
                self.relay = self._drain = None
                if self.log is not None:
                    self.log.warning("the chunk tasks' progress relay failed (%s): their "
                                     "units are counted as their chunks end", exc)
                return
            for e in events:
                self.apply(e)
        self._drain = self.relay.drain.remote()

    def apply(self, event: dict[str, Any]) -> None:
        if event.get("type") != "chunk":
            return
        for unit_id, error in (event.get("ended") or {}).items():
            self.end(unit_id, error)
        for unit_id in event.get("start") or ():
            self.start(unit_id)

    def start(self, unit_id: str) -> None:
        if unit_id not in self.ended and unit_id not in self.started:
            self.started.add(unit_id)
            self.tracker.unit_started(unit_id)

    def end(self, unit_id: str, error: str | None) -> None:
        """`unit_id` ended (`error` None: done), counted once; a done unit the tracker never
        saw start (its start event still in flight) starts now, to count in the rate (a
        failed one stays out of it: its data failed, it did not run). A unit
        counted done whose chunk's report fails it (the task died past its retries) is
        moved to the failed."""
        if unit_id in self.ended:
            if error is not None and self.ended[unit_id] is None:
                self.ended[unit_id] = error
                self.tracker.done_unit_failed(unit_id, error)
            return
        if error is None:
            self.start(unit_id)
        self.ended[unit_id] = error
        if error is None:
            self.tracker.unit_done(unit_id)
        else:
            self.tracker.unit_failed(unit_id, error)
