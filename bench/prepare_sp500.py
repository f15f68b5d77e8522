"""Benchmark: load, validate and prepare all 505 symbols of the shared S&P 500 file.

Prepare = features, targets, holdout split with purge/embargo, windows, train-only scaling
(seq_len 60, horizons 1/5/10/20: the default `PrepareConfig`). Prints the wall time of each
stage and the dropped symbols with their reasons. Target: < 10 s on a 2-core machine.
Run from the repository root:

    .venv/bin/python bench/prepare_sp500.py                  # one process
    .venv/bin/python bench/prepare_sp500.py --workers 2      # prepare in a process pool
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "sp500_daily.parquet"


def _prepare_chunk(args: tuple) -> tuple[dict, dict]:
    from data.prepare import prepare_validated

    frame, cfg = args
    return prepare_validated(frame, cfg)


def _prepare_pool(clean, cfg, workers: int) -> tuple[dict, dict]:
    """Split the validated frame into `workers` chunks of whole symbols, one per process."""
    import numpy as np

    symbols = clean["symbol"].to_numpy()
    bounds = np.flatnonzero(symbols[1:] != symbols[:-1]) + 1
    cuts = [0] + [int(bounds[len(bounds) * k // workers]) for k in range(1, workers)]
    cuts.append(len(clean))
    chunks = [(clean.iloc[a:b], cfg) for a, b in zip(cuts, cuts[1:], strict=False)]
    prepared, dropped = {}, {}
    with ProcessPoolExecutor(workers) as pool:
        for p, d in pool.map(_prepare_chunk, chunks):
            prepared.update(p)
            dropped.update(d)
    return prepared, dropped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="bars Parquet/CSV path or URI")
    parser.add_argument("--workers", type=int, default=1, help="processes for prepare (1: none)")
    parser.add_argument("--split", default="holdout", choices=["holdout", "walk_forward"])
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    from data.loading import load_bars
    from data.prepare import PrepareConfig, prepare_validated
    from data.validation import validate_bars

    t_import = time.perf_counter()
    cfg = PrepareConfig(split=args.split)
    df = load_bars(args.data)
    t_load = time.perf_counter()
    clean, report = validate_bars(df, min_rows=cfg.min_rows(), on_error="drop")
    t_validate = time.perf_counter()
    cpu0 = time.process_time()
    if args.workers > 1:
        prepared, failed = _prepare_pool(clean, cfg, args.workers)
    else:
        prepared, failed = prepare_validated(clean, cfg)
    t_prepare = time.perf_counter()
    cpu_prepare = time.process_time() - cpu0

    n_samples = sum(p.n_samples for folds in prepared.values() for p in folds)
    feature_mb = sum(p.features.nbytes for folds in prepared.values() for p in folds) / 2**20
    print(f"data: {args.data}")
    print(f"config: {cfg.to_dict()} (min_rows {cfg.min_rows()})")
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"rows {len(df):,}, symbols in {df['symbol'].nunique()}, prepared {len(prepared)}, "
          f"dropped {len(report.dropped) + len(failed)}; {n_samples:,} samples, "
          f"{feature_mb:.1f} MiB of float32 features")
    print(f"imports   {t_import - t0:7.2f} s")
    print(f"load      {t_load - t_import:7.2f} s")
    print(f"validate  {t_validate - t_load:7.2f} s")
    print(f"prepare   {t_prepare - t_validate:7.2f} s  (workers={args.workers}, "
          f"main-process CPU {cpu_prepare:.2f} s)")
    print(f"total     {t_prepare - t0:7.2f} s  (load + validate + prepare "
          f"{t_prepare - t_import:.2f} s)")
    for symbol, reason in sorted({**report.dropped, **failed}.items()):
        print(f"dropped {symbol}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
