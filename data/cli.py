"""`quantray data ...`: look at a dataset and try its preparation before submitting a job.

    quantray data inspect URI [--kind bars|lob] [--symbols A,B] [--start D] [--end D]
                              [--min-rows N] [--json]
    quantray data prepare URI [--symbols A,B] [--seq-len 60] [--horizons 1,5,10,20]
                              [--split holdout|walk_forward] [--n-folds 3]
                              [--threshold auto] [--train 0.7 --val 0.15 --test 0.15]
                              [--purge auto] [--embargo 5] [--json]

Bad input (missing file, unknown symbols, bad horizons, invalid data) exits with status 2
and one line on stderr. `prepare` refuses what a job spec refuses (seq_len, horizons,
n_folds, the split), with the job's messages. Only argparse and the stdlib are imported
here; data code is imported inside the handlers so that `quantray --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

EXIT_BAD_INPUT = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` command and its actions to the `quantray` parser."""
    data = subparsers.add_parser("data", help="inspect and prepare datasets")
    data.set_defaults(func=lambda args: _usage(data))
    actions = data.add_subparsers(dest="data_command", metavar="ACTION")

    inspect = actions.add_parser(
        "inspect", help="symbols, date range, rows per symbol and the validation report"
    )
    _common(inspect)
    inspect.add_argument("--kind", choices=("bars", "lob"), default="bars")
    inspect.add_argument(
        "--min-rows", type=int, default=None,
        help="report symbols with fewer rows as dropped (default: no minimum)",
    )
    inspect.set_defaults(func=_guarded("inspect", _inspect))

    prepare = actions.add_parser(
        "prepare", help="validate, featurize, label and split; print split sizes and classes"
    )
    _common(prepare)
    prepare.add_argument("--kind", choices=("bars", "lob"), default="bars")
    prepare.add_argument("--seq-len", type=int, default=60, help="window length (default 60)")
    prepare.add_argument(
        "--horizons", default="1,5,10,20", help="comma-separated bars ahead (default 1,5,10,20)"
    )
    prepare.add_argument("--split", choices=("holdout", "walk_forward"), default="holdout")
    add_label_split_flags(prepare)
    prepare.set_defaults(func=_guarded("prepare", _prepare))


def add_label_split_flags(parser: argparse.ArgumentParser) -> None:
    """A job's target.threshold and split.{n_folds,train,val,test,purge,embargo}, with its
    defaults: `quantray data prepare` and `quantray train` take the same flags."""
    parser.add_argument("--n-folds", type=int, default=None,
                        help="walk_forward folds (default 3; with --split walk_forward only)")
    parser.add_argument("--threshold", default="auto",
                        help="flat band: auto, one return such as 0.002, or one per horizon"
                        " (comma-separated) (default auto)")
    parser.add_argument("--train", type=float, default=0.7, help="train fraction (default 0.7)")
    parser.add_argument("--val", type=float, default=0.15, help="val fraction (default 0.15)")
    parser.add_argument("--test", type=float, default=0.15,
                        help="test fraction (default 0.15); train + val + test = 1")
    parser.add_argument("--purge", default="auto",
                        help="samples dropped before each later split: auto (= the longest"
                        " horizon) or an integer (default auto)")
    parser.add_argument("--embargo", type=int, default=5,
                        help="samples left out after the purge (default 5)")


# a job spec's fields -> the flags that set them here
_FLAGS = {"target.horizons": "--horizons", "target.threshold": "--threshold",
          "features.seq_len": "--seq-len", "split.method": "--split",
          "split.n_folds": "--n-folds", "split.train": "--train", "split.val": "--val",
          "split.test": "--test", "split.purge": "--purge", "split.embargo": "--embargo",
          "split": "--train/--val/--test"}  # fmt: skip


def n_folds_of(split: str, n_folds: int | None) -> int:
    """--n-folds for `split` (3 when not given); refused with a holdout split, which it does
    not change (it was ignored without a word)."""
    if n_folds is None:
        return 3
    if split != "walk_forward":
        raise ValueError(f"--n-folds {n_folds}: folds are for --split walk_forward (this split "
                         f"is {split}); add --split walk_forward, or leave --n-folds out")
    return n_folds


def check_as_a_job(*, horizons: tuple[int, ...], seq_len: int, split: str, n_folds: int,
                   threshold: str | float | tuple[float, ...], train: float, val: float,
                   test: float, purge: str | int, embargo: int) -> None:
    """Refuse, naming every flag at fault, the settings a job spec refuses: its own
    sections check them (`data.spec_rules`, stdlib only), so the limits and
    messages are the job's (seq_len 5-512, up to 8 horizons of at most 4096 bars,
    walk-forward n_folds 2-20 ...)."""
    from data.spec_rules import FeaturesSpec, SpecError, SplitSpec, TargetSpec
    from data.split_rules import leaky_gap_problem

    sections = (
        lambda: TargetSpec(horizons=list(horizons), threshold=threshold),
        lambda: FeaturesSpec(seq_len=seq_len),
        lambda: SplitSpec(method=split, train=train, val=val, test=test, n_folds=n_folds,
                          purge=purge, embargo=embargo),
    )  # fmt: skip
    errors = []
    for section in sections:
        try:
            section()
        except SpecError as exc:
            errors += exc.errors
    if not errors and (leak := leaky_gap_problem(purge, embargo, max(horizons))):
        errors.append(("split.purge", leak))  # the job's cross-check of purge and embargo
    if errors:
        raise ValueError("; ".join(
            f"{_FLAGS.get(path.split('[')[0], path)}: {msg} (a job's {path})"
            for path, msg in errors))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("uri", help="file, directory, s3://bucket/key?... or sample:sp500")
    parser.add_argument("--symbols", default=None, help="comma-separated tickers (default all)")
    parser.add_argument("--start", default=None, help="first date, inclusive (YYYY-MM-DD)")
    parser.add_argument("--end", default=None, help="last date, inclusive (YYYY-MM-DD)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_BAD_INPUT


def _guarded(action: str, handler: Callable[[argparse.Namespace], int]) -> Callable:
    """Bad input -> one line on stderr and exit status 2, never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except BrokenPipeError:  # `| head` closed the pipe: no error of the input
            raise
        except (ValueError, OSError) as exc:  # bad input; anything else is a bug: traceback
            message = " ".join(str(exc).split())
            print(f"quantray data {action}: error: {message}", file=sys.stderr)
            return EXIT_BAD_INPUT

    return run


def parse_symbols(text: str | None) -> list[str] | None:
    """"A,B" -> ["A", "B"]; None -> None (all symbols)."""
    if text is None:
        return None
    symbols = [s.strip() for s in text.split(",")]
    if not text.strip() or any(not s for s in symbols):
        raise ValueError(f"--symbols {text!r}: use comma-separated tickers such as AAPL,MSFT")
    duplicates = sorted({s for s in symbols if symbols.count(s) > 1})
    if duplicates:
        raise ValueError(f"--symbols {text!r}: {duplicates} given twice; list each ticker once")
    return symbols


def parse_horizons(text: str) -> tuple[int, ...]:
    """"1,5,10" -> (1, 5, 10); anything but positive integers is an error."""
    try:
        horizons = tuple(int(h) for h in text.split(","))
    except ValueError:
        horizons = ()
    if not horizons or any(h < 1 for h in horizons):
        raise ValueError(f"--horizons {text!r}: use comma-separated integers >= 1 such as 1,5,10")
    return horizons


def parse_threshold(text: str) -> str | float | tuple[float, ...]:
    """"auto" -> "auto"; "0.002" -> 0.002; "0.002,0.005" -> (0.002, 0.005)."""
    if text.strip() == "auto":
        return "auto"
    try:
        values = tuple(float(t) for t in text.split(","))
    except ValueError:
        values = ()
    if not values or any(not v >= 0 or v == float("inf") for v in values):
        raise ValueError(f"--threshold {text!r}: use auto, a return >= 0 such as 0.002, or "
                         "one per horizon (comma-separated)")
    return values[0] if len(values) == 1 else values


def parse_purge(text: str) -> str | int:
    """"auto" -> "auto"; "20" -> 20."""
    if text.strip() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--purge {text!r}: use auto or an integer >= 0") from None


def _load(args: argparse.Namespace):
    """(frame, symbol -> why it is left out): a requested symbol some of whose rows the
    file spells with spaces ('XOM ' beside 'XOM') fails alone, as in a job, and the others
    load; all of them failing is an error."""
    from data.loading import list_symbols, load_bars, load_lob, split_spellings

    load = load_bars if args.kind == "bars" else load_lob
    symbols = parse_symbols(args.symbols)
    left_out: dict[str, str] = {}
    if symbols is not None:
        left_out = split_spellings(list_symbols(args.uri, args.kind), symbols)
        if len(left_out) == len(symbols):
            raise ValueError(f"{args.uri}: " + "; ".join(left_out.values()))
        symbols = [s for s in symbols if s not in left_out]
    frame = load(args.uri, symbols=symbols, start=args.start, end=args.end)
    return frame, left_out


def _inspect(args: argparse.Namespace) -> int:
    from data.validation import validate_bars, validate_lob

    if args.min_rows is not None and args.min_rows < 1:
        raise ValueError(f"--min-rows {args.min_rows}: use an integer >= 1")
    frame, left_out = _load(args)
    time_col = "date" if args.kind == "bars" else "ts"
    validate = validate_bars if args.kind == "bars" else validate_lob
    _, report = validate(frame, min_rows=args.min_rows, on_error="drop")
    report.symbols_in += len(left_out)
    report.dropped = dict(sorted({**report.dropped, **left_out}.items()))
    sizes = frame.groupby("symbol").size().sort_values(kind="stable")
    info: dict[str, Any] = {
        "uri": args.uri,
        "kind": args.kind,
        "symbols": int(len(sizes)),
        "rows": int(len(frame)),
        "start": _when(frame[time_col].min()),
        "end": _when(frame[time_col].max()),
        "rows_per_symbol": {
            "min": int(sizes.iloc[0]), "median": float(sizes.median()), "max": int(sizes.iloc[-1]),
            "shortest": {str(s): int(n) for s, n in sizes.head(5).items()},
        },
        "validation": report.to_dict(),
    }
    if args.kind == "lob":
        info["levels"] = sum(c.startswith("ask_price_") for c in frame.columns)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    per = info["rows_per_symbol"]
    print(f"dataset: {args.uri} ({args.kind})")
    print(f"symbols: {info['symbols']}")
    print(f"rows: {info['rows']}")
    print(f"{time_col} range: {info['start']} .. {info['end']}")
    if "levels" in info:
        print(f"book levels: {info['levels']}")
    print(f"rows per symbol: min {per['min']}, median {per['median']:g}, max {per['max']}")
    print("shortest: " + ", ".join(f"{s} {n}" for s, n in per["shortest"].items()))
    print(report.summary())
    return 0


def _when(ts) -> str:
    """Date only for midnight timestamps (daily bars), full ISO time otherwise."""
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.isoformat()


def _prepare(args: argparse.Namespace) -> int:
    import numpy as np

    from data.prepare import PrepareConfig, prepare_frame
    from data.wording import counted

    settings: dict[str, Any] = {
        "horizons": parse_horizons(args.horizons), "seq_len": args.seq_len,
        "split": args.split, "n_folds": n_folds_of(args.split, args.n_folds),
        "threshold": parse_threshold(args.threshold), "train": args.train, "val": args.val,
        "test": args.test, "purge": parse_purge(args.purge), "embargo": args.embargo,
    }  # fmt: skip
    check_as_a_job(**settings)
    try:
        cfg = PrepareConfig(kind=args.kind, **settings)
    except ValueError as exc:  # e.g. "PrepareConfig.horizons=(5, 1): use increasing ..."
        raise ValueError(f"--horizons/--seq-len/--split/--n-folds/--threshold/--train/--val/"
                         f"--test/--purge/--embargo: {exc}") from exc
    frame, left_out = _load(args)
    result = prepare_frame(frame, cfg, on_error="drop")
    result.dropped.update(left_out)
    rows = []
    for symbol, folds in sorted(result.prepared.items()):
        for prep in folds:
            for split, idx in prep.splits.items():
                # (n_split, H) classes -> per horizon fractions of down / flat / up
                balance = {
                    str(h): [
                        round(float(c) / max(len(idx), 1), 3)
                        for c in np.bincount(prep.y_class[idx, j], minlength=3)
                    ]
                    for j, h in enumerate(cfg.horizons)
                }
                rows.append({"symbol": symbol, "fold": prep.fold, "split": split,
                             "n": int(len(idx)), "balance": balance})
    if args.json:
        out = {"config": cfg.to_dict(), "min_rows": cfg.min_rows(), "splits": rows,
               "dropped": result.dropped, "warnings": result.warnings,
               "validation": result.report.to_dict()}
        print(json.dumps(out, indent=2))
        return 0 if result.prepared else EXIT_BAD_INPUT
    print(f"prepared {counted(len(result.prepared), 'symbol')}, dropped {len(result.dropped)} "
          f"({cfg.split}, seq_len {cfg.seq_len}, horizons {list(cfg.horizons)}, "
          f"min_rows {cfg.min_rows()})")
    head = " ".join(f"{'h=' + str(h) + ' d/f/u %':>16}" for h in cfg.horizons)
    print(f"{'symbol':<8} {'fold':>4} {'split':<6} {'samples':>7} {head}")
    for r in rows:
        cells = " ".join(
            f"{'/'.join(f'{100 * v:.0f}' for v in r['balance'][str(h)]):>16}"
            for h in cfg.horizons
        )
        print(f"{r['symbol']:<8} {r['fold']:>4} {r['split']:<6} {r['n']:>7} {cells}")
    for symbol, reason in sorted(result.dropped.items()):
        print(f"dropped {symbol}: {reason}")
    for symbol, warning in result.warnings.items():
        print(f"warning {symbol}: {warning}")
    if not result.prepared:
        print("quantray data prepare: error: no symbol could be prepared", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0
