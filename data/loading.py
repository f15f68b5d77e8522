"""Read bars and LOB snapshots from CSV or Parquet, local or object storage.

The format comes from the URI: `.parquet`/`.pq` (one file), a directory (a Parquet dataset,
hive partitions such as `symbol=AAPL/` allowed), `.csv` or `.csv.gz`. `sample:NAME` names a
bundled sample (see `data.sample`). Parquet reads go through `pyarrow.dataset` with the
symbol/time filter as a filter expression, so row groups whose statistics exclude the
requested symbols and dates are never read (predicate pushdown). CSV has no statistics:
it is read whole and filtered in memory.

Time bounds are inclusive. A bound given as a plain date (`"2018-02-07"` or a
`datetime.date`) covers that whole day, which matters for intraday `ts` columns.

Loading checks structure only (file, columns, date parsing); values are checked by
`data.validation`. One exception: a CSV read for some symbols refuses a requested symbol
whose rows are partly spelled with spaces at either end ('AAPL ' beside 'AAPL'), which
would otherwise load with part of its history.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

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
    DataValidationError,
    check_columns,
    lob_columns,
    padded_symbol_errors,
    to_datetime_column,
)

TimeBound = str | dt.date | pd.Timestamp | None
_PARQUET = (".parquet", ".pq")
_CSV = (".csv", ".csv.gz")


def load_bars(
    uri: str,
    symbols: Sequence[str] | None = None,
    start: TimeBound = None,
    end: TimeBound = None,
) -> pd.DataFrame:
    """Long bars frame `symbol, date, open, high, low, close, volume` (date datetime64[ns]),
    sorted by (symbol, date)."""
    return _load(uri, lambda found: list(BAR_COLUMNS), "date", symbols, start, end)


def load_lob(
    uri: str,
    symbols: Sequence[str] | None = None,
    start: TimeBound = None,
    end: TimeBound = None,
) -> pd.DataFrame:
    """Long LOB frame `symbol, ts, ask_price_1..L, ask_size_1..L, bid_price_1..L,
    bid_size_1..L` with the number of levels L detected from the columns."""
    return _load(uri, lambda found: lob_columns(found, uri), "ts", symbols, start, end)


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
        _check_kind(dataset.schema.names, kind, uri)
    check_columns(dataset.schema.names, ["symbol"], uri)
    values = pc.unique(dataset.to_table(columns=["symbol"])["symbol"])
    return sorted(str(v) for v in values.to_pylist() if v is not None)  # codes such as 7203


def _check_kind(found: list[str], kind: str, uri: str) -> None:
    if kind == "lob":
        lob_columns(found, uri)
    elif kind == "bars":
        check_columns(found, BAR_COLUMNS, uri)
    else:
        raise ValueError(f"kind={kind!r}: use 'bars' or 'lob'")


def _load(uri, columns_for, time_col, symbols, start, end) -> pd.DataFrame:
    symbols = _check_symbols(symbols)
    lo, hi = time_bounds(start, end)
    fs, path, kind = _locate(uri)
    if kind == "csv":
        frame = _read_csv(fs, path, uri, None)
        found = list(frame.columns)
        columns = columns_for(frame.columns)
        check_columns(frame.columns, columns, uri)
        frame = frame.loc[:, columns]
        frame[time_col] = to_datetime_column(frame[time_col], time_col, uri)
        if symbols is not None:
            _check_padded_twins(frame["symbol"], symbols, uri)
            frame = frame[frame["symbol"].isin(symbols)]
    else:
        dataset = parquet_dataset(fs, path, uri)
        found = list(dataset.schema.names)
        columns = columns_for(dataset.schema.names)
        check_columns(dataset.schema.names, columns, uri)
        expr = build_filter(dataset.schema, time_col, symbols, lo, hi)
        try:
            table = dataset.to_table(columns=columns, filter=expr)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ValueError(f"{uri}: {exc}{_schema_clash(dataset, fs, columns)}") from exc
        frame = table.to_pandas()
        frame[time_col] = to_datetime_column(frame[time_col], time_col, uri)
    if isinstance(frame["symbol"].dtype, pd.CategoricalDtype):  # a pandas category saved
        frame["symbol"] = frame["symbol"].astype(object)  # to Parquet: plain strings
    if pd.api.types.is_integer_dtype(frame["symbol"]):  # numeric codes (7203, 600519) in
        sym = frame["symbol"]  # Parquet: text, as tickers are (and as CSV reads them)
        frame["symbol"] = sym.astype("string").astype(object).where(sym.notna(), None)
    # exact bounds in pandas too: pushdown is an optimisation (a string-typed time column
    # cannot be pushed down), and correctness must not depend on it
    if lo is not None:
        frame = frame[frame[time_col] >= lo]
    if hi is not None:
        frame = frame[frame[time_col] < hi]
    window = _window_text(start, end)
    if symbols is not None:
        missing = sorted(set(symbols) - set(frame["symbol"].unique()))
        if missing:
            span = _span(uri, time_col, missing) if window else None
            raise ValueError(
                f"{uri}: no rows for symbols {missing}{window}"
                + (f" (their rows run from {span[0]} to {span[1]})" if span else "")
                + _spelling_hint(uri, missing)
                + f"; list the available ones with `quantray data inspect {uri}`"
            )
    if len(frame) == 0:
        span = _span(uri, time_col, None) if window else None
        raise ValueError(f"{uri}: the file has no rows{window}"
                         + (f" (its rows run from {span[0]} to {span[1]})" if span else "")
                         + "; check the file and the start/end dates")
    _check_separate_time(found, frame, time_col, uri)
    frame = frame.sort_values(["symbol", time_col], kind="stable")
    return frame.reset_index(drop=True)


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


def _schema_clash(dataset: ds.Dataset, fs: pafs.FileSystem, columns: list[str]) -> str:
    """Where a multi-file Parquet dataset's files disagree on a column's type (Arrow reads
    them all with the first file's schema), as text for an error; "" if they agree."""
    files = getattr(dataset, "files", [])
    if len(files) < 2:
        return ""
    first = dataset.schema
    for name in files:
        schema = pq.read_schema(name, filesystem=fs)
        for col in columns:
            if col in schema.names and col in first.names and (
                    schema.field(col).type != first.field(col).type):
                return (f"; the files disagree on column {col!r}: {first.field(col).type} in "
                        f"{files[0]}, {schema.field(col).type} in {name}; write every file "
                        "with the same column types")
    return ""


def _check_padded_twins(column: pd.Series, symbols: list[str], uri: str) -> None:
    """A requested symbol some of whose rows are spelled with spaces at either end ('AAPL '
    beside 'AAPL') would load with part of its history: raise, naming the spellings (the
    whole file is in memory for a CSV, so this costs no read). `data.validation` fails
    such symbols when every spelling is loaded."""
    errors = padded_symbol_errors(column.dropna(), drop_hint=False)
    hit = [s for s in symbols if s in errors and s == s.strip()]
    if hit:
        error = errors[hit[0]]
        raise DataValidationError(f"{uri}: {error}", symbol=error.symbol)


def _spelling_hint(uri: str, missing: Sequence[str]) -> str:
    """For an error: the file's symbols that differ from a missing one only by spaces at
    either end or by case ('AAPL ' or 'aapl' for 'AAPL'), as text; "" when there are none.
    Symbols are matched exactly, and a padded one looks like the plain ticker in a list."""
    try:
        found = list_symbols(uri)
    except (ValueError, OSError):
        return ""
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
    that matches time (e.g. strings); `_load` then filters in memory."""
    parts = []
    if symbols is not None:
        sym_type = schema.field("symbol").type
        if pa.types.is_dictionary(sym_type):
            sym_type = sym_type.value_type
        values = list(symbols)
        if pa.types.is_integer(sym_type):  # numeric codes: the symbols that spell a number
            values = [int(v) for v in values  # as the column reads back ("0700" is not 700)
                      if re.fullmatch(r"-?[0-9]{1,18}", v) and str(int(v)) == v]
        parts.append(ds.field("symbol").isin(pa.array(values, type=sym_type)))
    ttype = schema.field(time_col).type
    for bound, op in ((lo, "ge"), (hi, "lt")):
        if bound is None:
            continue
        scalar = _time_scalar(bound, ttype)
        if scalar is not None:
            field = ds.field(time_col)
            parts.append(field >= scalar if op == "ge" else field < scalar)
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
    info = fs.get_file_info(path)
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
    except (pa.ArrowInvalid, OSError) as exc:
        csv = _csv_files(fs, path)
        if csv:
            raise ValueError(
                f"{uri}: a directory is read as a Parquet dataset, and it holds CSV files "
                f"(e.g. {csv[0]}), which are not read from a directory: concatenate them into "
                "one .csv/.csv.gz file, or convert them to Parquet") from exc
        raise ValueError(f"{uri}: not a readable Parquet file or dataset ({exc})") from exc
    if not dataset.files:
        raise FileNotFoundError(f"{uri}: directory holds no Parquet files")
    return dataset


def _csv_files(fs: pafs.FileSystem, path: str) -> list[str]:
    """The CSV files under directory `path` (names relative to it), [] for a file."""
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted(i.path[len(path):].lstrip("/") for i in infos
                  if i.type == pafs.FileType.File and i.base_name.lower().endswith(_CSV))


def _read_csv(fs: pafs.FileSystem, path: str, uri: str, usecols: list[str] | None,
              kind: str | None = None) -> pd.DataFrame:
    """Whole CSV through the filesystem (gzip detected from the name); symbols stay text.
    The header is checked first (pandas' own error names no file): against `kind`'s
    columns when given, then against `usecols`."""
    try:
        with fs.open_input_stream(path, compression="detect") as stream:
            header = list(pd.read_csv(stream, nrows=0).columns)
        if kind is not None:
            _check_kind(header, kind, uri)
        if usecols is not None:
            check_columns(header, usecols, uri)
        # Tickers such as NA (National Bank of Canada) or NULL are text, not missing
        # values: pandas' NA strings apply to the other columns, and only an empty field
        # is a missing symbol.
        na_values = {c: list(STR_NA_VALUES) for c in header if c != "symbol"}
        na_values["symbol"] = [""]
        with fs.open_input_stream(path, compression="detect") as stream:
            return pd.read_csv(stream, usecols=usecols, dtype={"symbol": str},
                               keep_default_na=False, na_values=na_values)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{uri}: not a readable CSV file ({exc})") from exc
