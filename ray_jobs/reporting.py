"""The end of a job: leaderboard (.parquet + .csv), summary.json and plots, built from the
units' stored statuses, so a resumed job reports on every unit, old and new."""

from __future__ import annotations

import logging
from typing import Any

from ray_jobs.planner import Plan
from ray_jobs.plots import comparison_plot, folds_plot, heatmap_plot, learning_curves_plot
from ray_jobs.progress import ProgressTracker
from ray_jobs.results import (
    format_summary_table,
    leaderboard_frame,
    summarize,
    to_csv_bytes,
    to_parquet_bytes,
)
from ray_jobs.spec import LINEAR_MODELS, JobSpec
from ray_jobs.storage import JobStorage, StorageError

log = logging.getLogger("quantray.report")


def r2_models(spec: JobSpec) -> set[str]:
    """The models whose out-of-sample R² the comparison plot draws: those that forecast
    returns (linear models always; deep models too with `target.kind: return`)."""
    if spec.target.kind == "return":
        return set(LINEAR_MODELS) | set(spec.deep_models)
    return set(LINEAR_MODELS)


def _check_job_files_are_there(storage: JobStorage, missing: int) -> None:
    """Units without a status, because the job's files were deleted while it ran (its
    bucket or prefix removed or replaced, e.g. an S3 endpoint restarted without its
    data: a missing bucket lists as empty) -> a StorageError naming the URI."""
    if storage.exists("spec.json"):
        return
    raise StorageError(
        "read the unit statuses under", storage.uri_of(""),
        f"{missing} units have no status and the job's own spec.json is gone too: its "
        "files were deleted, or its bucket was removed or replaced, while it ran",
        "Check QUANTRAY_STORAGE_URI's bucket and prefix; once the storage holds the job's "
        "files, resume the job (a job whose files are lost must be submitted again)")


def _lost_statuses(spec: JobSpec, plan: Plan, storage: JobStorage, missing: list[str],
                   prep_errors: dict[str, str], rows: list[dict[str, Any]],
                   tracker: ProgressTracker | None) -> dict[str, str]:
    """Units that ended in this run without a readable status (the worker that ran them
    could not write the job's storage: no credentials there, or a fault) fail with what is
    known, their error rows added to `rows`, instead of the whole report: unit_id -> error.
    A resume runs them again. With the run's `tracker`, a unit it never saw end is a bug,
    said as such, and one it counted done is counted failed (progress.json agrees)."""
    from ray_jobs.units import fail_unit

    if tracker is not None:
        unseen = [u for u in missing if tracker.outcome(u) is None]
        if unseen:
            raise RuntimeError(f"{len(unseen)} units neither ended in this run nor have a "
                               f"status, e.g. {unseen[:3]}")
    by_id = {u.unit_id: u for u in plan.units}
    lost: dict[str, str] = {}
    for unit_id in missing:
        unit = by_id[unit_id]
        cause = prep_errors.get(unit.symbol) or (
            "the Ray worker that ran it could not write the job's storage (its credentials, "
            "or a storage fault: the driver's log has the worker's warning)")
        lost[unit_id] = (f"no readable status was stored for this unit under "
                         f"{storage.uri_of('status')}: {cause}; resume the job to run it again")
        rows += fail_unit(unit, spec.target.horizons, lost[unit_id], None)  # rows only
        if tracker is not None and tracker.outcome(unit_id) == "done":
            tracker.done_unit_failed(unit_id, lost[unit_id])
    log.warning("%d units ended without a readable status, e.g. %s: %s", len(lost),
                missing[0], lost[missing[0]])
    return lost


def write_results(
    spec: JobSpec,
    plan: Plan,
    storage: JobStorage,
    ensemble_rows: list[dict[str, Any]],
    prep_errors: dict[str, str],
    *,
    elapsed_s: float,
    partial: bool = False,
    data_warnings: dict[str, str] | None = None,
    ensemble_errors: dict[str, str] | None = None,
    tracker: ProgressTracker | None = None,
) -> dict[str, Any]:
    """`partial`: a stopped job's report (a cancel, or its Ray head going down: the driver
    gets SIGTERM either way and cannot tell them apart, so `summary["stopped"]` says only
    that), over the units that ended; the others are counted in `summary["not_finished"]`
    (with partial=False a unit without a readable status is failed with why). `data_warnings`:
    symbol -> warning about a kept symbol's data (e.g. a long gap between bars), in
    `summary["data_warnings"]` beside `data_errors`. `ensemble_errors`: symbol -> why its
    ensembles are missing (`summary["ensemble_errors"]`). `tracker`: the run's progress,
    which tells a lost status from a unit that never ran (see `_lost_statuses`)."""
    from models.metrics import LEADERBOARD_COLUMNS

    statuses = storage.unit_statuses()
    planned = {u.unit_id for u in plan.units}  # once: built per failed unit, it took 0.1 s
    # each (a 505-symbol, 8-fold job: 34 of the report's 48 s for its 456 failed units)
    rows: list[dict[str, Any]] = []
    histories: dict[str, list[list[dict[str, Any]]]] = {}
    missing = []
    for unit in plan.units:
        status = statuses.get(unit.unit_id)
        if status is None:
            missing.append(unit.unit_id)
            continue
        rows += status.get("rows", [])
        if status.get("state") == "done" and status.get("history") and unit.kind == "deep":
            histories.setdefault(unit.model, []).append(status["history"])
    lost: dict[str, str] = {}
    if missing and not partial:  # every unit ended: the files went, or a status was lost
        _check_job_files_are_there(storage, len(missing))
        lost = _lost_statuses(spec, plan, storage, missing, prep_errors, rows, tracker)
        missing = []
    rows += ensemble_rows
    frame = leaderboard_frame(rows, LEADERBOARD_COLUMNS)
    storage.write_bytes("results/leaderboard.parquet", to_parquet_bytes(frame))
    storage.write_bytes("results/leaderboard.csv", to_csv_bytes(frame))

    summary = summarize(frame)
    summary.update(
        job_id=storage.job_id, name=spec.name, elapsed_s=round(elapsed_s, 2),
        units=len(plan.units), units_reported=len(plan.units) - len(missing),
        not_finished=len(missing), stopped=partial, plan=plan.summary(),
        data_errors=prep_errors, data_warnings=dict(sorted((data_warnings or {}).items())),
        ensemble_errors=dict(sorted((ensemble_errors or {}).items())),
        failed_units=sorted([
            *({"unit_id": u, "error": s.get("error", "")}
              for u, s in statuses.items() if s.get("state") == "failed" and u in planned),
            *({"unit_id": u, "error": e} for u, e in lost.items()),
        ], key=lambda f: f["unit_id"]),
    )  # fmt: skip
    tuned = {m: storage.read_json(f"tune/{m}/best.json") for m in spec.deep_models
             if spec.tune.num_samples and storage.exists(f"tune/{m}/best.json")}  # fmt: skip
    if tuned:  # the searched configs its units were refit with (on train+val: test only)
        summary["tuned"] = tuned
    storage.write_json("results/summary.json", summary)
    plots = {
        "comparison.png": lambda: comparison_plot(frame, r2_models(spec)),
        "heatmap_macro_f1.png": lambda: heatmap_plot(frame),
        "learning_curves.png": lambda: learning_curves_plot(histories, set(tuned)),
        "folds.png": lambda: folds_plot(frame),
    }
    for name, render in plots.items():
        if name == "learning_curves.png" and not histories:
            continue
        if name == "folds.png" and spec.split.folds < 2:
            continue
        storage.write_bytes(f"results/plots/{name}", render())
    log.info("results written:\n%s", format_summary_table(summary))
    return summary
