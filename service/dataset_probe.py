"""Fail-fast dataset checks: open the dataset and read only its `symbol` column (which
symbols it has) or its `symbol` and time columns (how many rows each symbol has in a date
window, read as `data.loading` reads them).

Parquet files (or a directory of them) and CSV files (optionally .gz) are read with
pyarrow; results are cached per (uri, size, mtime), so polling clients re-submitting the
same dataset do not re-read it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pandas._libs.parsers import STR_NA_VALUES

from data.spec_rules import FIRST_DATE, LAST_DATE  # the dates a window may take
from data.storage import resolve_uri
from data.wording import counted

SYMBOL_COLUMN = "symbol"
_CSV_NA = pa.array(sorted(STR_NA_VALUES), pa.string())  # as data.loading._read_csv reads CSV
_SYMBOL_NA = pa.array([""], pa.string())
TIME_CACHE_ENTRIES = 4  # per-symbol time arrays are the size of the time column


class DatasetProbe:
    """Reads the distinct symbols of a dataset URI, and its rows per symbol in a window;
    thread-safe, bounded caches."""

    def __init__(self, cache_entries: int = 32) -> None:
        self._cache: OrderedDict[tuple[str, int, int, str], frozenset[str]] = OrderedDict()
        self._times: OrderedDict[tuple[str, int, int, str], dict[str, np.ndarray]] = (
            OrderedDict())
        self._columns: OrderedDict[tuple[str, int, int, str], tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self._cache_entries = cache_entries

    def rows_in_window(
        self, uri: str, time_column: str, start: str | None, end: str | None
    ) -> dict[str, int]:
        """Rows of each symbol of `uri` whose `time_column` lies in [start, end] (inclusive;
        a date-only end covers its day, as `data.loading` bounds a load). Unreadable or
        non-date times raise ValueError naming the column."""
        from data.loading import time_bounds

        for name, given in (("start", start), ("end", end)):
            if given is not None and not FIRST_DATE <= str(given)[:10] <= LAST_DATE:
                raise ValueError(_out_of_range(name, given))
        lo, hi = time_bounds(start, end)
        times = self._symbol_times(uri, time_column)
        lo_ns = None if lo is None else _nanoseconds(lo, "start", start)
        hi_ns = None if hi is None else _nanoseconds(hi, "end", end)
        out = {}
        for symbol, t in times.items():
            first = 0 if lo_ns is None else int(np.searchsorted(t, lo_ns, side="left"))
            last = len(t) if hi_ns is None else int(np.searchsorted(t, hi_ns, side="left"))
            out[symbol] = max(0, last - first)
        return out

    def span(self, uri: str, time_column: str) -> tuple[np.datetime64, np.datetime64] | None:
        """The first and last time of the whole dataset (None when it has no rows)."""
        times = [t for t in self._symbol_times(uri, time_column).values() if len(t)]
        if not times:
            return None
        return min(t[0] for t in times), max(t[-1] for t in times)

    def _symbol_times(self, uri: str, time_column: str) -> dict[str, np.ndarray]:
        return self._cached(self._times, TIME_CACHE_ENTRIES, uri, time_column,
                            lambda fs, path, kind: _read_symbol_times(fs, path, kind, uri,
                                                                      time_column))  # fmt: skip

    def symbols(self, uri: str) -> frozenset[str]:
        """Distinct symbols of `uri`; FileNotFoundError / ValueError say what is wrong."""

        def read(fs: pafs.FileSystem, path: str, kind: pafs.FileType) -> frozenset[str]:
            column = _read_symbol_column(fs, path, kind)  # an empty CSV cell is null here
            if n := column.null_count:  # the loader refuses the file, whichever symbols a
                one = n == 1  # job asks for: such a row may be a day of any of them
                raise ValueError(
                    f"{counted(n, 'row')} {'has' if one else 'have'} no symbol: fill or remove "
                    f"{'it' if one else 'them'} at the source (`quantray data inspect {uri}` "
                    f"names {'it' if one else 'them'})")
            return frozenset(str(s) for s in pc.unique(column).to_pylist() if s not in (None, ""))

        return self._cached(self._cache, self._cache_entries, uri, "", read)

    def check_kind(self, uri: str, kind: str) -> None:
        """Raise ValueError naming every column `kind` ("bars", "lob") needs that `uri`
        lacks (a file with `Adj Close` and no `close` failed only on the cluster), from
        its header or Parquet schema alone."""
        from data.loading import check_kind

        names = self._cached(self._columns, self._cache_entries, uri, "columns",
                             _column_names)  # fmt: skip
        check_kind(list(names), kind, uri)

    def _cached(self, cache: OrderedDict, entries: int, uri: str, part: str,
                read: Callable[[pafs.FileSystem, str, pafs.FileType], Any]) -> Any:
        """`read(fs, path, kind)` of `uri`, kept in the LRU `cache` (at most `entries`) per
        (uri, size, mtime, part), so a changed file is read again; a directory's stamp is
        its files' (path, size, mtime), as its own mtime misses a file rewritten in place
        (and an S3 prefix has none: a dataset fixed there was refused as before)."""
        fs, path = resolve_uri(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError("no such file or directory")
        if info.type == pafs.FileType.Directory:
            files = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            stamp = hash(tuple(sorted((f.path, int(f.size or 0), int(f.mtime_ns or 0))
                                      for f in files if f.type == pafs.FileType.File)))
            key = (uri, stamp, 0, part)
        else:
            key = (uri, int(info.size or 0), int(info.mtime_ns or 0), part)
        with self._lock:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
        value = read(fs, path, info.type)
        with self._lock:
            cache[key] = value
            while len(cache) > entries:
                cache.popitem(last=False)
        return value


def _nanoseconds(bound: pd.Timestamp, name: str, given: str | None) -> np.datetime64:
    """`bound` as datetime64[ns], the times' unit. pandas keeps 9999-12-31 in seconds, and
    numpy's cast of that to ns wraps around silently (9999-01-01 became 1815-03-31, and
    every row counted as inside the window): out of the ns range is an error instead."""
    try:
        return bound.as_unit("ns").to_datetime64()
    except (OverflowError, pd.errors.OutOfBoundsDatetime):
        raise ValueError(_out_of_range(name, given)) from None


def _out_of_range(name: str, given: object) -> str:
    return (f"{name} {given} is outside the times a dataset can hold ({FIRST_DATE} to "
            f"{LAST_DATE}); leave {name} out for no bound")


def _read_symbol_column(fs: pafs.FileSystem, path: str, kind: pafs.FileType) -> pa.ChunkedArray:
    return _read_columns(fs, path, kind, [SYMBOL_COLUMN]).column(SYMBOL_COLUMN)


def _column_names(fs: pafs.FileSystem, path: str, kind: pafs.FileType) -> tuple[str, ...]:
    """The dataset's column names: a CSV header, a Parquet schema (hive keys included)."""
    from data.loading import csv_compression, parquet_dataset

    lower = path.lower()
    try:
        if kind == pafs.FileType.Directory:
            return tuple(parquet_dataset(fs, path, path).schema.names)
        if lower.endswith((".parquet", ".pq")):
            return tuple(pq.read_schema(path, filesystem=fs).names)
        if lower.endswith((".csv", ".csv.gz")):
            with fs.open_input_stream(path, compression=csv_compression(path)) as stream:
                return tuple(pacsv.open_csv(stream).schema.names)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"no readable header or schema ({exc})") from None
    raise ValueError("unknown file type: use .parquet, .csv, .csv.gz or a directory")


def _read_columns(
    fs: pafs.FileSystem, path: str, kind: pafs.FileType, columns: list[str]
) -> pa.Table:
    """`columns` of the dataset at `path` (CSV columns as strings); a missing one raises
    `data.validation.check_columns`' message (the columns found, renames, the kind)."""
    from data.loading import csv_compression, not_parquet_files, parquet_dataset
    from data.validation import check_columns

    lower = path.lower()
    try:
        if kind == pafs.FileType.Directory:  # hive partitions (symbol=...) as the loader reads them
            dataset = parquet_dataset(fs, path, path)
            check_columns(dataset.schema.names, columns, path)
            try:
                table = dataset.to_table(columns=columns)
            except (pa.ArrowInvalid, OSError) as exc:  # a README beside the Parquet files
                raise ValueError(f"{exc}{not_parquet_files(dataset)}") from None
        elif lower.endswith((".parquet", ".pq")):
            check_columns(_column_names(fs, path, kind), columns, path)
            table = pq.read_table(path, filesystem=fs, columns=columns)
        elif lower.endswith((".csv", ".csv.gz")):
            check_columns(_column_names(fs, path, kind), columns, path)
            with fs.open_input_stream(path, compression=csv_compression(path)) as stream:
                table = pacsv.read_csv(
                    stream,
                    convert_options=pacsv.ConvertOptions(
                        include_columns=columns,
                        column_types=dict.fromkeys(columns, pa.string()),
                    ),
                )
            table = csv_missing_as_null(table)
        else:
            raise ValueError("unknown file type: use .parquet, .csv, .csv.gz or a directory")
    except (pa.ArrowInvalid, KeyError) as exc:
        named = " and ".join(repr(c) for c in columns)
        raise ValueError(f"no readable {named} column ({exc})") from None
    return table


def csv_missing_as_null(table: pa.Table) -> pa.Table:
    """The CSV cells `data.loading` reads as missing, as nulls: in every column but
    `symbol`, pandas' NA strings ('', 'NA', 'NULL', 'nan', 'N/A', ...); in `symbol` only an
    empty cell (NA and NULL are tickers). The loader's rule (`data.loading._read_csv`,
    from the same `STR_NA_VALUES`), so a date cell it reads as a missing date (a
    per-symbol error there) is not "a value that is not a date" here."""
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        missing = _SYMBOL_NA if name == SYMBOL_COLUMN else _CSV_NA
        nulls = pc.is_in(column, value_set=missing)
        columns.append(pc.if_else(nulls, pa.scalar(None, column.type), column))
    return pa.table(columns, names=table.column_names)


def _read_symbol_times(
    fs: pafs.FileSystem, path: str, kind: pafs.FileType, uri: str, time_column: str
) -> dict[str, np.ndarray]:
    """Symbol -> its sorted times (datetime64[ns]), parsed as `data.loading` parses them."""
    from data.validation import to_datetime_column

    frame = _read_columns(fs, path, kind, [SYMBOL_COLUMN, time_column]).to_pandas(
        ignore_metadata=True)  # a pandas index saved as a column stays a column
    times = frame[time_column]
    if times.dtype == object and times.notna().any():  # CSV columns are read as text here
        numbers = pd.to_numeric(times, errors="coerce")
        if numbers.notna().sum() == times.notna().sum():  # the loader infers numbers: refuse
            times = numbers  # 20130208 as pandas reads it, and fail the same way
    # per symbol, as the loader decides a zoned column's dates; a symbol's odd times (a
    # live bar among its daily ones) fail that symbol in the job, not every job on the file
    frame[time_column] = to_datetime_column(times, time_column, uri, frame[SYMBOL_COLUMN],
                                            asked=())
    frame = frame.dropna(subset=[SYMBOL_COLUMN, time_column])
    return {
        str(symbol): np.sort(group.to_numpy(dtype="datetime64[ns]"))
        for symbol, group in frame.groupby(SYMBOL_COLUMN, observed=True)[time_column]
    }
