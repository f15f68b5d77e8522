"""`quantray train`: load, validate, prepare and train models in this process.

    quantray train --data sample:sp500 --symbols AAPL,MSFT --models lstm,ridge --preset fast

Stdout carries the result only (a table, a JSON array of leaderboard rows, or CSV); the
progress bar and warnings go to stderr. Exit status: 0 when every unit trained, 1 when
some unit failed or some symbol's data was dropped (its rows carry the error), 2 on bad
input (one line naming the flag).

Only argparse and the standard library are imported at module level; data loading and
the models are imported when the command runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

OUTPUTS = ("table", "json", "csv")
TASKS = ("direction", "return")
PRESETS = ("fast", "balanced", "quality")
SPLIT_METHODS = ("holdout", "walk_forward")
MAX_SHOWN = 32  # characters of a symbol an error shows


class UsageError(ValueError):
    """Bad command-line input; the message names the flag."""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train models on one machine and print their leaderboard",
        description="Load bars, validate, prepare, train each model on each symbol in this"
        " process and print the leaderboard (val and test rows per horizon).",
    )
    p.add_argument("--data", metavar="URI", help="bars (or LOB snapshots with --kind lob): "
                   "file, file:///, s3:// or sample:sp500")
    p.add_argument("--kind", default="bars", help="bars (a date column) or lob (order-book "
                   "snapshots: a ts column) (bars)")
    p.add_argument("--symbols", metavar="A,B", help="comma-separated tickers")
    p.add_argument("--models", metavar="M1,M2", help="comma-separated model names")
    p.add_argument("--preset", default="fast", help=f"one of {', '.join(PRESETS)} (fast)")
    p.add_argument("--horizons", default="1,5,10,20", help="forecast horizons in bars")
    p.add_argument("--seq-len", metavar="N", help="window of every sequence model, unless"
                   " --overrides sets a model's seq_len; the samples of every model start"
                   " after it (default 60, as a job's features.seq_len)")
    p.add_argument("--task", default="direction", help=f"one of {', '.join(TASKS)}")
    p.add_argument("--split", default="holdout", help=f"one of {', '.join(SPLIT_METHODS)}")
    from data.cli import add_label_split_flags  # argparse and the stdlib only

    add_label_split_flags(p)  # --threshold --n-folds --train --val --test --purge --embargo
    p.add_argument("--start", help="first date, e.g. 2014-01-01")
    p.add_argument("--end", help="last date, e.g. 2018-02-07")
    p.add_argument("--overrides", metavar="JSON",
                   help='per-model overrides, e.g. \'{"lstm": {"hidden_size": 16}}\'')
    p.add_argument("--no-ensembles", action="store_true",
                   help="skip the ensemble_equal / ensemble_f1 rows")
    p.add_argument("--output", default="table", help=f"one of {', '.join(OUTPUTS)}")
    p.add_argument("--save-dir", metavar="DIR",
                   help="save every fitted model under DIR/SYMBOL/MODEL (with walk-forward"
                        " folds DIR/SYMBOL/foldK/MODEL)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="BLAS and torch threads (default 1: daily-bar models are small, and"
                        " more threads were 5x slower on 2 cores; docs/benchmarks.md)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as exc:
        print(f"quantray train: error: {exc}", file=sys.stderr)
        return 2


def _csv_list(flag: str, value: str | None) -> list[str]:
    if not value:
        raise UsageError(f"{flag} is required, e.g. {flag} AAPL,MSFT")
    items = [v.strip() for v in value.split(",")]
    if any(not v for v in items):
        raise UsageError(f"{flag}={value!r} has an empty item; use comma-separated values, "
                         f"e.g. {flag} {','.join(v for v in items if v) or 'A,B'}")
    twice = sorted({v for v in items if items.count(v) > 1})
    if twice:
        raise UsageError(f"{flag}={value!r} lists {', '.join(twice)} twice; list each once")
    return items


def _positive_ints(flag: str, value: str) -> list[int]:
    items = _csv_list(flag, value)  # its own errors name the empty or repeated item
    try:
        out = [int(v) for v in items]
    except ValueError as exc:
        raise UsageError(f"{flag}={value!r}: use comma-separated positive integers") from exc
    if any(v < 1 for v in out):
        raise UsageError(f"{flag}={value!r}: use positive integers (comma-separated)")
    twice = sorted({v for v in out if out.count(v) > 1})
    if twice:  # "1,01"
        raise UsageError(f"{flag}={value!r} lists {', '.join(map(str, twice))} twice; list "
                         "each once")
    return out


def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise UsageError(f"{flag}={value!r}: choose one of {', '.join(allowed)}")
    return value


def _parse(args: argparse.Namespace) -> dict[str, Any]:
    """Check every flag that needs no data; returns the typed request."""
    if not args.data:
        raise UsageError("--data is required, e.g. --data sample:sp500")
    req: dict[str, Any] = {
        "symbols": _csv_list("--symbols", args.symbols),
        "models": _csv_list("--models", args.models),
        "preset": _choice("--preset", args.preset, PRESETS),
        "task": _choice("--task", args.task, TASKS),
        "split": _choice("--split", args.split, SPLIT_METHODS),
        "output": _choice("--output", args.output, OUTPUTS),
        "kind": _choice("--kind", args.kind, ("bars", "lob")),
        "horizons": tuple(_positive_ints("--horizons", args.horizons)),
        "overrides": {},
    }
    if args.save_dir:  # one folder per symbol: two that share a safe name would overwrite
        from data.symbols import name_clashes, safe_symbol, symbol_problem

        here = Path(args.save_dir)
        taken = next((p for p in (here, *here.parents) if p.exists()), None)
        if taken is not None and not taken.is_dir():  # every unit trained, then failed to save
            raise UsageError(f"--save-dir {args.save_dir}: {taken} is a file, not a directory; "
                             "give a directory (it is created if missing)")

        # a job's rule for symbols that name files: a 300-character one trained, then
        # failed to save (File name too long)
        for symbol in req["symbols"]:
            if problem := symbol_problem(symbol):
                shown = (f"{symbol[:MAX_SHOWN]!r}... ({len(symbol)} characters)"
                         if len(symbol) > MAX_SHOWN else repr(symbol))
                raise UsageError(f"--symbols: {shown} cannot name its folder in --save-dir, "
                                 f"as a job refuses it: {problem}; rename it in the data, or "
                                 "train it without --save-dir")
        try:
            clashes = name_clashes(req["symbols"])
        except ValueError as exc:
            raise UsageError(f"--symbols: {exc}") from None
        if clashes:
            s, first = next(iter(clashes.items()))
            raise UsageError(f"--symbols: {first!r} and {s!r} would both be saved under "
                             f"{safe_symbol(s)!r} in --save-dir: train them separately")
    if args.overrides:
        try:
            overrides = json.loads(args.overrides)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--overrides is not valid JSON ({exc.msg})") from exc
        if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in
                                                       overrides.values()):
            raise UsageError('--overrides: use a JSON object {"model": {"field": value}}')
        stray = sorted(set(overrides) - set(req["models"]))
        if stray:
            raise UsageError(f"--overrides names {stray}, which are not in --models")
        req["overrides"] = overrides
    from data.split_rules import DEFAULT_SEQ_LEN, MAX_SEQ_LEN, MIN_SEQ_LEN
    from models.registry import REGISTRY, get_spec, resolve

    unknown = [m for m in req["models"] if m not in REGISTRY]
    if unknown:
        raise UsageError(f"--models: unknown {unknown}; known: {', '.join(REGISTRY)}")
    # The window of every sequence model (as a job's features.seq_len, with the same
    # default), unless the model's own override names one. Every model's samples start
    # after the longest window, so linear models score the same samples as in a job.
    window = DEFAULT_SEQ_LEN
    if args.seq_len is not None:
        parsed = _positive_ints("--seq-len", args.seq_len)
        if len(parsed) != 1:
            raise UsageError(f"--seq-len={args.seq_len!r}: give one window length, e.g. 30")
        (window,) = parsed
        if not MIN_SEQ_LEN <= window <= MAX_SEQ_LEN:
            raise UsageError(f"--seq-len={args.seq_len!r}: use a window of {MIN_SEQ_LEN} to "
                             f"{MAX_SEQ_LEN} bars, as a job's features.seq_len")
    for name in req["models"]:
        own = req["overrides"].get(name, {})
        if get_spec(name).input != "sequence" and "seq_len" in own:  # it was ignored
            raise UsageError(f"--overrides: {name}.seq_len: {name} reads each bar's features "
                             "alone (no window), so seq_len does not apply to it; drop it")
        if get_spec(name).input == "sequence" and "seq_len" not in own:
            req["overrides"][name] = {**own, "seq_len": window}
    seq_lens = [window]
    for name in req["models"]:
        try:
            config = resolve(name, req["preset"], req["overrides"].get(name))
        except ValueError as exc:
            raise UsageError(f"--overrides: {exc}") from exc
        if get_spec(name).input != "sequence":
            continue  # a tabular model reads the last bar: its preset's seq_len is unused
        seq_lens.append(config.seq_len)
        if not MIN_SEQ_LEN <= seq_lens[-1] <= MAX_SEQ_LEN:
            raise UsageError(f"--overrides: {name}.seq_len={seq_lens[-1]}: use a window of "
                             f"{MIN_SEQ_LEN} to {MAX_SEQ_LEN} bars")
    req["seq_len"] = max(seq_lens)
    return req


def _run(args: argparse.Namespace) -> int:
    req = _parse(args)
    from data.cli import check_as_a_job, n_folds_of, parse_purge, parse_threshold
    from data.loading import list_symbols, load_bars, load_lob, spelling_hint, split_spellings
    from data.prepare import PrepareConfig, prepare_frame
    from models.api import train_symbols

    try:  # the flags a job's spec has: its limits and messages (as `data prepare`)
        settings: dict[str, Any] = {
            "horizons": req["horizons"], "seq_len": req["seq_len"], "split": req["split"],
            "n_folds": n_folds_of(req["split"], args.n_folds),
            "threshold": parse_threshold(args.threshold),
            "train": args.train, "val": args.val, "test": args.test,
            "purge": parse_purge(args.purge), "embargo": args.embargo,
        }  # fmt: skip
        check_as_a_job(**settings)
        cfg = PrepareConfig(kind=req["kind"], **settings)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    load = load_lob if req["kind"] == "lob" else load_bars
    try:  # with the kind: one error names every column the file lacks
        listed = list_symbols(args.data, req["kind"])
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"--data {args.data}: {exc}") from exc
    missing = sorted(set(req["symbols"]) - set(listed))
    if missing:
        raise UsageError(f"--symbols: {missing} not in --data {args.data}; it holds"
                         f" {len(listed)} symbols{spelling_hint(missing, listed)} (see"
                         " `quantray data inspect`)")
    # a symbol some of whose rows the file spells with spaces ('XOM ' beside 'XOM') fails
    # alone, as in a job: read by its exact spelling it would train on part of its history
    left_out = split_spellings(listed, req["symbols"])
    for symbol, reason in left_out.items():
        print(f"warning: {symbol} dropped: {reason}", file=sys.stderr)
    symbols = [s for s in req["symbols"] if s not in left_out]
    if not symbols:
        raise UsageError("--symbols: every symbol was dropped (see the warnings above)")
    try:
        frame = load(args.data, symbols=symbols, start=args.start, end=args.end)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"--data {args.data} (--kind/--start/--end): {exc}") from exc
    try:
        prepared = prepare_frame(frame, cfg, on_error="drop")
    except ValueError as exc:
        raise UsageError(f"--data {args.data}: {exc}") from exc
    for symbol, reason in prepared.dropped.items():
        print(f"warning: {symbol} dropped: {reason}", file=sys.stderr)
    for symbol, warning in prepared.warnings.items():
        print(f"warning: {symbol} (kept): {warning}", file=sys.stderr)
    if not prepared.prepared:
        raise UsageError("--symbols: every symbol was dropped (see the warnings above)")
    from models.metrics import error_rows

    # a dropped symbol fails alone, and visibly: error rows for each of its models
    dropped_rows = [row for symbol, reason in {**left_out, **prepared.dropped}.items()
                    for model in req["models"]
                    for row in error_rows(symbol, model, req["horizons"], f"data: {reason}")]
    if args.threads < 1:
        raise UsageError(f"--threads {args.threads}: use 1 or more")
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        rows = train_symbols(
            prepared.prepared, req["models"], req["preset"], req["overrides"], req["task"],
            progress=ProgressBar(sys.stderr), ensembles=not args.no_ensembles,
            save_dir=args.save_dir,
        )  # fmt: skip
    rows += dropped_rows
    _emit(rows, req["output"], sys.stdout)
    return 1 if any(row["error"] for row in rows) else 0


class ProgressBar:
    """Plain-text progress on a stream: `[#####.....] 3/10 AAPL/lstm 2.1s (12s elapsed)`."""

    def __init__(self, stream: Any, width: int = 24) -> None:
        self.stream = stream
        self.width = width
        self.start = time.perf_counter()
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def __call__(self, done: int, total: int, label: str) -> None:
        filled = self.width * done // max(total, 1)
        bar = "#" * filled + "." * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        line = f"[{bar}] {done}/{total} {label} ({elapsed:.0f}s elapsed)"
        end = "\n" if done == total or not self.tty else ""
        self.stream.write(("\r" if self.tty else "") + line + end)
        self.stream.flush()


def _clean(value: Any) -> Any:
    """NaN -> None so JSON output stays standard JSON."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _emit(rows: list[dict[str, Any]], output: str, stream: Any) -> None:
    from models.metrics import LEADERBOARD_COLUMNS

    if output == "json":
        clean = [{c: _clean(row[c]) for c in LEADERBOARD_COLUMNS} for row in rows]
        json.dump(clean, stream, indent=1, allow_nan=False)
        stream.write("\n")
    elif output == "csv":
        import csv

        writer = csv.DictWriter(stream, fieldnames=LEADERBOARD_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({c: _clean(row[c]) for c in LEADERBOARD_COLUMNS} for row in rows)
    else:
        stream.write(format_table(rows) + "\n")


TABLE = (  # (column, header, format)
    ("symbol", "symbol", "{}"), ("model", "model", "{}"), ("horizon", "h", "{}"),
    ("split", "split", "{}"), ("accuracy", "acc", "{:.3f}"),
    ("baseline_accuracy", "base", "{:.3f}"), ("p_value", "p", "{:.3g}"),
    ("macro_f1", "macro_f1", "{:.3f}"), ("mcc", "mcc", "{:.3f}"), ("r2", "r2", "{:.4f}"),
    ("ic", "ic", "{:.3f}"), ("ic_p_value", "ic_p", "{:.3g}"), ("train_seconds", "secs", "{:.1f}"),
    ("error", "error", "{}"),
)  # fmt: skip


def format_table(rows: list[dict[str, Any]]) -> str:
    """Aligned text table of the main leaderboard columns ('-' where a metric is None, or
    NaN: undefined, as a constant forecast's IC); with rows of several folds
    (walk-forward), a fold column after the split."""
    table = TABLE
    if len({row.get("fold") for row in rows}) > 1:
        at = [col for col, _, _ in TABLE].index("split") + 1
        table = (*TABLE[:at], ("fold", "fold", "{}"), *TABLE[at:])
    cells = [[h for _, h, _ in table]]
    for row in rows:
        cells.append([
            "-" if _clean(row.get(col)) is None else fmt.format(row[col])
            for col, _, fmt in table
        ])
    widths = [max(len(r[i]) for r in cells) for i in range(len(table))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)
