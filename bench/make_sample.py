"""Rebuild the bundled sample `data/sample/sp500_sample.parquet` from the shared S&P file.

The sample is the first N symbols (alphabetical) among those with the full 1,259-row
history in `../shared/data/sp500_daily.parquet` that pass `data.validation` (CHD, with a
bad print on 2014-05-19, does not), with the same columns and types, zstd compressed.
Run from the repository root:

    .venv/bin/python bench/make_sample.py            # rebuild and check
    .venv/bin/python bench/make_sample.py --check    # only check the committed file
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / ".." / "shared" / "data" / "sp500_daily.parquet"
SOURCE_SHA256 = "df768bd8085b62c868bd6c9b786a5af25b446348f80de20e6cc1c092273a6988"
OUT = ROOT / "data" / "sample" / "sp500_sample.parquet"
FULL_HISTORY = 1259
N_SYMBOLS = 102
# ~6 symbols per row group: row-group statistics on `symbol` then let a symbol filter
# skip most of the file (predicate pushdown) while the file stays small.
ROW_GROUP_ROWS = 6 * FULL_HISTORY


def build_sample(source: Path, n_symbols: int) -> pa.Table:
    """The subset table, sorted by (symbol, date), with the source schema."""
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"{source}: sha256 {digest} != expected {SOURCE_SHA256}; wrong file?")
    table = pq.read_table(source)
    counts = pc.value_counts(table["symbol"]).to_pylist()
    full = sorted(c["values"] for c in counts if c["counts"] == FULL_HISTORY)
    full = [s for s in full if s not in failing_validation(table)]
    if len(full) < n_symbols:
        raise SystemExit(f"only {len(full)} full-history symbols, {n_symbols} requested")
    chosen = full[:n_symbols]
    subset = table.filter(pc.is_in(table["symbol"], pa.array(chosen, table["symbol"].type)))
    return subset.sort_by([("symbol", "ascending"), ("date", "ascending")])


def failing_validation(table: pa.Table) -> set[str]:
    """Symbols whose rows `data.validation.validate_bars` rejects (a bad print, ...): the
    demo of a sample is meant to train every one of its symbols."""
    sys.path.insert(0, str(ROOT))
    from data.validation import validate_bars

    _, report = validate_bars(table.to_pandas(), on_error="drop")
    return set(report.dropped)


def check_sample(path: Path, source_schema: pa.Schema, n_symbols: int) -> list[str]:
    """Problems with the sample file at `path` (empty when it is right)."""
    table = pq.read_table(path)
    problems = []
    if not table.schema.equals(source_schema, check_metadata=False):
        problems.append(f"schema {table.schema} != source schema {source_schema}")
    counts = {c["values"]: c["counts"] for c in pc.value_counts(table["symbol"]).to_pylist()}
    if len(counts) != n_symbols:
        problems.append(f"{len(counts)} symbols, expected {n_symbols}")
    short = {s: n for s, n in counts.items() if n != FULL_HISTORY}
    if short:
        problems.append(f"symbols without {FULL_HISTORY} rows: {short}")
    if table.num_rows != n_symbols * FULL_HISTORY:
        problems.append(f"{table.num_rows} rows, expected {n_symbols * FULL_HISTORY}")
    failing = failing_validation(table)
    if failing:
        problems.append(f"symbols that fail data.validation: {sorted(failing)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--n-symbols", type=int, default=N_SYMBOLS)
    parser.add_argument("--check", action="store_true", help="only check the existing file")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        print(f"source file {args.source} not found (needs the shared checkout)", file=sys.stderr)
        return 2
    if not args.check:
        table = build_sample(args.source, args.n_symbols)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        # Delta-encoded dates/volumes and plain prices make the file ~40% smaller than
        # the writer's defaults (dictionary everywhere); readers need nothing special.
        pq.write_table(
            table,
            args.out,
            compression="zstd",
            compression_level=19,
            row_group_size=ROW_GROUP_ROWS,
            use_dictionary=["symbol"],
            column_encoding={"date": "DELTA_BINARY_PACKED", "volume": "DELTA_BINARY_PACKED"},
        )
    problems = check_sample(args.out, pq.read_schema(args.source), args.n_symbols)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if problems:
        return 1
    meta = pq.ParquetFile(args.out).metadata
    size_mb = args.out.stat().st_size / 1e6
    print(f"{args.out}: {meta.num_rows} rows, {meta.num_row_groups} row groups, {size_mb:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
