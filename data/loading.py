"""Read bars and LOB snapshots from CSV or Parquet, local or object storage.

The format comes from the URI: `.parquet`/`.pq` (one file), a directory (a Parquet dataset,
hive partitions such as `symbol=AAPL/` allowed), `.csv` or `.csv.gz`. `sample:NAME` names a
bundled sample (see `data.sample`). Parquet reads go through `pyarrow.dataset` with the
symbol/time filter as a filter expression, so row groups whose statistics exclude the
requested symbols and dates are never read (predicate pushdown). CSV has no statistics:
it is read whole and filtered in memory.

Time bounds are inclusive. A bound given as a plain date (`"2018-02-07"` or a
`datetime.date`) covers that whole day, which matters for intraday `ts` columns.

Loading checks structure only (file, columns, date and number parsing, rows without a
symbol), naming the file and the row in it; values are checked by `data.validation`. One
exception: a read for some symbols refuses a requested symbol whose rows are partly
spelled with spaces at either end ('AAPL ' beside 'AAPL'), which would otherwise load with
part of its history (`split_spellings` names them for callers that go on without them).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pandas._libs.parsers import STR_NA_VALUES

from data.storage import resolve_uri
from data.validation import (
    BAR_COLUMNS,
    SORTED_ROWS,
    UNTIMED_ROWS,
    DataValidationError,
    check_columns,
    lob_columns,
    numeric_columns,
    padded_symbol_errors,
    to_datetime_column,
)
from data.wording import counted

TimeBound = str | dt.date | pd.Timestamp | None
_PARQUET = (".parquet", ".pq")
_CSV = (".csv", ".csv.gz")


def load_bars(
    uri: str,
    symbols: Sequence[str] | None = None,
    start: TimeBound = None,
    end: TimeBound = None,
    *,
    check_spellings: bool = True,
) -> pd.DataFrame:
    """Long bars frame `symbol, date, open, high, low, close, volume` (date datetime64[ns]),
    sorted by (symbol, date). `check_spellings=False` skips the check that no requested
    symbol has a padded twin ('XOM ') in the file, for a caller that made it already (a
    job's driver, before its chunk tasks: on Parquet it reads the whole symbol column)."""
    return _load(uri, lambda found: list(BAR_COLUMNS), "date", symbols, start, end,
                 check_spellings)


def load_lob(
    uri: str,
    symbols: Sequence[str] | None = None,
    start: TimeBound = None,
    end: TimeBound = None,
    *,
    check_spellings: bool = True,
) -> pd.DataFrame:
    """Long LOB frame `symbol, ts, ask_price_1..L, ask_size_1..L, bid_price_1..L,
    bid_size_1..L` with the number of levels L detected from the columns
    (`check_spellings`: as in `load_bars`)."""
    return _load(uri, lambda found: lob_columns(found, uri), "ts", symbols, start, end,
                 check_spellings)


def list_symbols(uri: str, kind: str | None = None) -> list[str]:
    """Sorted distinct symbols, reading only the `symbol` column. With `kind` ("bars" or
    "lob"), the file's columns are checked first against everything that kind needs, so
    one error names every missing column, not only `symbol`."""
    fs, path, fmt = _locate(uri)
    if fmt == "csv":
        frame = _read_csv(fs, path, uri, ["symbol"], kind=kind)
        return sorted(frame["symbol"].dropna().unique().tolist())
    dataset = parquet_dataset(fs, path, uri)
    if kind is not None:
        check_kind(dataset.schema.names, kind, uri)
    check_columns(dataset.schema.names, ["symbol"], uri)
    return _dataset_symbols(dataset, uri)


def _dataset_symbols(dataset: ds.Dataset, uri: str) -> list[str]:
    """Sorted distinct symbols of a Parquet dataset as text: integer codes (7203) as their
    digits, a binary column (Spark/Hive files without the UTF8 annotation) decoded."""
    keys = [ds.get_partition_keys(f.partition_expression) for f in dataset.get_fragments()]
    if keys and all("symbol" in k for k in keys):  # hive `symbol=AAPL/`: the directory
        values = {k["symbol"] for k in keys}  # names tell, without opening a file
    else:
        try:
            values = pc.unique(dataset.to_table(columns=["symbol"])["symbol"]).to_pylist()
        except (pa.ArrowInvalid, OSError) as exc:
            raise ValueError(f"{uri}: {exc}{not_parquet_files(dataset)}") from exc
    return sorted(_symbol_text(v, uri) for v in values if v is not None)


def _symbol_text(value: object, uri: str) -> str:
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise DataValidationError(
                f"{uri}: column 'symbol' is binary and holds bytes that are not UTF-8 text "
                f"(e.g. {bytes(value)!r}); write the symbols as strings") from None
    return str(value)


def _symbols_as_text(table: pa.Table, uri: str) -> pd.DataFrame:
    """A Parquet table as a frame whose symbols are text (see `_dataset_symbols`); nulls
    stay None. Binary symbols are decoded in Arrow, not row by row."""
    at = table.schema.get_field_index("symbol")
    column = table.column(at)
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        try:
            text = pc.cast(column.cast(kind) if kind is not column.type else column, pa.string())
        except pa.ArrowInvalid:
            bad = next(v for v in column.to_pylist() if v is not None and _not_utf8(v))
            _symbol_text(bad, uri)  # raises, naming the value
            raise
        table = table.set_column(at, "symbol", text)
    # without the pandas metadata: a frame saved with its `date` (or `symbol`) as the index
    # stores it as a column, which `to_pandas` would turn back into the index
    frame = table.to_pandas(ignore_metadata=True)
    sym = frame["symbol"]
    if isinstance(sym.dtype, pd.CategoricalDtype):  # a pandas category saved
        frame["symbol"] = sym = sym.astype(object)  # to Parquet: plain strings
    if pd.api.types.is_integer_dtype(sym):  # numeric codes (7203, 600519) in Parquet:
        # text, as tickers are (and as CSV reads them)
        frame["symbol"] = sym.astype("string").astype(object).where(sym.notna(), None)
    return frame


def _not_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def check_kind(found: list[str], kind: str, uri: str) -> None:
    """Raise naming every column of `kind` ("bars" or "lob") missing from `found`."""
    if kind == "lob":
        lob_columns(found, uri)
    elif kind == "bars":
        check_columns(found, BAR_COLUMNS, uri)
    else:
        raise ValueError(f"kind={kind!r}: use 'bars' or 'lob'")


def _load(uri, columns_for, time_col, symbols, start, end, check_spellings=True
          ) -> pd.DataFrame:
    symbols = _check_symbols(symbols)
    lo, hi = time_bounds(start, end)
    fs, path, kind = _locate(uri)
    if kind == "csv":
        frame = _read_csv(fs, path, uri, None)
        found = list(frame.columns)
        columns = columns_for(frame.columns)
        check_columns(frame.columns, columns, uri)
        frame = frame.loc[:, columns]
        # another symbol's odd times (a live bar among daily ones) refuse only itself
        frame[time_col] = to_datetime_column(frame[time_col], time_col, uri, frame["symbol"],
                                             symbols)
        frame = numeric_columns(frame, columns[2:], uri)
        # the whole file is in memory: positions are the file's rows (0 = the first after
        # the header)
        untimed = _untimed_rows(frame, time_col, lambda s, mask: _rows_text(mask))
        # for any symbols asked for too: a row without one may be a day of any of them
        _check_no_symbol(frame, time_col, uri, lambda: _rows_text(frame["symbol"].isna()))
        if symbols is not None:
            if check_spellings:
                _check_padded_twins(frame["symbol"].dropna().unique(), symbols, uri)
            frame = frame[frame["symbol"].isin(symbols)]
    else:
        dataset = parquet_dataset(fs, path, uri)
        found = list(dataset.schema.names)
        columns = columns_for(dataset.schema.names)
        check_columns(dataset.schema.names, columns, uri)
        if symbols is not None and check_spellings:  # the pushdown reads exact spellings
            _check_padded_twins(_dataset_symbols(dataset, uri), symbols, uri)
        expr = build_filter(dataset.schema, time_col, symbols, lo, hi)
        try:
            try:
                table = dataset.to_table(columns=columns, filter=expr)
            except pa.ArrowNotImplementedError:
                if (lo is None and hi is None) or not _time_as_text(dataset, fs, time_col):
                    raise
                # files that store the time differently (text in one, timestamps in the
                # others: yearly exports from different tools) read as one type, but a
                # window's comparison meets the file's own type: read without it (the
                # bounds are applied below)
                table = dataset.to_table(columns=columns, filter=build_filter(
                    dataset.schema, time_col, symbols, None, None))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            why = not_parquet_files(dataset) or _schema_clash(dataset, fs, columns)
            raise ValueError(f"{uri}: {exc}{why}") from exc
        no_symbol = table.column("symbol").null_count > 0
        frame = _symbols_as_text(table, uri)
        frame[time_col] = to_datetime_column(frame[time_col], time_col, uri, frame["symbol"])
        frame = numeric_columns(frame, columns[2:], uri)
        if no_symbol:
            _check_no_symbol(frame, time_col, uri, lambda: _parquet_rows(
                dataset, path, time_col, lambda sym, when: sym.isna()))
        untimed = _untimed_rows(frame, time_col, lambda s, mask: _parquet_rows(
            dataset, path, time_col, lambda sym, when: sym.eq(s) & when.isna()))
    # exact bounds in pandas too: pushdown is an optimisation (a string-typed time column
    # cannot be pushed down), and correctness must not depend on it. A row without a time
    # is kept: validation fails its symbol for it, with or without a window.
    if lo is not None:
        frame = frame[(frame[time_col] >= lo) | frame[time_col].isna()]
    if hi is not None:
        frame = frame[(frame[time_col] < hi) | frame[time_col].isna()]
    window = _window_text(start, end)
    if symbols is not None:
        missing = sorted(set(symbols) - set(frame["symbol"].unique()))
        if missing:
            raise ValueError(_no_rows_message(uri, time_col, missing, window))
    if len(frame) == 0:
        span = _span(uri, time_col, None) if window else None
        raise ValueError(f"{uri}: the file has no rows{window}"
                         + (f" (its rows run from {span[0]} to {span[1]})" if span else "")
                         + "; check the file and the start/end dates")
    _check_separate_time(found, frame, time_col, uri)
    unsorted = frame
    frame = frame.sort_values(["symbol", time_col], kind="stable")
    moved = _moved_rows(unsorted, frame)
    frame = frame.reset_index(drop=True)
    if moved:  # validation counts them as its `sorted` repair (its own sort moves none now)
        frame.attrs[SORTED_ROWS] = moved
    if untimed:  # where the rows without a time are in the file (the sort moved them):
        # validation names them
        frame.attrs[UNTIMED_ROWS] = {s: w for s, w in untimed.items()
                                     if s in set(frame["symbol"])}
    return frame


def _moved_rows(unsorted: pd.DataFrame, frame: pd.DataFrame) -> dict[str, int]:
    """symbol -> its rows whose place among the symbol's rows the sort changed (a file in
    (date, symbol) order moves none), from the frame before and after a stable sort."""
    if (frame.index.to_numpy() == unsorted.index.to_numpy()).all():  # nothing moved at all
        return {}
    before = unsorted.groupby("symbol", sort=False).cumcount()
    moved = frame.groupby("symbol", sort=False).cumcount().ne(before[frame.index])
    counts = moved.groupby(frame["symbol"], sort=False).sum()
    return {str(symbol): int(n) for symbol, n in counts.items() if n}


def _rows_text(mask: pd.Series | Sequence[bool], name: str | None = None) -> str:
    """"row 5" / "rows 5, 9, 12 (+3 more)" for the true positions of `mask` (counted from
    0, the first row after a CSV header), "of NAME" when given."""
    pos = [int(i) for i in np.flatnonzero(np.asarray(mask, dtype=bool))]
    more = f" (+{len(pos) - _ROWS_SHOWN} more)" if len(pos) > _ROWS_SHOWN else ""
    text = (f"row{'s' if len(pos) > 1 else ''} {', '.join(map(str, pos[:_ROWS_SHOWN]))}"
            f"{more}")
    return f"{text} of {name}" if name else text


_ROWS_SHOWN = 5


def _parquet_rows(dataset: ds.Dataset, path: str, time_col: str,
                  pick: Callable[[pd.Series, pd.Series], pd.Series]) -> str:
    """Where the rows that `pick(symbol, time)` selects are in the files of `dataset`
    (rows counted from 0, the file named when there are several), found by reading its
    symbol and time columns again, file by file: the rows read through a filter are not
    the file's rows. An error path only."""
    fragments = list(dataset.get_fragments())
    out = []
    for fragment in fragments:
        part = fragment.to_table(schema=dataset.schema, columns=["symbol", time_col])
        sym = part.column("symbol").to_pandas()
        hit = pick(sym.map(lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes)
                           else v), part.column(time_col).to_pandas())
        if hit.any():
            name = fragment.path[len(path):].lstrip("/") or fragment.path
            out.append(_rows_text(hit, name if len(fragments) > 1 else None))
    return "; ".join(out)


def _check_no_symbol(frame: pd.DataFrame, time_col: str, uri: str,
                     where: Callable[[], str]) -> None:
    """A row without a symbol makes the file no bars file (a frame error, as in
    `data.validation`): raise naming where the rows are in the file and their times."""
    mask = frame["symbol"].isna()
    if not mask.any():
        return
    n = int(mask.sum())
    times = frame.loc[mask, time_col].dropna()
    dated = f", dated {_times_text(times)}" if len(times) else ""
    raise DataValidationError(
        f"{uri}: {counted(n, 'row')} {'has' if n == 1 else 'have'} no symbol ({where()}"
        f"{dated}); fill or remove {'it' if n == 1 else 'them'} at the source")


def _untimed_rows(frame: pd.DataFrame, time_col: str, where: Callable[[str, pd.Series], str]
                  ) -> dict[str, str]:
    """symbol -> where its rows without a time are in the file (`UNTIMED_ROWS`)."""
    mask = frame[time_col].isna()
    if not mask.any():
        return {}
    mask &= frame["symbol"].notna()
    return {str(s): where(str(s), mask & frame["symbol"].eq(s))
            for s in frame.loc[mask, "symbol"].unique()}


def _times_text(times: pd.Series) -> str:
    shown = [t.strftime("%Y-%m-%d") if t == t.normalize() else t.isoformat()
             for t in times.iloc[:_ROWS_SHOWN]]
    more = f" (+{len(times) - _ROWS_SHOWN} more)" if len(times) > _ROWS_SHOWN else ""
    return ", ".join(shown) + more


def _check_separate_time(found: list[str], frame: pd.DataFrame, time_col: str, uri: str) -> None:
    """Intraday bars with the time of day in a column of its own (`date, time, ...`): only
    `date` is read, so the bars of a day would share one time; refuse, saying how to join
    them. A daily file with a stray time column (dates do not repeat) loads as it is."""
    extra = next((c for c in found if str(c).strip().lower() == "time"), None)
    if time_col != "date" or extra is None or not frame.duplicated(["symbol", "date"]).any():
        return
    raise DataValidationError(
        f"{uri}: dates repeat within a symbol and the file has a separate {extra!r} column, "
        "which is not read: bars are timed by the `date` column alone; combine the two into "
        "one `date` column, e.g. df['date'] = pd.to_datetime(df['date'].astype(str) + ' ' "
        f"+ df[{extra!r}].astype(str))")


def not_parquet_files(dataset: ds.Dataset | None, fs: pafs.FileSystem | None = None,
                      files: Sequence[str] = ()) -> str:
    """The files of a Parquet directory (`dataset`'s, or `files` on `fs` when no dataset
    could be made of the directory) that are not Parquet (a README, a CSV copy: no `PAR1`
    magic at both ends), as text for an error; "" if there are none. Read on an error path
    only: pyarrow's own message may not name the file."""
    if dataset is not None:
        fs, files = dataset.filesystem, list(getattr(dataset, "files", []))
    elif fs is None:
        return ""
    if len(files) < 2:  # one file: pyarrow's message names it, and it may be no directory
        return ""
    bad = []
    for name in files:
        try:
            with fs.open_input_file(name) as f:
                size = f.size()
                head = f.read(4)
                f.seek(max(0, size - 4))
                tail = f.read(4)
        except OSError:
            bad.append(name)
            continue
        if size < 12 or head != b"PAR1" or tail != b"PAR1":
            bad.append(name)
    if not bad:
        return ""
    shown = ", ".join(bad[:_ROWS_SHOWN]) + (f" (+{len(bad) - _ROWS_SHOWN} more)"
                                             if len(bad) > _ROWS_SHOWN else "")
    return (f"; the directory is read as a Parquet dataset, and {shown} "
            f"{'is' if len(bad) == 1 else 'are'} not Parquet: move "
            f"{'it' if len(bad) == 1 else 'them'} out of the directory (or start the name "
            "with '_' or '.', which Parquet datasets skip)")


def _file_schemas(dataset: ds.Dataset, fs: pafs.FileSystem) -> Iterator[tuple[str, pa.Schema]]:
    """(file, its own schema) of each file of a Parquet dataset (read on an error path)."""
    for name in getattr(dataset, "files", []):
        yield name, pq.read_schema(name, filesystem=fs)


def _time_as_text(dataset: ds.Dataset, fs: pafs.FileSystem, time_col: str) -> bool:
    """Whether some file of `dataset` stores the time column as text (ISO strings, which
    the read parses; a window's pushed-down comparison cannot take them)."""
    return any(
        time_col in schema.names and (pa.types.is_string(t := schema.field(time_col).type)
                                      or pa.types.is_large_string(t))
        for _, schema in _file_schemas(dataset, fs))


def _schema_clash(dataset: ds.Dataset, fs: pafs.FileSystem, columns: list[str]) -> str:
    """Where a multi-file Parquet dataset's files disagree on a column's type (Arrow reads
    them all with the first file's schema), as text for an error; "" if they agree."""
    files = getattr(dataset, "files", [])
    if len(files) < 2:
        return ""
    first = dataset.schema
    for name, schema in _file_schemas(dataset, fs):
        for col in columns:
            if col in schema.names and col in first.names and (
                    schema.field(col).type != first.field(col).type):
                return (f"; the files disagree on column {col!r}: {first.field(col).type} in "
                        f"{files[0]}, {schema.field(col).type} in {name}; write every file "
                        "with the same column types")
    return ""


def split_spellings(available: Iterable[str], symbols: Sequence[str]) -> dict[str, str]:
    """symbol -> why, for each of `symbols` some of whose rows the file spells with spaces
    at either end ('AAPL ' beside 'AAPL', from `available`, the file's symbols): read by
    its exact spelling, it would get part of its history only."""
    errors = padded_symbol_errors(pd.Series(list(available), dtype=object), drop_hint=False)
    return {s: str(errors[s]) for s in symbols if s in errors and s == s.strip()}


def _check_padded_twins(available: Iterable[str], symbols: list[str], uri: str) -> None:
    """A requested symbol some of whose rows are spelled with spaces at either end ('AAPL '
    beside 'AAPL') would load with part of its history: raise, naming the spellings, for
    CSV and Parquet alike (a Parquet read pushes the exact spellings down). Callers that
    go on with the other symbols check `split_spellings` first. `data.validation` fails
    such symbols when every spelling is loaded."""
    hit = split_spellings(available, symbols)
    if hit:
        symbol, error = next(iter(hit.items()))
        raise DataValidationError(f"{uri}: {error}", symbol=symbol)


def _no_rows_message(uri: str, time_col: str, missing: list[str], window: str) -> str:
    """Why `missing` have no rows: not in the file (with near spellings and where to list
    the file's symbols), or in it but outside the date window (with their span)."""
    absent = missing
    parts = []
    if window:
        try:
            frame = _load(uri, lambda found: ["symbol", time_col], time_col, None, None, None)
        except ValueError:
            frame = None
        if frame is not None:
            inside = frame[frame["symbol"].isin(missing)]
            absent = [s for s in missing if s not in set(inside["symbol"])]
            present = [s for s in missing if s not in absent]
            if present:
                first, last = _when(inside[time_col].min()), _when(inside[time_col].max())
                parts.append(f"no rows for symbols {present}{window} (their rows run from "
                             f"{first} to {last}); choose start/end within that span")
    if absent:
        parts.insert(0, f"no rows for symbols {absent}{window if not parts else ''}"
                     + spelling_hint(absent, _file_symbols(uri))
                     + f"; list the available ones with `quantray data inspect {uri}`")
    return f"{uri}: " + "; and ".join(parts)


def _when(t: pd.Timestamp) -> str:
    return str(t.date()) if t == t.normalize() else str(t)


def _file_symbols(uri: str) -> list[str]:
    try:
        return list_symbols(uri)
    except (ValueError, OSError):
        return []


def spelling_hint(missing: Sequence[str], found: Iterable[str]) -> str:
    """For an error: the file's symbols (`found`) that differ from a missing one only by
    spaces at either end or by case ('AAPL ' or 'aapl' for 'AAPL'), as text; "" when there
    are none. Symbols are matched exactly, and a padded one looks like the plain ticker in
    a list."""
    key = {s.strip().upper() for s in missing}
    near = [s for s in found if s.strip().upper() in key and s not in missing]
    if not near:
        return ""
    return (f"; the file spells {', '.join(map(repr, near[:_NEAR_SHOWN]))}"
            f"{' (+more)' if len(near) > _NEAR_SHOWN else ''}: symbols match exactly, "
            "case and spaces included")


_NEAR_SHOWN = 5


def _window_text(start: TimeBound, end: TimeBound) -> str:
    if start is None and end is None:
        return ""
    if end is None:
        return f" from {start} on"
    return f" up to {end}" if start is None else f" between {start} and {end}"


def _span(uri: str, time_col: str, symbols: Sequence[str] | None) -> tuple[str, str] | None:
    """First and last time of `symbols` (all when None) in `uri`, for an error message;
    None when they have no rows at all."""
    try:
        frame = _load(uri, lambda found: ["symbol", time_col], time_col, None, None, None)
    except ValueError:
        return None
    if symbols is not None:
        frame = frame[frame["symbol"].isin(symbols)]
    if frame.empty:
        return None
    times = frame[time_col]
    fmt = (lambda t: str(t.date())) if (times.dt.normalize() == times).all() else str
    return fmt(times.min()), fmt(times.max())


def build_filter(
    schema: pa.Schema,
    time_col: str,
    symbols: Sequence[str] | None,
    lo: pd.Timestamp | None,
    hi: pd.Timestamp | None,
) -> ds.Expression | None:
    """The pushdown expression for a symbol list and the half-open time range [lo, hi), or
    None when nothing filters. Time bounds are left out when the column type has no order
    that matches time (e.g. strings); `_load` then filters in memory. Rows without a symbol
    pass the symbol filter: the loader refuses the file for them, whichever symbols are
    asked for (such a row may be a day of any of them)."""
    parts = []
    if symbols is not None:
        sym_type = schema.field("symbol").type
        if pa.types.is_dictionary(sym_type):
            sym_type = sym_type.value_type
        values = list(symbols)
        if pa.types.is_integer(sym_type):  # numeric codes: the symbols that spell a number
            values = [int(v) for v in values  # as the column reads back ("0700" is not 700)
                      if re.fullmatch(r"-?[0-9]{1,18}", v) and str(int(v)) == v]
        parts.append(ds.field("symbol").isin(pa.array(values, type=sym_type))
                     | ds.field("symbol").is_null())
    ttype = schema.field(time_col).type
    # a zoned column's dates read as local dates (`to_datetime_column`), up to 14 h from
    # the UTC instants the pushdown compares: a day wider here, exact in `_load`
    slack = pd.Timedelta(days=1) if getattr(ttype, "tz", None) else pd.Timedelta(0)
    for bound, op in ((lo, "ge"), (hi, "lt")):
        if bound is None:
            continue
        scalar = _time_scalar(bound - slack if op == "ge" else bound + slack, ttype)
        if scalar is not None:
            field = ds.field(time_col)  # rows without a time stay, for validation to fail
            parts.append(((field >= scalar) if op == "ge" else (field < scalar))
                         | field.is_null())
    if not parts:
        return None
    expr = parts[0]
    for part in parts[1:]:
        expr = expr & part
    return expr


def _time_scalar(bound: pd.Timestamp, ttype: pa.DataType) -> pa.Scalar | None:
    if pa.types.is_timestamp(ttype):
        # column values are whole multiples of its unit, so rounding the bound up to the unit
        # keeps `>= lo` and `< hi` exact and makes the cast lossless
        ceiled = bound.ceil(pd.Timedelta(1, ttype.unit))
        return pa.scalar(ceiled.value, type=pa.timestamp("ns", tz=ttype.tz)).cast(ttype)
    if pa.types.is_date(ttype):
        # [lo, hi) on dates: a partial day at hi still needs that day's rows
        day = bound.date() if bound == bound.normalize() else bound.date() + dt.timedelta(1)
        return pa.scalar(day, type=pa.date32()).cast(ttype)
    return None


def _check_symbols(symbols: Sequence[str] | None) -> list[str] | None:
    if symbols is None:
        return None
    if isinstance(symbols, str):
        raise TypeError(f"symbols must be a list of tickers, got the string {symbols!r}; "
                        f"pass [{symbols!r}] or {symbols.split(',')!r}")
    symbols = list(symbols)
    bad = [s for s in symbols if not isinstance(s, str) or not s.strip()]
    if not symbols or bad:
        raise ValueError(f"symbols must be a non-empty list of non-empty strings, got {symbols}")
    return symbols


def time_bounds(
    start: TimeBound, end: TimeBound
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """Inclusive [start, end] as half-open [lo, hi); a date-only end covers its whole day."""
    lo = None if start is None else _timestamp(start, "start")
    hi = None
    if end is not None:
        hi = _timestamp(end, "end")
        date_only = (isinstance(end, dt.date) and not isinstance(end, dt.datetime)) or (
            isinstance(end, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", end.strip())
        )
        hi = hi + pd.Timedelta(days=1) if date_only else hi + pd.Timedelta(1, "ns")
    if lo is not None and hi is not None and lo >= hi:
        raise ValueError(f"start {start} is after end {end}; swap them")
    return lo, hi


def _timestamp(value: TimeBound, name: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}={value!r} is not a date; use e.g. 2018-02-07") from exc
    if ts is pd.NaT:
        raise ValueError(f"{name}={value!r} is not a date; use e.g. 2018-02-07")
    return ts.tz_convert("UTC").tz_localize(None) if ts.tz is not None else ts


def _locate(uri: str) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path, "parquet" | "csv"); a missing path raises naming the URI."""
    fs, path = resolve_uri(uri)
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise OSError(f"{exc}{_plain_http_hint(uri, exc)}") from exc
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"dataset not found: {uri}")
    if info.type == pafs.FileType.Directory:
        return fs, path, "parquet"
    name = path.lower()
    if name.endswith(_PARQUET):
        return fs, path, "parquet"
    if name.endswith(_CSV):
        return fs, path, "csv"
    raise ValueError(
        f"{uri}: unknown file type; use {', '.join(_PARQUET + _CSV)} or a directory of Parquet"
    )


def _plain_http_hint(uri: str, exc: BaseException) -> str:
    """For a TLS failure against an `endpoint_override` given without a scheme (pyarrow
    then speaks https): how to name a plain-http endpoint (MinIO, moto on a laptop)."""
    from urllib.parse import parse_qs, urlsplit

    query = parse_qs(urlsplit(uri).query)
    endpoint = (query.get("endpoint_override") or [""])[0]
    if "ssl" not in str(exc).lower() or not endpoint or "://" in endpoint \
            or "scheme" in query:  # fmt: skip
        return ""
    return (f"; the endpoint {endpoint} was asked over https: for a plain-http endpoint "
            f"write endpoint_override=http://{endpoint} (or add &scheme=http)")


def parquet_dataset(fs: pafs.FileSystem, path: str, uri: str) -> ds.Dataset:
    """The Parquet file or directory (hive partitions read as columns). A `symbol=`
    partition key is text, as tickers are: Arrow would infer `symbol=0700/` as the integer
    700 when every partition looks numeric."""
    try:
        dataset = ds.dataset(path, filesystem=fs, format="parquet", partitioning="hive")
        keys = getattr(dataset, "partitioning", None)
        is_dir = keys is not None and fs.get_file_info(path).type == pafs.FileType.Directory
        keys = keys.schema if is_dir else pa.schema([])
        if "symbol" in keys.names and pa.types.is_integer(keys.field("symbol").type):
            text = pa.schema([f.with_type(pa.string()) if f.name == "symbol" else f
                              for f in keys])  # fmt: skip
            dataset = ds.dataset(path, filesystem=fs, format="parquet",
                                 partitioning=ds.HivePartitioning.discover(schema=text))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        files = _files(fs, path)  # one listing for both hints
        csv = [name for name in files if name.lower().endswith(_CSV)]
        if csv and len(csv) == len(files):
            raise ValueError(
                f"{uri}: a directory is read as a Parquet dataset, and it holds CSV files "
                f"(e.g. {csv[0]}), which are not read from a directory: concatenate them into "
                "one .csv/.csv.gz file, or convert them to Parquet") from exc
        both = ("; a column is both in the files and in the folder names (key=value): "
                "write the files without it" if isinstance(exc, pa.ArrowTypeError) else "")
        stray = not_parquet_files(None, fs, [f"{path.rstrip('/')}/{n}" for n in files])
        raise ValueError(f"{uri}: not a readable Parquet file or dataset ({exc}){stray}"
                         f"{both}") from exc
    if not dataset.files:
        raise FileNotFoundError(f"{uri}: directory holds no Parquet files")
    if "symbol" in keys.names:
        _check_symbol_folders(dataset, fs, uri)
    return dataset


def _check_symbol_folders(dataset: ds.Dataset, fs: pafs.FileSystem, uri: str) -> None:
    """Files in `symbol=X/` folders that keep their own `symbol` column must hold X only:
    Arrow reads the folder's value in place of the file's, so another symbol's rows would
    be relabelled X. Files without the column (as pandas and Spark write partitions) cost
    nothing here: the first file's schema tells which layout it is."""
    if "symbol" not in pq.read_schema(dataset.files[0], filesystem=fs).names:
        return
    for fragment in dataset.get_fragments():
        folder = ds.get_partition_keys(fragment.partition_expression).get("symbol")
        try:
            own = pq.read_table(fragment.path, filesystem=fs, columns=["symbol"])["symbol"]
        except (KeyError, pa.ArrowInvalid):  # this file has no symbol column: the folder's
            continue
        values = sorted({_symbol_text(v, uri) for v in pc.unique(own).to_pylist()
                         if v is not None})  # fmt: skip
        if folder is not None and values and values != [str(folder)]:
            raise DataValidationError(
                f"{uri}: {fragment.path} is in the folder symbol={folder}, but its own "
                f"'symbol' column holds {values[:_ROWS_SHOWN]}: the folder's name would "
                "relabel its rows; move the file to its symbol's folder, or write it without "
                "the 'symbol' column")


def _files(fs: pafs.FileSystem, path: str) -> list[str]:
    """The files under directory `path` (names relative to it) that a Parquet dataset
    reads (not those starting with '_' or '.'), [] for a file."""
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted(i.path[len(path):].lstrip("/") for i in infos if i.type == pafs.FileType.File
                  and not i.base_name.startswith(("_", ".")))


def csv_compression(path: str) -> str | None:
    """gzip for a `.gz` name in any case: pyarrow's "detect" reads only a lower-case `.gz`,
    and a `DATA.CSV.GZ` that the name check let in was read as plain text."""
    return "gzip" if path.lower().endswith(".gz") else None


def _read_csv(fs: pafs.FileSystem, path: str, uri: str, usecols: list[str] | None,
              kind: str | None = None) -> pd.DataFrame:
    """Whole CSV through the filesystem (gzip detected from the name); symbols stay text.
    The header is checked first (pandas' own error names no file): against `kind`'s
    columns when given, then against `usecols`."""
    try:
        with fs.open_input_stream(path, compression=csv_compression(path)) as stream:
            header = list(pd.read_csv(stream, nrows=0).columns)
        if kind is not None:
            check_kind(header, kind, uri)
        if usecols is not None:
            check_columns(header, usecols, uri)
        # Tickers such as NA (National Bank of Canada) or NULL are text, not missing
        # values: pandas' NA strings apply to the other columns, and only an empty field
        # is a missing symbol.
        na_values = {c: list(STR_NA_VALUES) for c in header if c != "symbol"}
        na_values["symbol"] = [""]
        with fs.open_input_stream(path, compression=csv_compression(path)) as stream:
            return pd.read_csv(stream, usecols=usecols, dtype={"symbol": str},
                               keep_default_na=False, na_values=na_values)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{uri}: not a readable CSV file ({exc})") from exc
