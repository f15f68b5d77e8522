"""The job driver: plan, prepare each symbol once, fan out linear tasks and deep runs,
then write the leaderboard, summary, ensembles and plots.

Resumable: finished units leave a `status/{unit_id}.json` marker, the plan is stored
(`plan.json`) and reloaded, so rerunning a job id trains only what is missing and deep runs
continue from their checkpoints under the same run names.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from data.wording import counted
from ray_jobs import stop
from ray_jobs.cluster_gc import LeakSweeper, describe_holders, remove_leaked_placement_groups
from ray_jobs.placement import DeepPlacement, deep_placement
from ray_jobs.planner import Plan, Unit, estimate_deep_s
from ray_jobs.planner import plan as make_plan
from ray_jobs.plots import warm_up as warm_up_plots
from ray_jobs.progress import ProgressTracker, ProgressWriter
from ray_jobs.spec import JobSpec
from ray_jobs.storage import (
    WORKERS_HINT,
    JobStorage,
    done_ids,
    is_access_error,
    worker_access_hint,
)
from ray_jobs.tasks import (
    ChunkProgress,
    ChunkReport,
    ProgressRelay,
    chunk_task,
    ensemble_task,
    row_error,
)
from ray_jobs.units import fail_unit

log = logging.getLogger("quantray.driver")
CHUNKS_PER_CPU = 4  # chunk tasks per CPU for preparation and linear fits
LEFT_OUT_LOGGED = 20  # symbols left out of a job named in its log, at most
STALL_LOG_S = 120.0  # log what holds the cluster when no chunk task ended for this long


class JobSpecMismatch(ValueError):
    pass


class JobDataChanged(JobSpecMismatch):
    """The job's dataset is not what its first run read: its finished units were trained
    on other data, so neither skipping them nor rerunning them alone would be honest."""


class JobInputError(ValueError):
    """The job's dataset cannot be planned at all (a missing or unreadable file, columns
    that are not bars or LOB, no usable symbol), or its settings cannot run on this
    cluster: nothing is trained, progress says why."""


def cuda_only_settings(spec: JobSpec) -> list[str]:
    """The deep models' training settings that need a CUDA device (`train.device: cuda`,
    `train.amp: bf16|fp16`), as "model: train.x='v'". The API cannot refuse them (it does
    not know the cluster); on a cluster whose runs get no GPU each unit failed alone."""
    from models.registry import resolve

    out = []
    for model in spec.deep_models:
        train = resolve(model, spec.preset, spec.overrides.get(model, {})).train
        if train.device.startswith("cuda"):
            out.append(f"{model}: train.device={train.device!r}")
        if train.amp in ("bf16", "fp16"):
            out.append(f"{model}: train.amp={train.amp!r}")
    return out


def resolve_symbols(spec: JobSpec) -> tuple[list[str], dict[str, str]]:
    """The job's symbols, and those asked for but absent from the dataset (with a reason).
    With `symbols: N`, the dataset's first N; one whose file name another of them already
    takes (`BRK.B`, `BRK/B` -> `BRK_B`) is left out with that reason. Asking for more
    than the dataset holds is refused (ValueError), as the service refuses it at submit."""
    import pandas as pd

    from data.loading import list_symbols, spelling_hint
    from data.symbols import name_clashes, safe_symbol, symbol_problem
    from data.validation import padded_symbol_errors

    available = list_symbols(spec.dataset.uri, spec.dataset.kind)
    # 'AAPL' beside 'AAPL ': the plain one would train on part of its history (a Parquet
    # read selects the exact spelling), so it fails with the reason
    split = {s: f"data: {e}" for s, e in padded_symbol_errors(pd.Series(available, dtype=object),
                                                             drop_hint=False).items()}
    if isinstance(spec.dataset.symbols, int):
        if spec.dataset.symbols > len(available):
            raise ValueError(
                f"dataset.symbols: {spec.dataset.symbols} symbols requested but "
                f"{spec.dataset.uri!r} has {len(available)}: ask for at most {len(available)}")
        first_n = available[: spec.dataset.symbols]
        problems = {s: p for s in first_n if (p := symbol_problem(s))}
        problems.update({s: f"it and {first!r} both name their files {safe_symbol(s)!r}; "
                            "rename one in the data"
                         for s, first in name_clashes(
                             s for s in first_n if s not in problems).items()})  # fmt: skip
        left_out = {s: f"data: symbol {s!r} left out: {problems[s]}" for s in first_n
                    if s in problems}  # fmt: skip
        left_out.update({s: split[s] for s in first_n if s in split and s not in problems})
        _log_left_out(left_out, len(first_n))
        return [s for s in first_n if s not in left_out], left_out
    present = set(available)
    missing = {  # 'brk.b' where the file spells 'BRK.B': the hint says so, as `train`'s
        s: split.get(s) or f"symbol {s!r} is not in dataset {spec.dataset.uri}"
                           f"{spelling_hint([s], available)}"
        for s in spec.dataset.symbols if s not in present or s in split
    }
    _log_left_out(missing, len(spec.dataset.symbols))
    return list(spec.dataset.symbols), missing


def _log_left_out(left_out: dict[str, str], asked: int) -> None:
    """Name the symbols left out and why in the driver's log, LEFT_OUT_LOGGED at most (a
    job's log said only "6 symbols"; summary.json's data_errors has every one)."""
    if not left_out:
        return
    log.warning("%d of the job's %d symbols are left out (summary.json's data_errors lists "
                "each):", len(left_out), asked)
    for reason in list(left_out.values())[:LEFT_OUT_LOGGED]:
        log.warning("  %s", reason)
    if len(left_out) > LEFT_OUT_LOGGED:
        log.warning("  ... and %d more (see summary.json's data_errors)",
                    len(left_out) - LEFT_OUT_LOGGED)


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


DATASET_JSON = "dataset.json"  # the dataset's fingerprint when the job first ran


def dataset_changes(spec: JobSpec, storage: JobStorage) -> str | None:
    """Why a rerun or resume may not go on with the job's dataset as it is now (its files
    differ from the fingerprint its first run stored, and some unit finished on the data
    as it was), or None: the first run stores the fingerprint, and so does a run after a
    change when no unit had finished (a job whose every unit failed on bad data is resumed
    once the data is fixed, as the service advises). A dataset that cannot be looked at
    now is not judged here: the job reports that itself when it reads it."""
    from data.fingerprint import dataset_fingerprint, describe_changes, fingerprint_changes

    try:
        now = dataset_fingerprint(spec.dataset.uri)
    except (OSError, ValueError) as exc:
        log.warning("the dataset's fingerprint: %s", exc)
        return None
    if not storage.exists(DATASET_JSON):
        storage.write_json(DATASET_JSON, now)
        return None
    changes = fingerprint_changes(storage.read_json(DATASET_JSON), now)
    if not changes:
        return None
    what = describe_changes(changes)
    finished = len(done_ids(storage.unit_statuses()))
    if not finished:  # nothing was trained on the data as it was
        log.info("the dataset %s changed since the job first ran (%s); no unit had finished, "
                 "so the job goes on with the data as it is now", spec.dataset.uri, what)
        if storage.exists("tune"):  # a search's best config or trials on the data as it was
            log.info("its Tune searches start afresh: their results were on the data as it was")
            storage.delete_dir("tune")
        storage.write_json(DATASET_JSON, now)
        return None
    return (f"job {storage.job_id}: its dataset {spec.dataset.uri} changed since the job "
            f"first ran ({what}), so the {counted(finished, 'unit')} it finished "
            f"{'was' if finished == 1 else 'were'} trained on other data: to train on the "
            "data as it is now, start a new job "
            "(through the service: submit the spec again; with `python -m ray_jobs.run "
            "--spec`: another `name` in the spec, or --job-name); to go on with this job, "
            "put the data back as it was")


def _refused_progress(storage: JobStorage, attempt: int, message: str) -> dict[str, Any]:
    """progress.json of an attempt refused before it trained: `failed` with `message`, and
    the units the earlier attempts finished or failed (their errors listed), as they were."""
    tracker = ProgressTracker(job_id=storage.job_id, attempt=attempt)
    try:
        plan = Plan.from_dict(storage.read_json("plan.json"))
        statuses = storage.unit_statuses()
    except Exception as exc:  # noqa: BLE001 - the refusal's reason comes first
        log.warning("the earlier attempts' units are not in this progress: %s", exc)
    else:
        tracker.plan_units({u.unit_id: u.kind for u in plan.units},
                           already_done=done_ids(statuses))
        for unit in plan.units:
            status = statuses.get(unit.unit_id) or {}
            if status.get("state") == "failed":
                tracker.unit_failed(unit.unit_id, str(status.get("error") or "failed"))
    tracker.set_phase("failed", message)
    return tracker.to_dict()


def load_or_plan(spec: JobSpec, symbols: list[str], storage: JobStorage, *, slots: int) -> Plan:
    """The stored plan of a resumed job (its groups keep their run names), or a new one
    whose deep units are grouped for `slots` runs at once."""
    if storage.exists("plan.json"):
        return Plan.from_dict(storage.read_json("plan.json"))
    plan = make_plan(spec, symbols, slots=slots)
    storage.write_json("plan.json", plan.to_dict())
    return plan


def chunk_symbols(symbols: list[str], cpus: float) -> list[list[str]]:
    """Consecutive chunks of `symbols`, about CHUNKS_PER_CPU per CPU of the cluster: few
    enough that Ray's per-task cost stays small, enough that the CPUs share the work
    evenly (the last chunk to finish waits for nothing bigger than itself)."""
    if not symbols:
        return []
    n_chunks = max(1, min(len(symbols), int(max(cpus, 1) * CHUNKS_PER_CPU)))
    size = math.ceil(len(symbols) / n_chunks)
    return [symbols[i : i + size] for i in range(0, len(symbols), size)]


def _prepare_and_fit_linear(
    spec: JobSpec, plan: Plan, todo: Plan, symbols: list[str], storage: JobStorage,
    tracker: ProgressTracker, warnings: dict[str, str],
) -> tuple[dict[str, Any], dict[str, str], dict[str, list[dict[str, Any]]]]:
    """One chunk task per group of symbols: prepare them, fit their pending linear units.
    Returns (symbol -> object ref of its folds, for the deep runs; symbol -> data error;
    symbol -> ensemble rows computed in the tasks); `warnings` receives symbol -> data
    warning (a kept symbol with suspect data, e.g. a long gap between bars)."""
    prepared, pending, progress = _dispatch_chunks(spec, plan, todo, symbols, storage, tracker)
    errors, ensembles = _collect_chunks(pending, spec, storage, progress, warnings)
    for symbol in errors:
        prepared.pop(symbol, None)
    return prepared, errors, ensembles


def _dispatch_chunks(
    spec: JobSpec, plan: Plan, todo: Plan, symbols: list[str], storage: JobStorage,
    tracker: ProgressTracker,
) -> tuple[dict[str, Any], dict[Any, tuple[list[str], list[Unit]]], ChunkProgress]:
    """Submit the chunk tasks: (symbol -> ref of its folds, report ref -> (chunk, units),
    their progress). A unit is counted running when its task reaches its symbol, as the
    task reports through a relay on the driver's node, not at submission: every unit of
    a 505-symbol job was "running" at once on 2 CPUs."""
    spec_dict = spec.to_dict()
    todo_linear: dict[str, list[Unit]] = {}
    for unit in todo.linear_units:
        todo_linear.setdefault(unit.symbol, []).append(unit)
    planned: dict[str, set[str]] = {}
    for unit in plan.units:
        planned.setdefault(unit.symbol, set()).add(unit.unit_id)
    prepared: dict[str, Any] = {}
    pending: dict[Any, tuple[list[str], list[Unit]]] = {}
    relay = ProgressRelay.options(  # on the driver's node, as the deep runs' relay
        scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)).remote() if todo_linear else None
    for chunk in chunk_symbols(symbols, ray.cluster_resources().get("CPU", 1)):
        units = [u for s in chunk for u in todo_linear.get(s, [])]
        # ensembles in the task only where it fits every unit of the symbol (all linear)
        ensemble_here = [
            s for s in chunk
            if len(todo_linear.get(s, [])) >= 2
            and {u.unit_id for u in todo_linear[s]} == planned.get(s, set())
        ]  # fmt: skip
        refs = chunk_task.options(num_returns=len(chunk) + 1).remote(
            spec_dict, chunk, [u.to_dict() for u in units], ensemble_here,
            storage.storage_uri, storage.job_id, relay if units else None,
        )  # fmt: skip
        prepared.update(zip(chunk, refs[:-1], strict=True))
        pending[refs[-1]] = (chunk, units)
    return prepared, pending, ChunkProgress(tracker, relay, log=log)


def _collect_chunks(
    pending: dict[Any, tuple[list[str], list[Unit]]], spec: JobSpec, storage: JobStorage,
    progress: ChunkProgress, warnings: dict[str, str],
) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]]]:
    """Count the chunks' units as their tasks relay them (a symbol at a time), and the rest
    as their reports arrive: (symbol -> data error, symbol -> ensemble rows); the data
    warnings go into `warnings` and the log."""
    errors: dict[str, str] = {}
    ensembles: dict[str, list[dict[str, Any]]] = {}
    sweep = LeakSweeper()
    last_news = time.monotonic()
    while pending:
        stop.check_stop()
        sweep()  # a group a stopped job created after this job's first look would starve it
        # a timeout, so a stop signal is handled within a second, not after a chunk
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        progress.poll()
        if not ready:
            if time.monotonic() - last_news > STALL_LOG_S:  # say why, in the job's log
                log.warning("no chunk task has finished for %.0f s (%d pending): %s",
                            time.monotonic() - last_news, len(pending), describe_holders())
                last_news = time.monotonic()
            continue
        last_news = time.monotonic()
        chunk, units = pending.pop(ready[0])
        try:
            report: ChunkReport = ray.get(ready[0])
        except Exception as exc:  # the task died past its retries: its symbols fail alone
            stop.check_stop()  # not a failure: a stop request that surfaced here
            log.warning("a chunk task failed: %s", exc)
            report = _failed_chunk(chunk, units, exc, spec, storage)
        errors.update({s: worker_access_hint(e) for s, e in report.data_errors.items()})
        ensembles.update(report.ensemble_rows)
        for symbol, error in report.ensemble_errors.items():
            log.warning("ensemble of %s failed: %s", symbol, error)
        for unit in units:  # those whose end the relay has not told yet
            progress.end(unit.unit_id, row_error(report.unit_rows.get(unit.unit_id, [])))
        for symbol, error in report.data_errors.items():
            log.warning("preparing %s failed: %s", symbol, error)
        for symbol, warning in report.data_warnings.items():
            log.warning("data warning for %s (kept): %s", symbol, warning)
        warnings.update(report.data_warnings)
    return errors, ensembles


def _failed_chunk(chunk: list[str], units: list[Unit], exc: BaseException, spec: JobSpec,
                  storage: JobStorage) -> ChunkReport:
    """The report of a chunk task that died: every symbol and unit fails with its error."""
    error = f"worker: {type(exc).__name__}: {exc}"
    report = ChunkReport(symbols=chunk, data_errors=dict.fromkeys(chunk, error))
    report.unit_rows = {u.unit_id: fail_unit(u, spec.target.horizons, error, storage)
                        for u in units}  # fmt: skip
    return report


def run_job(spec: JobSpec, storage: JobStorage, *, progress_interval_s: float = 2.0,
            attempt: int = 0) -> dict:
    """Run (or resume) the job; returns the final summary dict. On `JobCancelled` (a stop
    request) it writes the finished units' leaderboard, summary and plots, then re-raises,
    still connected to Ray: the caller ends the job's remaining Ray work by exiting (as the
    entrypoint does) or by `stop.disconnect` once `stop.threads_in_ray()` is empty.
    `attempt` (the service's count of resumes) is stamped on progress.json."""
    t0 = time.time()
    store_spec(spec, storage)
    changed = dataset_changes(spec, storage)
    finished = finished_summary(storage)
    if changed is not None:  # said by the entrypoint, which exits with status 2
        if finished is None:  # the service reads this attempt's reason from progress.json
            storage.write_progress(_refused_progress(storage, attempt, changed))
        raise JobDataChanged(changed)
    if finished is not None:  # a resume of a job that succeeded: nothing to train or write
        return _already_finished(storage, *finished, attempt)
    # A job stopped mid-training may have leaked a Train placement group that would starve
    # this job's deep runs for good (see ray_jobs/cluster_gc.py).
    remove_leaked_placement_groups()
    tracker = ProgressTracker(job_id=storage.job_id, attempt=attempt)
    known = _Known()
    stop.reset()
    with ProgressWriter(tracker, storage, interval_s=progress_interval_s) as writer:
        try:
            return _run(spec, storage, tracker, known, t0)
        except BaseException as raised:
            exc = stop.as_cancel(raised)
            if exc is None:
                raise
            if exc is not raised:
                log.warning("the stop request surfaced as %s: %s", type(raised).__name__, raised)
            tracker.set_phase("stopped", f"{exc}: {stop.WRITING_RESULTS}")
            try:  # now: the service tells a driver killed from here on by this phase
                writer.write_now()
            except Exception as write_exc:  # noqa: BLE001 - the results come first
                log.warning("progress.json on stop: %s", write_exc)
            # The results (read from storage, they need no Ray), with Ray still connected:
            # a ray.shutdown() here while the deep-runs thread is inside a Ray call ended
            # the driver with SIGSEGV or status 1 (the core worker's quick exit), once in a
            # fresh-clone CI each. The process's exit, right after (`run.exit_promptly`),
            # disconnects it, and the cluster then ends this job's tasks and actors (Train
            # workers included) as for any driver that exits.
            reported = _write_partial(spec, storage, known, time.time() - t0)
            tracker.set_phase("stopped", f"{exc}: {stop.RESULTS_WRITTEN}")
            # Units that ended while the results were being written (a probe saw two end a
            # second after the summary, which then said 7 of 9 where storage had 9): once
            # more, so that the results count every unit stored as ended by then.
            statuses = _stored_statuses(storage)
            if reported is not None and _ended_units(statuses, known) > reported:
                try:
                    _write_partial(spec, storage, known, time.time() - t0)
                    statuses = _stored_statuses(storage) or statuses
                except Exception as rewrite_exc:  # noqa: BLE001 - the first results stand
                    log.warning("rewriting the results after the stop: %s", rewrite_exc)
            # ... and in the last progress.json (written on the way out), which counted
            # only the units whose end reached the driver before the stop: 8 done where
            # the summary and storage said 9
            _count_stored_ends(tracker, statuses, known)
            raise exc from (None if exc is raised else raised)


def unshared_nodes(storage: JobStorage, nodes: list[str] | None = None,
                   read_on: Callable[[str, str], str] | None = None) -> dict[str, str]:
    """{node id: what it read} for the alive nodes that do not see this job's `file://`
    storage as the driver does: a marker written here, read back on each node by a
    zero-CPU task (`read_on(node, uri)`). A directory that is not shared (each node's own
    /tmp) let a job train for minutes and end with "N units have no status"; S3 and a
    single-node cluster need no look."""
    if not storage.uri.startswith("file:"):
        return {}
    if nodes is None:
        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    here = ray.get_runtime_context().get_node_id()
    others = [n for n in nodes if n != here]
    if not others:
        return {}
    token = f"{storage.job_id} {time.time_ns()}"
    storage.write_bytes(".node-check", token.encode())
    read_on = read_on or _read_on_node
    seen = {node: read_on(node, storage.uri_of(".node-check")) for node in others}
    return {node: text for node, text in seen.items() if text != token}


def _read_on_node(node: str, uri: str) -> str:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def read(u: str) -> str:
        from data.storage import read_bytes

        try:
            return read_bytes(u).decode(errors="replace")
        except OSError as exc:
            return f"cannot read it: {exc}"

    strategy = NodeAffinitySchedulingStrategy(node, soft=False)
    return ray.get(read.options(scheduling_strategy=strategy).remote(uri), timeout=120)


def finished_summary(storage: JobStorage) -> tuple[Plan, dict] | None:
    """The stored plan and summary of a job that already succeeded (progress.json
    `succeeded`, its report complete and every planned unit done), else None. Anything
    unreadable is None: the job then runs as usual (and reports what is wrong)."""
    try:
        if not all(storage.exists(rel) for rel in ("plan.json", "progress.json",
                                                   "results/summary.json")):
            return None
        if storage.read_progress().get("phase") != "succeeded":
            return None
        plan = Plan.from_dict(storage.read_json("plan.json"))
        summary = storage.read_json("results/summary.json")
        statuses = storage.unit_statuses()
    except Exception:  # noqa: BLE001 - not provably finished: run the job as usual
        return None
    # "cancelled": what summaries written before "stopped" called it
    if (summary.get("stopped") or summary.get("cancelled") or summary.get("not_finished")
            or summary.get("failed_units") or summary.get("units") != len(plan.units)):
        return None
    if any(statuses.get(u.unit_id, {}).get("state") != "done" for u in plan.units):
        return None
    return plan, summary


def _already_finished(storage: JobStorage, plan: Plan, summary: dict, attempt: int) -> dict:
    """Rerunning a job that succeeded: say so, stamp this attempt on progress.json (the
    service reads the attempt it started), retrain and rewrite nothing."""
    tracker = ProgressTracker(job_id=storage.job_id, attempt=attempt)
    tracker.plan_units({u.unit_id: u.kind for u in plan.units},
                       already_done={u.unit_id for u in plan.units})
    message = (f"job {storage.job_id} already finished: all {len(plan.units)} units done and "
               "its results written; nothing to do")
    tracker.set_phase("succeeded", message)
    storage.write_progress(tracker.to_dict())
    log.info("%s (results at %s)", message, storage.uri_of("results"))
    return summary


@dataclass
class _Known:
    """What the job has found out so far, for the partial results of a cancelled job."""

    plan: Plan | None = None
    prep_errors: dict[str, str] | None = None
    ensembles: dict[str, list[dict[str, Any]]] | None = None
    data_warnings: dict[str, str] = field(default_factory=dict)
    done_before: set[str] = field(default_factory=set)  # units an earlier attempt finished


def _run(spec: JobSpec, storage: JobStorage, tracker: ProgressTracker, known: _Known,
         t0: float) -> dict:
    from ray_jobs.deep_runs import run_deep_groups
    from ray_jobs.reporting import write_results

    if unshared := unshared_nodes(storage):
        message = (f"the job's storage {storage.uri} is not shared by every node: "
                   f"{len(unshared)} node(s) do not see what the driver writes there (node "
                   f"{min(unshared)[:12]}: {unshared[min(unshared)][:200]!r}); use s3://... "
                   "or a directory every node mounts (QUANTRAY_STORAGE_URI, --storage)")
        log.error(message)
        tracker.set_phase("failed", message)
        raise JobInputError(message)
    try:
        symbols, missing = resolve_symbols(spec)
    except (OSError, ValueError) as exc:
        raise _input_error(tracker, exc) from exc
    placement = deep_placement(spec, ray.cluster_resources(),
                               [s for s in symbols if s not in missing])
    if spec.deep_models:
        log.info("deep runs: GPU share %g, %d at once (%s)", placement.gpu, placement.slots,
                 placement.reason)
        if placement.gpu == 0 and (needs := cuda_only_settings(spec)):
            message = (f"the deep runs get no GPU ({placement.reason}), and "
                       f"{'; '.join(needs)} need(s) one: set them to 'auto' (or device 'cpu', "
                       "amp 'off'), or run the job on a cluster with GPU nodes")
            log.error(message)
            tracker.set_phase("failed", message)
            raise JobInputError(message)
    try:
        plan = known.plan = load_or_plan(spec, symbols, storage, slots=placement.slots)
    except ValueError as exc:  # no symbol to plan; unit ids that clash
        raise _input_error(tracker, exc) from exc
    statuses = storage.unit_statuses()
    done = known.done_before = done_ids(statuses)
    todo = plan.pending(done)
    tracker.plan_units({u.unit_id: u.kind for u in plan.units}, already_done=done,
                       prior_s=_deep_prior(spec, todo, placement.slots))
    log.info("plan: %s; %d units already done", plan.describe(),
             len(done & {u.unit_id for u in plan.units}))

    tracker.set_phase("preparing", f"{len(symbols)} symbols, with their linear units")
    # the report's imports (scipy.special with the metrics) and matplotlib's first draw,
    # in a background thread while the job trains
    warm_up_plots("models.metrics")
    prepared, prep_errors, done_ensembles = _prepare_and_fit_linear(
        spec, plan, todo, [s for s in symbols if s not in missing], storage, tracker,
        known.data_warnings)
    prep_errors.update(missing)
    known.prep_errors, known.ensembles = prep_errors, done_ensembles
    data_failed = set()
    for unit in todo.units:
        failed_here = unit.kind == "deep" or unit.symbol in missing
        if unit.symbol in prep_errors and failed_here:
            fail_unit(unit, spec.target.horizons, prep_errors[unit.symbol], storage)
            tracker.unit_failed(unit.unit_id, prep_errors[unit.symbol])
            data_failed.add(unit.unit_id)
    todo = todo.pending(data_failed)  # each unit ends once: failed here, not searched
    if not prepared and not any(e.startswith("worker:") for e in prep_errors.values()):
        # no usable symbol is bad input (exit status 2), not a job with failed units; its
        # units are failed and summary.json lists every symbol's reason
        write_results(spec, plan, storage, [], prep_errors, elapsed_s=time.time() - t0,
                      data_warnings=known.data_warnings, tracker=tracker)
        first = min(prep_errors)
        raise _input_error(tracker, ValueError(
            f"no usable symbol: all {len(prep_errors)} symbols failed their data checks "
            f"(each reason is in summary.json's data_errors), e.g. {prep_errors[first]}"))

    refit, search_failed = _tune(spec, plan, todo, prepared, storage, tracker, placement)
    todo = todo.pending(search_failed)  # failed with their model's search: not trained
    tracker.set_phase("training", f"{len(todo.deep_units)} deep units to train")
    tracker.kind_started("deep")
    run_deep_groups(todo, prepared, spec, storage, tracker, placement, refit).wait()

    stop.check_stop()
    stop.defer_stops()  # every unit has ended: a stop request now lets the report finish
    tracker.set_phase("reporting", "leaderboard, ensembles, plots")
    ensemble_rows = [r for rows in done_ensembles.values() for r in rows]
    more, ensemble_errors = _ensembles(plan, prepared, storage, skip=set(done_ensembles))
    ensemble_rows += more
    summary = write_results(spec, plan, storage, ensemble_rows, prep_errors,
                            elapsed_s=time.time() - t0, data_warnings=known.data_warnings,
                            ensemble_errors=ensemble_errors, tracker=tracker)
    failed = summary["failed_units"]
    message = f"{len(failed)} failed units" if failed else "all units done"
    if ensemble_errors:  # extra rows, not units: the job's status does not change
        message += (f"; the ensembles of {len(ensemble_errors)} symbol(s) failed "
                    "(summary.json's ensemble_errors)")
    tracker.set_phase("failed" if failed else "succeeded", message)
    return summary


def _input_error(tracker: ProgressTracker, exc: BaseException) -> JobInputError:
    message = f"the job's dataset cannot be used: {exc}"
    if is_access_error(exc) and WORKERS_HINT not in message:  # said once
        # The server checked the dataset with its own credentials; the driver reads it
        # with those of the Ray cluster's processes, which a new user had not set.
        message += ("; the job reads its dataset with the credentials of the Ray "
                    "cluster's processes, not the server's: set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY (or a profile or an instance role) where the Ray "
                    "head and workers run, or pass them in QUANTRAY_RAY_RUNTIME_ENV's env_vars")
    log.error(message)
    tracker.set_phase("failed", message)
    return JobInputError(message)


def _deep_prior(spec: JobSpec, todo: Plan, slots: int) -> dict[str, float]:
    """The ETA's estimate for the deep units until the first of them ends."""
    if not todo.deep_groups:
        return {}
    return {"deep": estimate_deep_s(todo.deep_groups, slots, spec.preset)}


def _write_partial(spec: JobSpec, storage: JobStorage, known: _Known,
                   elapsed_s: float) -> int | None:
    """After a stop request: the leaderboard and summary of the units that ended (their
    stored statuses; ensembles already computed by the chunk tasks), then the plots;
    returns how many units they count (None: no plan yet). Further stop signals are
    ignored meanwhile (Ray follows with a SIGKILL after its grace period: the API asks for
    STOP_GRACE_S)."""
    from ray_jobs.reporting import write_results

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    if known.plan is None:
        log.info("cancelled before the plan was made: no results to write")
        return None
    rows = [r for rows in (known.ensembles or {}).values() for r in rows]
    summary = write_results(spec, known.plan, storage, rows, dict(known.prep_errors or {}),
                            elapsed_s=elapsed_s, partial=True,
                            data_warnings=known.data_warnings)
    log.info("cancelled: results written for %d of %d units", summary["units_reported"],
             len(known.plan.units))
    return int(summary["units_reported"])


def _stored_statuses(storage: JobStorage) -> dict[str, dict[str, Any]]:
    """The stored unit statuses after a stop; {} when unreadable."""
    try:
        return storage.unit_statuses()
    except Exception as exc:  # noqa: BLE001 - the results already written stand
        log.warning("re-reading the unit statuses after the stop: %s", exc)
        return {}


def _ended_units(statuses: dict[str, dict[str, Any]], known: _Known) -> int:
    """The plan's units with a stored status (done or failed)."""
    return sum(1 for u in known.plan.units if u.unit_id in statuses) if known.plan else 0


def _count_stored_ends(tracker: ProgressTracker, statuses: dict[str, dict[str, Any]],
                       known: _Known) -> None:
    """Count in `tracker` the plan's units whose stored status (done or failed) it has not
    heard of: they ended while the driver stopped. Units done before this attempt are
    counted already (`skipped_on_resume`)."""
    for unit in known.plan.units if known.plan else ():
        status = statuses.get(unit.unit_id)
        if (status is None or unit.unit_id in known.done_before
                or tracker.outcome(unit.unit_id) is not None):
            continue
        if status.get("state") == "done":
            tracker.unit_done(unit.unit_id)
        else:
            tracker.unit_failed(unit.unit_id, str(status.get("error") or "failed"))


def _tune(spec: JobSpec, plan: Plan, todo: Plan, prepared: dict[str, Any],
          storage: JobStorage, tracker: ProgressTracker, placement: DeepPlacement,
          ) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Search each deep model (tune.num_samples > 0); returns the refit overrides per model
    and the ids of the units failed here: a model whose search fails has its pending units
    failed with the search's error (and they are not trained afterwards)."""
    failed: set[str] = set()
    if not spec.tune.num_samples or not todo.deep_groups:
        return {}, failed
    from ray_jobs.tune_search import refit_overrides, search_model, search_symbols

    symbols = search_symbols(spec, [s for s in plan.symbols if s in prepared])
    refit: dict[str, dict[str, Any]] = {}
    for model in spec.deep_models:
        if not any(u.model == model for u in todo.deep_units):
            continue
        tracker.set_phase("tuning", f"{model}: {spec.tune.num_samples} trials on {len(symbols)}"
                                    f" symbol{'s' * (len(symbols) != 1)}")
        try:
            if not symbols:
                asked = spec.tune.symbols
                asked = ("all" if asked is None else f"the first {asked}"
                         if isinstance(asked, int) else ", ".join(asked))
                raise RuntimeError(
                    f"none of the search symbols ({asked}) "
                    "is among the job's prepared symbols: they are not in the job, or their "
                    "data failed (see the data errors)")
            best = search_model(model, spec, storage, {s: prepared[s] for s in symbols},
                                gpu=placement.gpu, slots=placement.slots,
                                say=lambda line: tracker.set_phase("tuning", line))
            refit[model] = refit_overrides(best)
        except Exception as exc:  # the model's units fail alone with the search's error
            stop.check_stop()  # not a failure: a stop request that surfaced here
            log.warning("tune search for %s failed: %s", model, exc)
            reason = error_reason(exc)
            for unit in todo.deep_units:
                if unit.model == model:
                    fail_unit(unit, spec.target.horizons, f"tune: {reason}", storage)
                    tracker.unit_failed(unit.unit_id, reason)
                    failed.add(unit.unit_id)
    return refit, failed


def error_reason(exc: BaseException, limit: int = 1000) -> str:
    """`exc`'s message for a unit's `error`: where it carries a formatted traceback (Tune's
    errors do), its last exception line, not the ~1.5 kB of frames before it (the full
    text is in the driver's log); at most `limit` characters."""
    text = str(exc).strip() or type(exc).__name__
    if "Traceback (most recent call last)" in text:
        lines = [line for line in text.splitlines() if line.strip()]
        text = next((line for line in reversed(lines) if not line[:1].isspace()), lines[-1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ensembles(plan: Plan, prepared: dict[str, Any], storage: JobStorage, *,
               skip: set[str]) -> tuple[list[dict], dict[str, str]]:
    """Soft-voting ensemble rows per symbol over its successfully finished units, read
    back from their stored predictions (symbols in `skip` were ensembled already), and the
    symbols whose ensembles failed, with the error (summary.json's `ensemble_errors`). A
    symbol whose task met a storage outage is tried again after 10 s, then 30 s, as a unit
    is: a 20 s outage while the job wrote its results dropped two symbols' ensembles
    from a job that still succeeded, without a word outside its log."""
    from ray_jobs.storage import StorageError
    from ray_jobs.tasks import UNIT_RETRY_WAITS_S

    statuses = storage.unit_statuses()
    by_symbol: dict[str, dict[int, dict[str, str]]] = {}
    for unit in plan.units:
        if statuses.get(unit.unit_id, {}).get("state") == "done":
            by_symbol.setdefault(unit.symbol, {}).setdefault(unit.fold, {})[unit.model] = (
                unit.rel_dir
            )
    todo = {sym: dirs for sym, dirs in by_symbol.items()
            if sym in prepared and sym not in skip and any(len(d) >= 2 for d in dirs.values())}
    rows: list[dict] = []
    errors: dict[str, str] = {}
    for wait_s in (0.0, *UNIT_RETRY_WAITS_S):
        if not todo:
            break
        if wait_s:
            if stop.requested():  # deferred (the report is being written): no time to wait,
                break  # Ray kills the driver after its stop grace, report or not
            log.warning("ensembles of %d symbol(s) met a storage outage: trying again in "
                        "%.0f s", len(todo), wait_s)
            if not stop.sleep_unless_stopped(wait_s):
                break
        refs = {sym: ensemble_task.remote(sym, prepared[sym], dirs, storage.storage_uri,
                                          storage.job_id) for sym, dirs in todo.items()}
        again: dict[str, dict[int, dict[str, str]]] = {}
        for sym, ref in refs.items():
            try:
                rows += ray.get(ref)
                errors.pop(sym, None)
            except Exception as exc:  # ensembles are extra rows: recorded, not fatal
                stop.check_stop()  # not a failure: a stop request that surfaced here
                errors[sym] = error_reason(exc)
                if isinstance(exc, StorageError) and exc.outage:
                    again[sym] = todo[sym]
        todo = again
    for sym, error in sorted(errors.items()):
        log.warning("ensemble of %s failed: %s", sym, error)
    return rows, errors
