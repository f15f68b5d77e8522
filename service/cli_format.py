"""Text rendering for the HTTP CLI: progress bar, tables, durations. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from data.wording import counted

MESSAGE_SHOWN = 300  # characters of a symbol's data error or warning in the summary

FINAL_STATUSES = ("succeeded", "failed", "cancelled", "interrupted")
# `--wait`'s line fits the terminal (it is redrawn in place with "\r", which a line that
# wraps defeats): the phase note is cut to fit, or left out where less than NOTE_MIN fits.
# LINE_MAX where the width is unknown; LOG_LINE_MAX where lines are not redrawn (a file).
LINE_MAX = 79
LOG_LINE_MAX = 200
NOTE_MIN = 12
# the table view: each score beside its baseline and significance (csv/json: every column)
RESULT_COLUMNS = (
    "symbol", "model", "fold", "split", "horizon", "accuracy", "baseline_accuracy", "p_value",
    "macro_f1", "mcc", "r2", "ic", "rank_ic", "error",
)  # fmt: skip


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "--"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def progress_line(job: dict[str, Any], width: int = 30) -> str:
    """`[########......] 12/40 units  30%  ETA 1m05s  running` from a job status body."""
    progress = job.get("progress") or {}
    done, total = progress.get("units_done"), progress.get("units_total")
    status = job.get("status", "?")
    if not total:
        return f"[{'.' * width}] waiting for progress  {status}"
    fraction = min(1.0, (done or 0) / total)
    filled = int(round(fraction * width))
    failed = progress.get("units_failed") or 0
    failed_text = f"  {failed} failed" if failed else ""
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {done or 0}/{total} units  "
        f"{fraction:4.0%}  ETA {duration(progress.get('eta_seconds'))}{failed_text}  {status}"
    )


def phase_note(job: dict[str, Any]) -> str:
    """`tuning: lstm: 0 of 2 trials ended, 1 running`: what the job does while no unit ends
    (a Tune search, the report), from progress.json's phase (left out where it repeats the
    status: a failed job's "failed") and message (on one line); "" when it has neither."""
    progress = job.get("progress") or {}
    phase = progress.get("phase")
    message = " ".join(str(progress.get("message") or "").split())
    note = ": ".join(p for p in (phase if phase != job.get("status") else None, message) if p)
    if note and progress.get("stale"):  # an ended job's driver was cut off: not live
        note += " (its driver's last report; nothing runs now)"
    return note


def wait_line(job: dict[str, Any], max_len: int = LINE_MAX) -> str:
    """`progress_line`, then `, ` and the `phase_note` cut with "..." to fit `max_len`
    characters (left out where fewer than NOTE_MIN of it would fit)."""
    line, note = progress_line(job), phase_note(job)
    if not note:
        return line
    if len(line) + 2 + len(note) <= max_len:
        return f"{line}, {note}"
    room = max_len - len(line) - len(", ...")
    return f"{line}, {note[:room].rstrip()}..." if room >= NOTE_MIN else line


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Left-aligned text table of `columns` (floats to 4 decimals, None as '-')."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value)

    body = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(line.rstrip() for line in lines)


def job_summary(job: dict[str, Any]) -> str:
    pending = job.get("cancel_requested") and job["status"] not in FINAL_STATUSES
    cancel = "  (cancel requested)" if pending else ""
    lines = [
        f"id:        {job['id']}",
        f"name:      {job['name']}",
        f"status:    {job['status']}{cancel}",
        f"owner:     {job['owner']}",
        f"attempt:   {job['attempt']}",
        f"created:   {job['created_at']}",
        f"started:   {job.get('started_at') or '-'}",
        f"finished:  {job.get('finished_at') or '-'}",
        f"ray:       {(job.get('ray') or {}).get('submission_id') or '-'}",
    ]
    dashboard = (job.get("ray") or {}).get("dashboard_url")
    if dashboard:
        lines.append(f"dashboard: {dashboard}")
    if job.get("progress"):
        lines.append(f"progress:  {progress_line(job)}")
        if phase_note(job):
            lines.append(f"phase:     {phase_note(job)}")
        if job.get("progress_error"):  # the storage is down: that progress is an old one
            lines.append(f"stale:     {job['progress_error']}")
    elif job.get("progress_error"):  # storage down: say so rather than show nothing
        lines.append(f"progress:  unreadable: {job['progress_error']}")
    if job.get("message"):
        lines.append(f"message:   {job['message']}")
    for error in job.get("errors") or []:
        unit = error.get("unit_id") or error.get("unit") or "?"
        lines.append(f"  error: {unit}: {error.get('error', error)}")
    return "\n".join(lines)


PRESET_ORDER = ("fast", "balanced", "quality")
TRAIN_COLUMNS = ("epochs", "patience", "batch_size", "lr")  # of a preset's `train` settings


def preset_names(model: dict[str, Any]) -> list[str]:
    """A catalog model's preset names, fast -> quality first."""
    presets = model.get("presets") or {}
    names = list(presets) if isinstance(presets, dict | list) else []
    rank = {name: i for i, name in enumerate(PRESET_ORDER)}
    return sorted(map(str, names), key=lambda n: (rank.get(n, len(rank)), n))


def preset_rows(model: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per preset of a catalog model: its training budget (epochs, patience,
    batch_size, lr, where it has them), then its other settings as `key=value`."""
    presets = model.get("presets")
    if not isinstance(presets, dict):
        return [{"preset": name} for name in preset_names(model)]
    rows = []
    for name in preset_names(model):
        values = presets.get(name) or {}
        train = values.get("train") if isinstance(values.get("train"), dict) else {}
        row: dict[str, Any] = {"preset": name}
        row.update({c: train[c] for c in TRAIN_COLUMNS if c in train})
        row["settings"] = ", ".join(f"{k}={v}" for k, v in values.items() if k != "train")
        rows.append(row)
    return rows


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def summary_text(summary: dict[str, Any]) -> str:
    """summary.json as a table: the mean over symbols per model x horizon beside the
    baseline, the shares of significant tests, and the failed units if any."""
    rows = []
    for e in summary.get("models", []):
        def mean(key: str, e: dict[str, Any] = e) -> str:
            stats = e.get(key) or {}
            v, n = stats.get("mean"), stats.get("n")
            if v is None:
                return "-"
            # fewer symbols than the row's (lasso shrunk to a constant has no IC): say so
            fewer = isinstance(n, int) and isinstance(e.get("n_symbols"), int) and \
                n < e["n_symbols"]
            return f"{v:.3f} ({n})" if fewer else f"{v:.3f}"

        rows.append({"model": e["model"], "h": e["horizon"], "symbols": e["n_symbols"],
                     "accuracy": mean("accuracy"), "baseline": mean("baseline_accuracy"),
                     "macro_f1": mean("macro_f1"), "r2": mean("r2"), "ic": mean("ic"),
                     "sig<1%": _share(e.get("share_significant_1pct")),
                     "ic<1%": _share(e.get("share_ic_significant_1pct"))})
    lines = [f"summary over {summary.get('symbols')} symbols, {summary.get('split')} split "
             "(mean over symbols, with its count in brackets where fewer symbols have the "
             "metric; sig<1% = share of tests, one per symbol and fold, beating the "
             "majority-class baseline at p < 0.01; ic<1% = share whose return forecast has "
             "an IC above 0 at p < 0.01):",
             table(rows, list(rows[0]) if rows else ["model"])]
    notes = []
    failed = summary.get("failed_units") or []
    if failed:
        notes.append(f"{len(failed)} units failed, e.g. {failed[0]}")
    # symbols left out (no unit: in no table row) and data kept with a warning (a 20:1
    # split left in the prices) were in summary.json alone
    for key, what in (("data_errors", "could not be used"),
                      ("data_warnings", "kept with a data warning")):
        found = summary.get(key)
        if found and isinstance(found, dict):  # symbol -> message (an older job's may lack it)
            symbol, message = min((str(k), str(v)) for k, v in found.items())
            cut = message if len(message) <= MESSAGE_SHOWN else message[:MESSAGE_SHOWN] + "..."
            if key == "data_warnings":
                what = f"{'was' if len(found) == 1 else 'were'} {what}"
            notes.append(f"{counted(len(found), 'symbol')} {what} (each in summary.json's "
                         f"{key}: `quantray summary ID --json`), e.g. {symbol}: {cut}")
    if notes:
        lines.append("\n" + "\n".join(notes))
    return "\n".join(lines)
