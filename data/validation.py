"""Validation and repair of bar and LOB frames, with a report of everything done.

Policy (bars, `validate_bars`)
- Frame-level errors always raise `DataValidationError`: missing columns, an empty frame,
  a price/volume column that is not numeric, a date that does not parse or is a number
  (20130208 or epoch seconds would silently read as nanoseconds since 1970) or carries a
  zone name pandas does not know (`09:30 EST`: it would read as UTC), is written day and
  month first with no value that tells which comes first (01/03/2021 .. 12/03/2021: pandas
  reads them month-first; a field over 12 in any value proves the order of the column,
  which is then read in it: `_day_month_as_iso`), or is zoned and, for one symbol, mostly
  at local midnight but not all (daily bars and a live, partial bar: `_zone_free`), a row
  without a symbol. These mean the file is not a bars file, so no symbol can be trusted.
- Per-symbol errors raise with `on_error="raise"`; with `on_error="drop"` the symbol is
  removed and its error message kept in `report.dropped[symbol]`. Checked in this order
  (the first hit is the reason): spaces at either end of the symbol (`'AAPL '`; its plain
  twin `'AAPL'` fails too, its history being split), missing date (named by its row in
  the file when `data.loading` read it: `UNTIMED_ROWS`), duplicate (symbol,
  date) (the message tells exact copies from rows that differ, and names the daylight-
  saving hour when every repeated time is one), NaN close,
  infinite price or volume, non-positive open/high/low/close, a price above `MAX_PRICE`
  (1e15: a wrong unit, a parse error or a placeholder), missing or negative volume,
  more than 1% of rows missing open/high/low, a bad print (an open or close more than
  `MAX_OUTSIDE_RANGE` (25%) outside the day's [low, high]), a close that never changes (no
  returns to learn from), fewer than `min_rows` rows.
- Repairs, counted per symbol in `report.repairs[symbol]`:
  - `sorted`: rows out of date order are sorted (count = rows that moved);
  - `open_filled`: a missing open takes the previous close (the first row: its own close);
  - `high_low_filled`: a missing high becomes max(open, close), a missing low min(open, close);
  - `bracket_widened`: high/low that do not bracket open and close (by at most 25%: more is
    a bad print, an error above) are widened to max(high, open, close) / min(low, open,
    close);
  - `zero_volume`: zero-volume rows are legal and kept unchanged, only counted.
  At most `MAX_FILL_FRACTION` (1%) of a symbol's rows may miss open/high/low; more is an
  error, because filled bars would then shape the features instead of the market.
- Warnings, in `report.gaps[symbol]` (kept symbols; the symbol is not changed): gaps
  between consecutive bars longer than max(`GAP_MEDIANS` (10) x the symbol's median
  spacing, `MIN_GAP` (10 days)): a count and the first few, with their dates. Weekends and
  holidays of daily bars, nights and weekends of intraday bars, and weekly bars stay
  under that limit; a month of missing daily rows does not, and an h-bar label or a
  rolling feature across it would span the whole hole as if it were one bar. Intraday
  bars (median spacing under a day) also warn of a gap that misses at least
  max(`SESSION_GAP_BARS` (2) x the spacing, `SESSION_GAP_HOURS` (1 hour)) of the symbol's
  usual trading time, learned from its own bars per slot of the week (`data.sessions`):
  a missing weekday or a few missing hours inside a session, but not nights, weekends,
  NYSE holidays and early closes (another exchange's holidays do count); such a symbol's
  entry adds "limit_hours" and each gap's "missing_hours".
  And in `report.splits[symbol]`: bars whose open and close both moved by a split's price
  ratio (x1/k or xk, k in `SPLIT_RATIOS`, within `SPLIT_TOLERANCE`) against the previous
  close: prices perhaps not adjusted for a split. And in `report.jumps[symbol]`: other bars
  whose close moved by a factor of `JUMP_FACTOR` (9.5) or more either way against the
  previous close: a split past 10:1 (20:1, 50:1) or a change of unit (pence to pounds)
  left in the prices, or, with as large a move back on the next bar, a bad tick (a one-bar
  spike). And in `report.stale[symbol]`: runs of
  bars without a trade (volume 0, open = high = low = close, one price throughout: a halt,
  or a feed that repeats the last price) of at least max(`STALE_BARS` (10), `STALE_SHARE`
  (1%) of the symbol's bars), whose labels are all flat. And in `report.flat[symbol]`:
  runs of one close with volume traded (a feed that repeats the last price with volume,
  a suspended or pegged quote; a run with no trade at all is `stale`'s) of at least
  max(`FLAT_BARS` (20), 1% of the symbol's bars) bars over `FLAT_DAYS` (5) calendar days or
  more, whose labels are all flat as well.
- The result holds exactly the contract columns, sorted by (symbol, date), index reset,
  dates as datetime64[ns] (tz-aware input converted to naive UTC, except a symbol's
  times all at local midnight: daily bars keep their local dates), prices float64.

LOB frames (`validate_lob`) follow the same scheme with columns `symbol, ts` and
`{ask,bid}_{price,size}_{1..L}`: errors are missing ts, duplicate (symbol, ts), too few
rows, and more than `MAX_FILL_FRACTION` (1%) of a symbol's snapshots faulty, a faulty
snapshot being one with a NaN or a non-positive price or size (an empty level), a crossed
book (best bid >= best ask) or book levels out of order (ask prices falling or bid prices
rising with the level). Repairs: sorting by ts (`sorted`), and dropping the faulty
snapshots of a symbol that has at most 1% of them (`snapshots_dropped`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Collection, Iterable, Sequence

import numpy as np
import pandas as pd
from pandas._libs.parsers import STR_NA_VALUES

from data.sessions import missed_trading_time
from data.validation_report import (
    BAR_REPAIRS,
    FLAT_BARS,
    FLAT_DAYS,
    GAP_MEDIANS,
    JUMP_FACTOR,
    LOB_REPAIRS,
    MIN_GAP_DAYS,
    SESSION_GAP_BARS,
    SESSION_GAP_HOURS,
    STALE_BARS,
    STALE_SHARE,
    ValidationReport,
)
from data.wording import counted

PRICE_COLUMNS = ("open", "high", "low", "close")
BAR_COLUMNS = ("symbol", "date", *PRICE_COLUMNS, "volume")
LOB_FAMILIES = ("ask_price", "ask_size", "bid_price", "bid_size")
MAX_FILL_FRACTION = 0.01
# An open or close beyond the day's [low, high] by more than this fraction (p > 1.25 x high
# or p < low / 1.25) is a bad print. On the shared S&P file (12 unbracketed rows) the real
# quirks lie within 9% of their range (WRK 2016-05-13 close 8.9% below its low, SPG
# 2014-05-28 5.5%, the rest under 5%), while the two bad prints are ~2x off (LNT
# 2016-05-19 close 17.87 for a low of 35.085, CHD 2014-05-19 open 18.77 for 33.695).
MAX_OUTSIDE_RANGE = 0.25
# A price above this is refused: the highest share prices are about 1e6 (BRK.A) and
# hyperinflation quotes about 1e12, so it is a wrong unit, a parse error or a placeholder
# (9.99e307); the features also square price moves, which overflow float64 past ~1e154.
MAX_PRICE = 1e15
# a gap between bars over GAP_MEDIANS x the symbol's median spacing and over MIN_GAP is a
# warning (report.gaps); the numbers live in data.validation_report, whose message quotes them
MIN_GAP = pd.Timedelta(days=MIN_GAP_DAYS)
# A bar whose open and close, against the previous close, both lie within SPLIT_TOLERANCE
# of 1/k or k (k in SPLIT_RATIOS) is a warning (report.splits): prices not adjusted for a
# k:1 split or a 1:k reverse split. On the shared S&P file it flags DISCA and DISCK on
# 2014-08-07 (Discovery's 2-for-1 split of August 2014; x0.49 at the close, x0.51/0.52 at
# the open) and nothing else: its other drops of over 25% (spin-offs such as EBAY x0.43 and
# NI x0.37, crashes such as CHK x0.67) are on no such ratio.
SPLIT_RATIOS = (2, 3, 4, 5, 6, 7, 8, 10)
SPLIT_TOLERANCE = 0.05
# the ratios a jump past 10 (report.jumps) is named by, when within SPLIT_TOLERANCE: splits
# seen in large caps (20:1 AMZN and GOOGL 2022, 50:1 CMG 2024) and units (x100: pence)
JUMP_RATIOS = (10, 15, 20, 25, 30, 40, 50, 100, 1000)
# zones whose daylight-saving fall-back hour explains duplicate local times (an error hint)
DST_ZONES = ("America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/London",
             "Europe/Berlin", "Australia/Sydney")
ON_ERROR = ("raise", "drop")
_SHOW = 5  # offending rows quoted in a message
_DROP_FIX = "or pass on_error='drop' to skip this symbol"
# a time of day's UTC offset: 09:30Z, 09:30:00+09:00, 09:30:00.5-0500 (not 03-12-2021)
_OFFSET = r"\d:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"
# a date written day and month first, year last (01/03/2021, 1.3.2021 09:30, 03-15-21):
# `_day_month_as_iso`
_DAY_MONTH = re.compile(r"^\s*(?P<a>\d{1,2})(?P<sep>[/.-])(?P<b>\d{1,2})(?P=sep)"
                        r"(?P<year>\d{4}|\d{2})(?!\d)(?P<rest>.*)$", re.DOTALL)

__all__ = [
    "BAR_COLUMNS",
    "BAR_REPAIRS",
    "LOB_REPAIRS",
    "SORTED_ROWS",
    "UNTIMED_ROWS",
    "DataValidationError",
    "ValidationReport",
    "check_columns",
    "lob_columns",
    "numeric_columns",
    "padded_symbol_errors",
    "validate_bars",
    "validate_lob",
]


class DataValidationError(ValueError):
    """Bad input data. `symbol` is None for frame-level errors; `rows` lists the dates of the
    offending rows (or input row positions when the date itself is missing), or None."""

    def __init__(self, message: str, symbol: str | None = None, rows: list | None = None):
        super().__init__(message)
        self.symbol = symbol
        self.rows = rows

    def __reduce__(self):  # keep symbol/rows when pickled across processes (Ray)
        return (type(self), (str(self), self.symbol, self.rows))


# other names of the contract columns, as other tools write them (lower case, stripped)
COLUMN_ALIASES = {"symbol": ("ticker", "name"), "date": ("datetime", "timestamp"),
                  "close": ("adj close", "adj_close", "adjclose", "adjusted close")}


def check_columns(found: Iterable[str], required: Sequence[str], source: str) -> None:
    """Raise naming every missing column at once, the columns found, and what to do for
    each: a rename (case, spaces, a known other name such as `ticker`), a column to add
    (`symbol` for a one-symbol file, `volume` = 0 for a series without volume)."""
    found = [str(c) for c in found]
    missing = [c for c in required if c not in found]
    if not missing:
        return
    sep = next((s for s in (";", "\t", "|") if len(found) == 1 and s in found[0]), None)
    renames = {r: c for r in missing for c in found if c.strip().lower() == r and c != r}
    cased = bool(renames)
    spelled = {c.strip().lower(): c for c in reversed(found)}  # the first spelling of each
    for r in (r for r in missing if r not in renames):  # the aliases' order: Ticker, Name
        alias = next((a for a in COLUMN_ALIASES.get(r, ()) if a in spelled), None)
        if alias is not None:
            renames[r] = spelled[alias]
    hints = []
    if renames:
        hints.append("rename " + ", ".join(f"{c!r} -> {r!r}" for r, c in renames.items())
                     + (" (column names are case- and whitespace-sensitive)" if cased else ""))
        if renames.get("close", "close").strip().lower() != "close":
            hints.append(f"{renames['close']!r} as the close: adjust open, high and low the "
                         "same way (or the bars will not bracket it)")
    if sep:  # one unsplit header: nothing is known about its columns
        hints = []
    elif "symbol" in missing and "symbol" not in renames:
        hints.append("there is no symbol column: add one, e.g. df['symbol'] = 'AAPL' for a "
                     "file of one symbol's bars")
    if "volume" in missing and "volume" not in renames and not sep:
        hints.append("there is no volume column: add one, with 0 for a series that has no "
                     "volume (an index, an FX rate), e.g. df['volume'] = 0")
    if sep or any(r not in renames and r not in ("symbol", "volume") for r in missing):
        hints.append(f"the file must have columns {list(required)}")
    # The other kind's file: that is the fix, and the renames and columns to add for
    # this kind would only mislead (an order-book file has no volume column to add).
    if "date" in missing and "ts" in found and any(c.startswith("ask_price_") for c in found):
        hints = ["these look like order-book snapshots: set `dataset.kind: lob` in the job "
                 "spec (`--kind lob` on the command line)"]
    elif "ts" in missing and "date" in found and "close" in found:
        hints = ["these look like bars: set `dataset.kind: bars` in the job spec (`--kind "
                 "bars` on the command line)"]
    hint = "".join(f"; {h}" for h in hints)
    if sep:
        hint += (f"; the header is one column holding {sep!r}: a CSV file must be "
                 "comma-separated; write it with ',' between fields")
    raise DataValidationError(f"{source}: missing columns {missing}; found {found}{hint}")


def lob_columns(found: Iterable[str], source: str) -> list[str]:
    """Contract column order `symbol, ts, ask_price_1..L, ask_size_1..L, bid_price_1..L,
    bid_size_1..L` for the levels L present in `found`; errors name gaps and mismatches."""
    found = [str(c) for c in found]
    levels: dict[str, set[int]] = {f: set() for f in LOB_FAMILIES}
    for col in found:
        m = re.fullmatch(r"(ask_price|ask_size|bid_price|bid_size)_(\d+)", col)
        if m:
            levels[m.group(1)].add(int(m.group(2)))
    n = max((max(v) for v in levels.values() if v), default=0)
    if n == 0:
        check_columns(found, ("symbol", "ts", *(f"{f}_1" for f in LOB_FAMILIES)), source)
    expected = [f"{f}_{k}" for f in LOB_FAMILIES for k in range(1, n + 1)]
    check_columns(found, ("symbol", "ts", *expected), source)
    return ["symbol", "ts", *expected]


def validate_bars(
    df: pd.DataFrame, *, min_rows: int | None = None, on_error: str = "raise"
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check and repair a long bars frame; see the module docstring for the policy."""
    frame, report, bad = _prepare(
        df, list(BAR_COLUMNS), "date", BAR_COLUMNS[2:], min_rows, on_error
    )
    report.kind = "bars"
    sym, close = frame["symbol"], frame["close"]
    prices = frame[list(PRICE_COLUMNS)]
    _flag(bad, frame, "date", close.isna(), "NaN close", "fill or remove these rows at the source")
    numbers = frame[[*PRICE_COLUMNS, "volume"]].to_numpy(dtype=np.float64)
    _flag(bad, frame, "date", pd.Series(np.isinf(numbers).any(axis=1), index=frame.index),
          "infinite prices or volume", "correct or remove these rows at the source")
    _flag(bad, frame, "date", prices.le(0).any(axis=1), "non-positive prices",
          "correct or remove these rows at the source")
    _flag(bad, frame, "date", prices.gt(MAX_PRICE).any(axis=1) & ~np.isinf(prices).any(axis=1),
          f"prices above {MAX_PRICE:g}, which no market quotes (a wrong unit, a parse error "
          "or a placeholder value?)", "correct the prices (their unit) at the source")
    _flag(bad, frame, "date", frame["volume"].isna(), "missing volume",
          "fill it at the source, with 0 for a series that has no volume (an index, an FX "
          "rate): zero volume is valid")
    _flag(bad, frame, "date", frame["volume"].lt(0), "negative volume",
          "correct or remove these rows at the source")
    gaps = frame[["open", "high", "low"]].isna().any(axis=1)
    n_gaps, n_rows = gaps.groupby(sym).sum(), sym.value_counts()
    for s in n_gaps.index[n_gaps > MAX_FILL_FRACTION * n_rows[n_gaps.index]]:
        if s not in bad:
            rows = list(frame.loc[gaps & sym.eq(s), "date"])
            verb = "misses" if n_gaps[s] == 1 else "miss"
            bad[s] = _error(s, f"{n_gaps[s]} of {counted(n_rows[s], 'row')} {verb} "
                            f"open/high/low (at most "
                            f"{MAX_FILL_FRACTION:.0%} are filled)", rows,
                            "fill them at the source or choose a cleaner date range")
    _flag_bad_prints(bad, frame)
    distinct = close.groupby(sym).nunique()
    for s in distinct.index[distinct.le(1)]:
        if s not in bad:
            what = ("has a single row" if n_rows[s] == 1
                    else f"the close is the same on all {n_rows[s]} rows")
            bad[s] = DataValidationError(
                f"symbol {s!r}: {what}, so there are no "
                f"returns to learn from; fix: check the source (a placeholder or stale series?), "
                f"{_DROP_FIX}", symbol=s, rows=None)
    _flag_min_rows(bad, frame, min_rows)
    frame = _resolve(frame, bad, on_error, report)
    sym, close = frame["symbol"], frame["close"]

    # repairs, on kept symbols only
    open_missing = frame["open"].isna()
    prev_close = frame.groupby(sym, sort=False)["close"].shift(1).fillna(close)
    frame["open"] = frame["open"].fillna(prev_close)
    hl_missing = frame["high"].isna() | frame["low"].isna()
    top, bottom = np.maximum(frame["open"], close), np.minimum(frame["open"], close)
    frame["high"] = frame["high"].fillna(top)
    frame["low"] = frame["low"].fillna(bottom)
    unbracketed = frame["high"].lt(top) | frame["low"].gt(bottom)
    frame["high"] = np.maximum(frame["high"], top)
    frame["low"] = np.minimum(frame["low"], bottom)
    counts = {
        "sorted": frame.pop("_moved"),
        "open_filled": open_missing,
        "high_low_filled": hl_missing,
        "bracket_widened": unbracketed,
        "zero_volume": frame["volume"].eq(0),
    }
    report.gaps = _long_gaps(frame, "date")
    prev = _previous_close(frame)
    report.splits, split_like = _split_like_moves(frame, prev)
    report.jumps = _big_moves(frame, prev, split_like)
    report.stale = _stale_runs(frame)
    report.flat = _flat_runs(frame)
    return _finish(frame, counts, report, df.attrs.get(SORTED_ROWS))


def validate_lob(
    df: pd.DataFrame, *, min_rows: int | None = None, on_error: str = "raise"
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check a long LOB snapshot frame and sort it by (symbol, ts); see the module docstring."""
    columns = lob_columns(df.columns, "LOB frame")
    values = columns[2:]
    frame, report, bad = _prepare(df, columns, "ts", values, min_rows, on_error)
    report.kind = "lob"
    block = frame[values]
    levels = sum(c.startswith("ask_price_") for c in values)
    asks = frame[[f"ask_price_{k}" for k in range(1, levels + 1)]].to_numpy()
    bids = frame[[f"bid_price_{k}" for k in range(1, levels + 1)]].to_numpy()
    out_of_order = (np.diff(asks, axis=1) < 0).any(axis=1) | (np.diff(bids, axis=1) > 0).any(axis=1)
    checks = [  # (faulty snapshots, what, fix), in the order errors are reported
        (block.isna().any(axis=1), "NaN prices or sizes",
         "fill or remove these snapshots at the source"),
        (block.le(0).any(axis=1), "non-positive prices or sizes",
         "remove empty book levels or use fewer levels"),
        (frame["bid_price_1"].ge(frame["ask_price_1"]), "crossed book (best bid >= best ask)",
         "remove crossed snapshots at the source"),
        (pd.Series(out_of_order, index=frame.index),
         "book levels out of order (ask prices must rise and bid prices fall with the level)",
         "check the level numbering of the price columns at the source"),
    ]  # fmt: skip
    # A few faulty snapshots (an empty level, a crossed book in a fast market) are dropped
    # and counted; more than MAX_FILL_FRACTION of a symbol's snapshots fail it.
    faulty = np.logical_or.reduce([mask.to_numpy() for mask, _, _ in checks])
    n_faulty = pd.Series(faulty, index=frame.index).groupby(frame["symbol"]).sum()
    n_rows = frame.groupby("symbol").size()
    too_many = frame["symbol"].isin(n_faulty.index[n_faulty > MAX_FILL_FRACTION * n_rows])
    for mask, what, fix in checks:
        _flag(bad, frame, "ts", mask & too_many, what,
              f"{fix} (over {MAX_FILL_FRACTION:.0%} of this symbol's snapshots are faulty in "
              f"all, counting every kind of fault; up to {MAX_FILL_FRACTION:.0%} are dropped)")
    dropped = n_faulty[(n_faulty > 0) & ~n_faulty.index.isin(bad.keys())]
    frame = frame[~(faulty & ~too_many.to_numpy())].reset_index(drop=True)
    _flag_min_rows(bad, frame, min_rows)
    frame = _resolve(frame, bad, on_error, report)
    frame, report = _finish(frame, {"sorted": frame.pop("_moved")}, report,
                            df.attrs.get(SORTED_ROWS))
    for symbol, n in dropped.items():
        if symbol not in report.dropped:
            report.repairs.setdefault(symbol, {})["snapshots_dropped"] = int(n)
    return frame, report


# ---- shared steps -------------------------------------------------------------------------


def _prepare(df, columns, time_col, numeric, min_rows, on_error):
    """Frame-level checks, type normalisation, sort; returns (frame, report, bad-by-symbol)."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if min_rows is not None and (isinstance(min_rows, bool) or int(min_rows) != min_rows
                                 or min_rows < 1):
        raise ValueError(f"min_rows must be a positive integer or None, got {min_rows!r}")
    check_columns(df.columns, columns, "frame")
    if len(df) == 0:
        raise DataValidationError("frame is empty: check the file, the symbols and start/end")
    frame = df.loc[:, columns].reset_index(drop=True)
    if isinstance(frame["symbol"].dtype, pd.CategoricalDtype):
        frame["symbol"] = frame["symbol"].astype(object)
    frame["_pos"] = np.arange(len(frame))
    if frame["symbol"].isna().any():
        pos = list(np.flatnonzero(frame["symbol"].isna()))
        one = len(pos) == 1
        raise DataValidationError(f"{counted(len(pos), 'row')} {'has' if one else 'have'} no "
                                  f"symbol (row position{'' if one else 's'} {_fmt(pos)}); "
                                  f"fill or remove {'it' if one else 'them'}", rows=pos)
    if not frame["symbol"].map(type).eq(str).all():
        example = frame["symbol"][~frame["symbol"].map(type).eq(str)].iloc[0]
        fix = ("decode it, e.g. df['symbol'] = df['symbol'].str.decode('utf-8')"
               if isinstance(example, bytes) else
               "read it as text (e.g. pd.read_csv(..., dtype={'symbol': str}))")
        raise DataValidationError(f"column 'symbol' must hold strings, found "
                                  f"{type(example).__name__} such as {example!r}; {fix}")
    frame[time_col] = to_datetime_column(frame[time_col], time_col, "frame", frame["symbol"])
    frame = numeric_columns(frame, numeric, "frame")
    report = ValidationReport(rows_in=len(frame), symbols_in=int(frame["symbol"].nunique()))
    # stable sort; `_moved` marks rows whose place inside their symbol changed
    before = frame.groupby("symbol", sort=False).cumcount()
    frame = frame.sort_values(["symbol", time_col], kind="stable", na_position="first")
    frame["_moved"] = frame.groupby("symbol", sort=False).cumcount().ne(before[frame.index])
    frame = frame.reset_index(drop=True)
    bad: dict[str, DataValidationError] = padded_symbol_errors(frame["symbol"])
    _flag_untimed(bad, frame, time_col, df.attrs.get(UNTIMED_ROWS, {}))
    same_time = frame.duplicated(["symbol", time_col], keep=False)
    copies = frame.duplicated(columns, keep=False)  # the same time and the same values
    # dropna=False: rows without a time (failed above) would otherwise leave NaN here
    conflict = same_time & ~copies.groupby([frame["symbol"], frame[time_col]],
                                           dropna=False).transform("all").astype(bool)
    for zone, symbols in _clock_turned_back(frame, time_col, same_time).items():
        _flag(bad, frame, time_col, same_time & frame["symbol"].isin(symbols),
              f"a duplicate (symbol, {time_col})",
              "each repeated time is in the hour that clocks repeat when daylight saving time "
              f"ends in {zone}: the times are local clock times without their UTC offset; "
              "write each with its offset (2021-11-07T01:30:00-04:00, then -05:00) or in UTC")
    _flag(bad, frame, time_col, conflict, f"a duplicate (symbol, {time_col})",
          "their values differ: keep the right row per time at the source")
    _flag(bad, frame, time_col, same_time, f"a duplicate (symbol, {time_col})",
          "they are exact copies (a file concatenated from overlapping downloads?): remove "
          "the copies at the source, e.g. df = df.drop_duplicates()")
    return frame, report, bad


def _clock_turned_back(frame: pd.DataFrame, time_col: str, same_time: pd.Series
                       ) -> dict[str, list[str]]:
    """zone -> the symbols each of whose repeated times is ambiguous in that zone (the hour
    clocks repeat when daylight saving time ends): local times written without an offset,
    e.g. 24-hour bars (crypto, FX, futures) in New York time repeat 01:00-01:59 each
    November. The first zone of DST_ZONES that fits each symbol is named."""
    if not same_time.any():
        return {}
    out: dict[str, list[str]] = {}
    times = frame.loc[same_time, ["symbol", time_col]].drop_duplicates()
    for symbol, group in times.groupby("symbol", sort=True):
        index = pd.DatetimeIndex(group[time_col])
        for zone in DST_ZONES:
            local = index.tz_localize(zone, ambiguous="NaT", nonexistent="shift_forward")
            if local.isna().all():
                out.setdefault(zone, []).append(symbol)
                break
    return out


def padded_symbol_errors(symbols: pd.Series, drop_hint: bool = True
                         ) -> dict[str, DataValidationError]:
    """Symbols with spaces at either end (`'AAPL '`, `' MSFT'`: a padded export) fail: no
    job can name them (a spec refuses such symbols, and the command line strips them),
    and they look like the plain ticker in every listing. A plain symbol that has a padded
    twin in the frame fails too: its rows are split between the two spellings. The
    messages suggest on_error='drop' when `drop_hint` is set."""
    names = pd.unique(symbols)
    drop = f", {_DROP_FIX}" if drop_hint else ""
    padded = [s for s in names if s != s.strip()]
    out: dict[str, DataValidationError] = {}
    fix = ("strip the spaces at the source, e.g. df['symbol'] = df['symbol'].str.strip(); "
           "check first that no two spellings then share a date")
    for s in padded:
        out[s] = DataValidationError(
            f"symbol {s!r} has spaces at its start or end, so it is not the symbol "
            f"{s.strip()!r}; fix: {fix}{drop}", symbol=s, rows=None)
    plain = set(names)
    for s in sorted({s.strip() for s in padded} & plain):
        twins = sorted(p for p in padded if p.strip() == s)
        spelled = ", ".join(map(repr, twins))
        out[s] = DataValidationError(
            f"symbol {s!r}: some of its rows are spelled {spelled} (with spaces), so its "
            f"history is split between spellings; fix: {fix}{drop}", symbol=s, rows=None)
    return out


def to_numeric_column(values: pd.Series, col: str, source: str) -> pd.Series:
    """`values` as a numeric series; a non-numeric value raises naming column and value."""
    converted, problem = _numeric(values, col)
    if problem:
        raise DataValidationError(f"{source}: {problem}", rows=converted or None)
    return converted


def numeric_columns(frame: pd.DataFrame, columns: Sequence[str], source: str) -> pd.DataFrame:
    """`frame` with `columns` numeric; every column that is not raises in one error
    (`source`: the file, or "frame"), so that a file is fixed in one go."""
    problems, rows = [], []
    for col in columns:
        converted, problem = _numeric(frame[col], col)
        if problem:
            problems.append(problem)
            rows += converted
        elif converted is not frame[col]:  # numbers already: left as they are (no copy)
            frame[col] = converted
    if problems:
        raise DataValidationError(f"{source}: " + "; ".join(problems), rows=rows or None)
    return frame


# the text pandas' CSV reader takes as a missing value ('NaN', 'NA', 'null', '', ...)
_NA_TEXT = frozenset(STR_NA_VALUES)
# what a number written for people carries: thousands separators, currency signs, spaces
_DECORATION = re.compile(r"[,\s$€£¥]")
# a number with a decimal comma: one comma followed by other than three digits (67,71;
# 1.234,56), which no thousands separator is
_DECIMAL_COMMA = re.compile(r"-?\d{1,3}(\.\d{3})*,(\d{1,2}|\d{4,})|-?\d+,(\d{1,2}|\d{4,})")


def _numeric(values: pd.Series, col: str) -> tuple:
    """(converted, None) or (offending row positions, the problem as text)."""
    if pd.api.types.is_bool_dtype(values) or not (
        pd.api.types.is_numeric_dtype(values) or pd.api.types.is_object_dtype(values)
        or pd.api.types.is_string_dtype(values)
    ):
        return [], (f"column {col!r} has type {values.dtype}, expected numbers; fix the column "
                    "type at the source")
    if pd.api.types.is_numeric_dtype(values):
        return values, None
    # the text a CSV read takes as missing ('NaN', 'NA', 'null', ''), missing here too: a
    # Parquet column of strings holding them was refused whole
    values = values.mask(values.isin(_NA_TEXT))
    converted = pd.to_numeric(values, errors="coerce")
    bad = converted.isna() & values.notna()
    if not bad.any():
        return converted, None
    pos = int(np.flatnonzero(bad)[0])
    example = values.iloc[pos]
    fix = "fix or remove them at the source"
    plain = pd.to_numeric(_DECORATION.sub("", str(example)), errors="coerce")
    text = values[bad].astype(str).str.strip()
    comma = text.str.fullmatch(_DECIMAL_COMMA)
    if comma.any():  # 67,71 or 1.234,56: a comma before other than 3 digits is no separator
        pos = int(np.flatnonzero(bad)[int(np.flatnonzero(comma.to_numpy(bool))[0])])
        example = values.iloc[pos]
        number = float(str(example).strip().replace(".", "").replace(",", "."))
        fix = (f"the numbers are written with a decimal comma ({example!r} is {number:.15g}): "
               "write them with a decimal point at the source (pandas: "
               "pd.read_csv(..., decimal=','), with sep=';' if that separates the fields)")
    elif isinstance(example, str) and pd.notna(plain):
        fix = (f"write plain numbers ({float(plain):.15g}) without thousands separators or "
               "currency signs at the source (pandas: pd.read_csv(..., thousands=','), or "
               "strip the signs)")
    n = int(bad.sum())
    return [pos], (f"column {col!r} is not numeric: {counted(n, 'value')} "
                   f"{'does' if n == 1 else 'do'} not parse, e.g. {example!r} at row {pos}; "
                   f"{fix}")


def _number_time_fix(example: object, col: str) -> str:
    """The conversion of a numeric time column, judged by the size of a value: YYYYMMDD
    (8 digits) or epoch seconds, milliseconds, microseconds or nanoseconds (an epoch after
    2001 has 10, 13, 16 or 19 digits)."""
    try:
        digits = len(str(abs(int(float(example))))) if example == example else 0  # NaN
    except (TypeError, ValueError, OverflowError):
        digits = 0
    unit = {10: "s", 13: "ms", 16: "us", 19: "ns"}.get(digits)
    # a float column (a missing value among them) prints as 20180207.0: via Int64, whose
    # missing values stay missing as 'string'
    text = (".astype('Int64').astype('string')" if isinstance(example, float)
            else ".astype(str)")
    if digits == 8:
        return f"pd.to_datetime(df[{col!r}]{text}, format='%Y%m%d') for YYYYMMDD"
    if unit:
        return f"pd.to_datetime(df[{col!r}], unit={unit!r}) for these epoch times"
    return (f"pd.to_datetime(df[{col!r}].astype(str), format='%Y%m%d') for YYYYMMDD or "
            f"pd.to_datetime(df[{col!r}], unit='s') (or 'ms', 'us', 'ns') for epoch times")


def to_datetime_column(values: pd.Series, col: str, source: str,
                       symbols: pd.Series | None = None,
                       asked: Collection[str] | None = None) -> pd.Series:
    """`values` as naive datetime64[ns] (tz-aware -> UTC, or the local date where every
    time of a symbol is at local midnight: `_zone_free`; `symbols`, the rows' symbols by
    position, or None for one series; `asked`, the symbols whose odd zoned times may
    refuse the column, None: all); unparseable values raise, and so do numbers: pandas
    would read 20130208 or epoch seconds as nanoseconds since 1970."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        if len(values) and values.isna().all():  # an empty CSV column reads as float NaN
            raise DataValidationError(
                f"{source}: column {col!r} is empty (no value in its "
                f"{counted(len(values), 'row')}); fill it with the rows' dates at the source")
        example = values.dropna().iloc[0] if values.notna().any() else values.iloc[0]
        raise DataValidationError(
            f"{source}: column {col!r} holds numbers (e.g. {example!r}), not dates; store "
            f"dates or ISO strings such as 2018-02-07, e.g. {_number_time_fix(example, col)}")
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = _drop_zone(values, symbols, col, source, values, asked)
    if not pd.api.types.is_datetime64_dtype(values):
        text = _day_month_as_iso(values, col, source)
        parsed = _parse_times(text, None, col, source, values, symbols, asked)
        bad = parsed.isna() & values.notna()
        if bad.any():  # pandas infers one format from the first value; ISO strings that
            # mix dates and datetimes (2018-02-07, 2018-02-08 15:30:00) need ISO8601 parsing
            iso = _parse_times(text, "ISO8601", col, source, values, symbols, asked)
            if (iso.isna() & values.notna()).sum() < bad.sum():
                parsed, bad = iso, iso.isna() & values.notna()
        if bad.any():
            pos = int(np.flatnonzero(bad)[0])
            raise DataValidationError(
                f"{source}: column {col!r} holds values that are not dates, e.g. "
                f"{values.iloc[pos]!r} at row {pos}; use ISO dates such as 2018-02-07",
                rows=[pos],
            )
        shown, values = values, parsed
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            values = _drop_zone(values, symbols, col, source, shown, asked)
    try:
        return values.astype("datetime64[ns]")
    except pd.errors.OutOfBoundsDatetime:  # a Parquet timestamp[us] or [ms] column
        pass
    far = (values < pd.Timestamp.min) | (values > pd.Timestamp.max)
    pos = int(np.flatnonzero(far.to_numpy(bool))[0])
    raise DataValidationError(
        f"{source}: column {col!r} holds {counted(int(far.sum()), 'time')} outside the range "
        f"a time can have here ({pd.Timestamp.min.date()} to {pd.Timestamp.max.date()}), e.g. "
        f"{_fmt([values.iloc[pos]])} at row {pos} (a placeholder such as 9999-12-31 for 'no "
        "date'?); remove those rows or give them their real time at the source", rows=[pos])


def _day_month_as_iso(values: pd.Series, col: str, source: str) -> pd.Series:
    """`values` with dates written day and month first and the year last (01/03/2021,
    1.3.2021 09:30, 03-15-21) rewritten as ISO (2021-03-01 ...) in the order the column
    proves, else refused. pandas reads them month-first whatever they are (a European
    01/03/2021 became 3 January, silently), unless the first value has a day over 12. A
    value whose first field is over 12 proves day-first for the column, one whose second is
    proves month-first; neither (every field 12 or less: no way to tell) or both (orders
    mixed) raise, naming the file, the column, a value and the fix. A two-digit year may
    come first (yy/mm/dd), so only month-first is proved then. Values of other forms are
    left as they are; a column whose first value is of another form is not looked at
    (pandas infers its format from that value, and reads none of these by it)."""
    present = values.dropna()
    if not len(present) or not _DAY_MONTH.match(str(present.iloc[0])):
        return values
    # each distinct value once (a daily file repeats its dates once per symbol: the S&P
    # file's 619k rows took 3 s, row by row)
    codes, uniques = pd.factorize(values)
    distinct = np.asarray(uniques, dtype=object)
    parts = pd.Series(distinct).astype("string").str.extract(_DAY_MONTH)
    found = parts["a"].notna().to_numpy(bool)
    a, b, yy = (pd.to_numeric(parts[k]).to_numpy(dtype=float, na_value=np.nan)
                for k in ("a", "b", "year"))
    short = found & (yy < 100)
    # a two-digit year by strptime's %y rule: 69-99 are 19xx, 00-68 20xx (pandas' own
    # inference read 12/31/70 as 2070)
    year = parts["year"].mask(short & (yy < 69), "20" + parts["year"]).mask(
        short & (yy >= 69), "19" + parts["year"])
    day_first, month_first = found & (a > 12), found & (b > 12)

    def example(mask):  # `mask` over the distinct values: the first row with one
        pos = int(np.flatnonzero((codes >= 0) & mask[np.maximum(codes, 0)])[0])
        return f"{values.iloc[pos]!r} at row {pos}", pos

    fix = (f"write ISO dates (2021-03-01, 2021-03-01 09:30) at the source, or convert the "
           f"column in pandas first: df[{col!r}] = pd.to_datetime(df[{col!r}], dayfirst=True) "
           "if the day comes first, dayfirst=False if the month does")
    if day_first.any() and month_first.any():
        (first, pos), (second, _) = example(day_first), example(month_first)
        raise DataValidationError(
            f"{source}: column {col!r} holds dates written with the day first (e.g. {first}) "
            f"and dates written with the month first (e.g. {second}); {fix}", rows=[pos])
    if day_first.any() and short.any():
        what, pos = example(short)
        raise DataValidationError(
            f"{source}: column {col!r} holds dates with a two-digit year (e.g. {what}) whose "
            "first field is over 12 in some rows: day first (dd/mm/yy) or year first "
            f"(yy/mm/dd), which cannot be told; {fix}", rows=[pos])
    if not day_first.any() and not month_first.any() and (found & (a != b)).any():
        what, pos = example(found & (a != b))
        k = codes[pos]
        x, y = int(a[k]), int(b[k])
        raise DataValidationError(
            f"{source}: column {col!r} holds dates written with the day and month first (e.g. "
            f"{what}: {year.iloc[k]}-{y:02d}-{x:02d} day-first, {year.iloc[k]}-{x:02d}-"
            f"{y:02d} month-first), and no value tells which comes first (none has a day over "
            f"12); pandas would read them month-first; {fix}", rows=[pos])
    day, month = (parts["a"], parts["b"]) if day_first.any() else (parts["b"], parts["a"])
    iso = year + "-" + month.str.zfill(2) + "-" + day.str.zfill(2) + parts["rest"]
    converted = np.where(found, iso.astype(object), distinct)
    return pd.Series(np.where(codes >= 0, converted[np.maximum(codes, 0)],
                              values.to_numpy(dtype=object)), index=values.index, dtype=object)


def _drop_zone(values: pd.Series, symbols: pd.Series | None, col: str, source: str,
               shown: pd.Series, asked: Collection[str] | None = None) -> pd.Series:
    """A tz-aware series as naive times: `_zone_free` of its local clock times and UTC."""
    return _zone_free(values.dt.tz_localize(None), values.dt.tz_convert("UTC").dt.tz_localize(
        None), symbols, col, source, shown, asked)


def _zone_free(local: pd.Series, utc: pd.Series, symbols: pd.Series | None, col: str,
               source: str, shown: pd.Series, asked: Collection[str] | None = None
               ) -> pd.Series:
    """Zoned times (as naive `local` clock times and naive `utc`) as naive ones, decided
    per symbol (`symbols` by position; None: one series): dates (every time of the symbol
    at midnight in its own zone, as daily bars are stamped) keep their local date, which
    UTC would move to the day before east of UTC (Asia/Tokyo) and to 04:00 or 05:00 west
    of it; other symbols' times become UTC. A symbol whose times are mostly at local
    midnight but not all (daily bars and a live, partial bar at 14:35) raises, naming the
    others: UTC would move every one of its dates back a day east of UTC, and its local
    dates would drop the others' times of day; unless its times are all at one time of day
    in UTC (00:00 UTC written in London time, 00:00 or 01:00): those are UTC. A column whose
    clock times are UTC's (zone UTC, or London in winter) has nothing to decide. Only the
    symbols in `asked` (None: all) are refused: a CSV is read whole, and another symbol's
    live bar refused the symbols asked for. Messages quote `shown`, the values as given."""
    ok = local.notna().to_numpy(bool)
    if (local[ok] == utc[ok]).all():
        return utc
    midnight = ok & (local == local.dt.normalize()).to_numpy(bool)
    if midnight[ok].all():
        return local
    if not midnight.any():
        return utc
    codes, names = ((np.zeros(len(local), np.int64), None) if symbols is None
                    else pd.factorize(symbols, use_na_sentinel=False))
    n_mid = np.bincount(codes, weights=midnight)
    n_other = np.bincount(codes, weights=ok & ~midnight)
    of_day = (utc - utc.dt.normalize())[ok].groupby(codes[ok])
    one_utc_time = (of_day.min() == of_day.max()).reindex(range(len(n_mid)), fill_value=True)
    odd = (n_mid > n_other) & (n_other > 0) & ~one_utc_time.to_numpy(bool)
    if asked is not None and names is not None:
        odd &= pd.Index(names).isin(list(asked))
    if odd.any():
        _refuse_odd_times(odd[codes] & ok & ~midnight, odd[codes] & midnight, symbols, col,
                          source, shown)
    dates = n_other == 0
    return pd.Series(np.where(dates[codes], local.to_numpy(), utc.to_numpy()),
                     index=local.index)


def _refuse_odd_times(others: np.ndarray, midnights: np.ndarray, symbols: pd.Series | None,
                      col: str, source: str, shown: pd.Series) -> None:
    """Raise for the times not at local midnight (`others`) of symbols whose other times
    (`midnights`) are: daily bars and, likely, a live partial bar."""
    def quoted(pos):
        value = shown.iloc[pos]
        return repr(value) if isinstance(value, str) else f"'{value}'"

    pos = np.flatnonzero(others)
    named = [(f"symbol {symbols.iloc[p]!r} at " if symbols is not None else "") + quoted(p)
             for p in pos[:_SHOW]]
    more = f" (+{len(pos) - _SHOW} more)" if len(pos) > _SHOW else ""
    same = " of the same symbol" if symbols is not None else ""
    verb = "is" if len(pos) == 1 else "are"
    raise DataValidationError(
        f"{source}: column {col!r} holds daily bars stamped at midnight in their zone (e.g. "
        f"{quoted(int(np.flatnonzero(midnights)[0]))}) and {counted(len(pos), 'time')}{same} "
        f"that {verb} not: {', '.join(named)}{more} (a live, partial bar?); a midnight stamp "
        "is read as the bar's local date, which these rows do not have: remove them at the "
        "source, or stamp every bar of the symbol the same way (all at midnight, or all "
        "with their time of day)", rows=[int(p) for p in pos])


def _parse_times(values: pd.Series, fmt: str | None, col: str, source: str,
                 shown: pd.Series | None = None, symbols: pd.Series | None = None,
                 asked: Collection[str] | None = None) -> pd.Series:
    """`pd.to_datetime(values, format=fmt)` with unparseable values as NaT; several UTC
    offsets (a zone with daylight saving) are read as UTC. Times with an offset beside
    times without one raise: which zone the latter are in is unknown (pandas would read
    them as UTC, or in the offset of the time before them); times with several offsets
    are made naive by `_zone_free` (per symbol of `symbols`). Messages quote `shown` (the
    values as written, before `_day_month_as_iso`), else `values`."""
    shown = values if shown is None else shown
    with warnings.catch_warnings(record=True) as caught:  # mixed offsets: handled below
        warnings.simplefilter("always")
        parsed = pd.to_datetime(values, errors="coerce", format=fmt)
    _refuse_zone_names(caught, values, col, source, shown)
    if parsed.dtype == object or fmt is not None:
        text = values.astype("string").str.strip()
        offset = text.str.contains(_OFFSET, regex=True).fillna(False).to_numpy(bool)
        naive = ~offset & text.notna().to_numpy(bool)
        if offset.any() and naive.any():
            i_tz, i_naive = int(np.flatnonzero(offset)[0]), int(np.flatnonzero(naive)[0])
            raise DataValidationError(
                f"{source}: column {col!r} mixes times with a UTC offset (e.g. "
                f"{shown.iloc[i_tz]!r}) and times without one (e.g. {shown.iloc[i_naive]!r} "
                f"at row {i_naive}); write every time with its offset, or none",
                rows=[i_naive])
    if parsed.dtype == object:  # several offsets: each time's own clock time, and UTC
        # once per distinct value as written (619k rows: 5 s row by row); not per parsed
        # time, which is one for 23:00+00:00 and 00:00+01:00, whose clock times differ
        codes, uniques = pd.factorize(values)
        seen, at = np.unique(codes, return_index=True)  # each value's first row
        first = at[seen >= 0]
        clock = pd.DatetimeIndex([t.tz_localize(None) if isinstance(t, pd.Timestamp)
                                  else pd.NaT for t in parsed.iloc[first]])  # fmt: skip
        local = pd.Series(clock.take(codes, allow_fill=True, fill_value=pd.NaT),
                          index=values.index)
        utc = pd.to_datetime(values, errors="coerce", utc=True, format=fmt)
        parsed = _zone_free(local, utc.dt.tz_localize(None), symbols, col, source, shown,
                            asked)
    return parsed


def _refuse_zone_names(caught: list, values: pd.Series, col: str, source: str,
                       shown: pd.Series) -> None:
    """Times written with a zone name pandas does not know (`09:30:00 EST`, `JST`, `CET`):
    pandas drops the name and reads the clock time as if it were UTC, hours off, with only
    a FutureWarning. Refuse them, naming the column, a value and its row."""
    for w in caught:
        m = re.search(r'Parsed string "(.*)" included an un-recognized timezone "(.*?)"',
                      str(w.message))
        if not m:
            continue
        text = values.astype("string")
        rows = np.flatnonzero(text.eq(m.group(1)).fillna(False).to_numpy(bool))
        at = f" at row {int(rows[0])}" if len(rows) else ""
        example = shown.iloc[int(rows[0])] if len(rows) else m.group(1)
        raise DataValidationError(
            f"{source}: column {col!r} holds times with the zone name {m.group(2)!r} (e.g. "
            f"{example!r}{at}), which is not read: the time would be taken as UTC, hours "
            "off; write a UTC offset instead (2021-01-04T09:30:00-05:00), or convert the "
            "times to UTC at the source", rows=[int(rows[0])] if len(rows) else None)


# `DataFrame.attrs` key that `data.loading` sets on a loaded frame: symbol -> where its
# rows without a time are in the file ("rows 5, 9"), as the loader's sort moved them
UNTIMED_ROWS = "untimed_rows"
# the same for symbol -> how many of its rows the loader's sort moved (the `sorted` repair)
SORTED_ROWS = "sorted_rows"


def _flag_untimed(bad, frame, time_col, in_file: dict[str, str]) -> None:
    """Rows without a time fail their symbol, named by where they are in the file (from
    the loader) or else by their position in the frame given."""
    mask = frame[time_col].isna()
    if not mask.any():
        return
    for symbol, pos in frame.loc[mask, ["symbol", "_pos"]].groupby("symbol", sort=True)["_pos"]:
        if symbol in bad:
            continue
        where = in_file.get(symbol)
        where = (f"{where} of the file" if where and " of " not in where else where) or (
            f"row position{'s' if len(pos) > 1 else ''} {_fmt(list(pos))} of the frame")
        bad[symbol] = DataValidationError(
            f"symbol {symbol!r}: {counted(len(pos), 'row')} with missing {time_col} at "
            f"{where}; fix: fill or remove these rows at the source, {_DROP_FIX}",
            symbol=symbol, rows=list(pos))


def _flag(bad, frame, row_col, mask, what, fix) -> None:
    """Record `what` for each symbol with rows in `mask` that has no earlier problem."""
    if not mask.any():
        return
    hits = frame.loc[mask, ["symbol", row_col]].groupby("symbol", sort=True)[row_col]
    for symbol, rows in hits:
        if symbol not in bad:
            bad[symbol] = _error(symbol, f"{counted(len(rows), 'row')} with {what}", list(rows),
                                 fix)


def _flag_bad_prints(bad, frame) -> None:
    """An open or close more than MAX_OUTSIDE_RANGE outside the day's [low, high] fails its
    symbol, naming each row's values. Rows missing a price are skipped (NaN compares false):
    they are filled later."""
    limit = 1 + MAX_OUTSIDE_RANGE
    far = {c: np.maximum(frame[c] / frame["high"], frame["low"] / frame[c]) > limit
           for c in ("open", "close")}  # fmt: skip
    mask = far["open"] | far["close"]
    if not mask.any():
        return
    for symbol, rows in frame[mask].groupby("symbol", sort=True):
        if symbol in bad:
            continue
        shown = [
            f"{_fmt([r.date])} ({c} {r[c]:g} outside low {r.low:g} .. high {r.high:g})"
            for i, r in rows.iterrows() for c in ("open", "close") if far[c][i]
        ]  # fmt: skip
        more = f" (+{len(shown) - _SHOW} more)" if len(shown) > _SHOW else ""
        bad[symbol] = DataValidationError(
            f"symbol {symbol!r}: {counted(len(rows), 'row')} with an "
            f"open or close more than "
            f"{MAX_OUTSIDE_RANGE:.0%} outside the day's [low, high], a bad print (a rounding "
            f"quirk would be widened) at {'; '.join(shown[:_SHOW])}{more}; fix: correct the "
            f"row at the source or leave the symbol out, {_DROP_FIX}",
            symbol=symbol, rows=list(rows["date"]))


def _long_gaps(frame, time_col) -> dict[str, dict]:
    """symbol -> {"count", "limit_days", "first": [{"after", "before", "days"}, ...]} for the
    symbols with gaps between consecutive rows over max(GAP_MEDIANS x the symbol's median
    spacing, MIN_GAP); for intraday symbols (median spacing under a day) also the gaps that
    miss at least max(SESSION_GAP_BARS x the spacing, SESSION_GAP_HOURS) of their usual
    trading time (data.sessions), with "limit_hours" and each gap's "missing_hours".
    `frame` is sorted by (symbol, time)."""
    sym, times = frame["symbol"], frame[time_col]
    step = times.groupby(sym, sort=False).diff()  # NaT on each symbol's first row
    median = step.groupby(sym, sort=False).transform("median")
    limit = (median * GAP_MEDIANS).clip(lower=MIN_GAP)
    long = (step > limit).to_numpy()
    day, hour = pd.Timedelta(days=1), pd.Timedelta(hours=1)
    missing = np.full(len(frame), np.nan)  # trading hours a gap misses (intraday symbols)
    limit_hours: dict[str, float] = {}
    ns = times.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    symbols = sym.to_numpy()
    intraday = (median < day).to_numpy()
    starts = np.flatnonzero(np.r_[True, symbols[1:] != symbols[:-1]])
    stops = np.r_[starts[1:], len(symbols)]
    for a, b in zip(starts, stops, strict=True):  # the symbol's rows are a .. b - 1
        if b - a < 2 or not intraday[a + 1]:
            continue
        spacing = median.iloc[a + 1]
        limit_ns = max(SESSION_GAP_BARS * spacing, SESSION_GAP_HOURS * hour).value
        missed, not_closed = missed_trading_time(ns[a:b], float(limit_ns))
        long[a + 1 : b] |= not_closed >= limit_ns
        missing[a + 1 : b] = missed / hour.value
        limit_hours[str(symbols[a])] = round(limit_ns / hour.value, 2)
    if not long.any():
        return {}
    out: dict[str, dict] = {}
    for symbol, idx in frame.index[long].groupby(sym[long]).items():
        first = [{"after": _fmt([times[i - 1]]), "before": _fmt([times[i]]),
                  "days": round(step[i] / day, 2)} for i in idx[:_SHOW]]  # fmt: skip
        out[str(symbol)] = {"count": len(idx), "limit_days": round(limit[idx[0]] / day, 2),
                            "first": first}
        if str(symbol) in limit_hours:
            out[str(symbol)]["limit_hours"] = limit_hours[str(symbol)]
            for gap, i in zip(first, idx, strict=False):
                gap["missing_hours"] = round(float(missing[i]), 2)
    return out


def _previous_close(frame) -> np.ndarray:
    """Each bar's previous close of the same symbol (NaN on a symbol's first bar); `frame`
    is sorted by (symbol, date)."""
    symbols, close = frame["symbol"].to_numpy(), frame["close"].to_numpy(np.float64)
    prev = np.full(len(close), np.nan)
    prev[1:] = np.where(symbols[1:] == symbols[:-1], close[:-1], np.nan)
    return prev


def _split_like_moves(frame, prev: np.ndarray) -> tuple[dict[str, dict], np.ndarray]:
    """(symbol -> {"count", "first": [{"at", "before", "after", "ratio", "split"}, ...]},
    the rows flagged) for
    the bars whose close AND open, against the previous close, both sit within
    SPLIT_TOLERANCE of a split's price ratio (1/k for a k:1 split, k for a 1:k reverse
    split, k in SPLIT_RATIOS): a move of -50% (or -67%, -75%, or x2, x3 ...) at the open that holds
    to the close looks like prices that were not adjusted for a split. Real moves that
    large are rare, and rarely land on such a ratio at both ends of the bar; `frame` is
    sorted by (symbol, date) and repaired (no NaN open); `prev`: `_previous_close`."""
    sym = frame["symbol"]
    with np.errstate(divide="ignore", invalid="ignore"):
        q_close = frame["close"].to_numpy(np.float64) / prev
        q_open = frame["open"].to_numpy(np.float64) / prev
    hit = np.zeros(len(frame), bool)
    label = np.full(len(frame), "", dtype=object)
    for k in SPLIT_RATIOS:
        for ratio, text in ((1.0 / k, f"{k}:1 split"), (float(k), f"1:{k} reverse split")):
            near = ((np.abs(q_close / ratio - 1) <= SPLIT_TOLERANCE)
                    & (np.abs(q_open / ratio - 1) <= SPLIT_TOLERANCE) & ~hit)  # fmt: skip
            hit |= near
            label[near] = text
    if not hit.any():
        return {}, hit
    out: dict[str, dict] = {}
    dates, close = frame["date"], frame["close"].to_numpy()
    for symbol, idx in frame.index[hit].groupby(sym[hit]).items():
        first = [{"at": _fmt([dates[i]]), "before": float(prev[i]), "after": float(close[i]),
                  "ratio": round(float(q_close[i]), 4), "split": label[i]}
                 for i in idx[:_SHOW]]  # fmt: skip
        out[str(symbol)] = {"count": len(idx), "first": first}
    return out, hit


def _big_moves(frame, prev: np.ndarray, skip: np.ndarray) -> dict[str, dict]:
    """symbol -> {"count", "spikes", "first": [{"at", "before", "after", "ratio", "guess"},
    ...]} for the bars whose close moved by a factor of JUMP_FACTOR or more either way
    against the previous close, other than the rows in `skip` (split-like moves, told
    apart): a split past 10:1 (20:1, 50:1) left unadjusted, a change of unit (pence to
    pounds: x0.01), or, when the next bar moves as far back, a one-bar spike (a bad tick;
    one entry, with "back": the next close). A real close moves that far in one bar
    (x0.105, x9.5) hardly ever: the shared S&P file's largest moves are x0.37 and x2.0.
    `frame` is sorted by (symbol, date); `prev`: `_previous_close`."""
    symbols = frame["symbol"].to_numpy()
    close = frame["close"].to_numpy(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = close / prev
    up, down = q >= JUMP_FACTOR, q <= 1 / JUMP_FACTOR  # NaN (a symbol's first row): neither
    big = (up | down) & ~skip
    if not big.any():
        return {}
    # a spike: a big move, then one as big back on the next bar (the pair is one entry)
    back = np.zeros(len(close), bool)
    back[:-1] = big[:-1] & ((up[:-1] & down[1:]) | (down[:-1] & up[1:])) & ~skip[1:]
    big[1:] &= ~back[:-1]
    dates, out = frame["date"], {}
    for i in np.flatnonzero(big):
        symbol = str(symbols[i])
        entry = out.setdefault(symbol, {"count": 0, "spikes": 0, "first": []})
        entry["count"] += 1
        entry["spikes"] += int(back[i])
        if len(entry["first"]) >= _SHOW:
            continue
        ratio = float(q[i])
        entry["first"].append(_jump_item(dates[i], close[i - 1], close[i], ratio, back[i]))
        if back[i]:
            entry["first"][-1]["back"] = float(close[i + 1])
    return out


def _jump_item(at, before, after, ratio, spike) -> dict:
    """A jump as reported: a spike is a bad tick; else the split or unit it may be, named
    when its factor is within SPLIT_TOLERANCE of one of JUMP_RATIOS."""
    factor = 1 / ratio if ratio < 1 else ratio
    k = next((k for k in JUMP_RATIOS if abs(factor / k - 1) <= SPLIT_TOLERANCE), None)
    split = (f"a {k}:1 split" if ratio < 1 else f"a 1:{k} reverse split") if k else "a split"
    unit = ("a change of unit (pence to pounds, cents to dollars)" if ratio < 1
            else "a change of unit (pounds to pence, dollars to cents)")
    if spike:
        guess = "a bad tick"
    elif k in (100, 1000):
        guess = f"{unit} or {split}"
    else:
        guess = f"{split} or {unit}"
    return {"at": _fmt([at]), "before": float(before), "after": float(after),
            "ratio": float(f"{ratio:.4g}"), "guess": guess}


def _stale_runs(frame) -> dict[str, dict]:
    """symbol -> {"count", "limit_bars", "first": [{"from", "to", "bars"}, ...]} for the
    runs of consecutive bars without a trade (volume 0 and open = high = low = close, the
    same close throughout the run) of at least max(STALE_BARS, STALE_SHARE x the symbol's
    bars): a halt, or a feed that repeats the last price. `frame` is sorted by (symbol,
    date) and repaired."""
    o, h, lo, c, v = (frame[k].to_numpy(np.float64) for k in (*PRICE_COLUMNS, "volume"))
    symbols = frame["symbol"].to_numpy()
    idle = (v == 0) & (o == h) & (h == lo) & (lo == c)
    if not idle.any():
        return {}
    goes_on = np.r_[False, (symbols[1:] == symbols[:-1]) & idle[:-1] & (c[1:] == c[:-1])]
    starts = np.flatnonzero(idle & ~goes_on)  # each run's first row
    run = np.cumsum(idle & ~goes_on)  # a run's id (1, 2, ...) on its rows, which are idle
    sizes = np.bincount(run[idle], minlength=starts.size + 1)[1:]
    # vectorized: a close-only series (volume 0) makes every bar a run of its own
    return _runs_report(frame, _long_runs(frame, starts, sizes, STALE_BARS))


def _flat_runs(frame) -> dict[str, dict]:
    """symbol -> {"count", "limit_bars", "first": [{"from", "to", "bars"}, ...]} for the
    runs of consecutive bars with one close, whatever their volume, of at least
    max(FLAT_BARS, STALE_SHARE x the symbol's bars) bars that span FLAT_DAYS calendar days
    or more, other than runs of bars without a trade only (`_stale_runs` tells those). The
    days keep intraday bars of a cheap stock, on one tick for an hour, out. `frame` is
    sorted by (symbol, date) and repaired."""
    o, h, lo, c, v = (frame[k].to_numpy(np.float64) for k in (*PRICE_COLUMNS, "volume"))
    symbols = frame["symbol"].to_numpy()
    same_symbol = symbols[1:] == symbols[:-1]
    goes_on = np.r_[False, same_symbol & (c[1:] == c[:-1])]
    starts = np.flatnonzero(~goes_on)
    sizes = np.diff(np.r_[starts, len(c)])
    runs = _long_runs(frame, starts, sizes, FLAT_BARS)
    if not runs:
        return {}
    day = frame["date"].dt.normalize().to_numpy()
    new_day = np.cumsum(np.r_[True, ~same_symbol | (day[1:] != day[:-1])])  # a day's number
    traded = ~((v == 0) & (o == h) & (h == lo) & (lo == c))
    return _runs_report(frame, [(first, last, limit) for first, last, limit in runs
                                if new_day[last] - new_day[first] + 1 >= FLAT_DAYS
                                and traded[first:last + 1].any()])


def _long_runs(frame, starts: np.ndarray, sizes: np.ndarray, floor: int
               ) -> list[tuple[int, int, int]]:
    """(first row, last row, limit) of the runs (their first rows and sizes) at least
    max(`floor`, STALE_SHARE x their symbol's bars) long."""
    n_rows = frame.groupby("symbol", sort=False)["symbol"].transform("size").to_numpy()
    limits = np.maximum(floor, np.ceil(STALE_SHARE * n_rows[starts]).astype(np.int64))
    return [(int(starts[k]), int(starts[k] + sizes[k] - 1), int(limits[k]))
            for k in np.flatnonzero(sizes >= limits)]


def _runs_report(frame, runs: Iterable[tuple[int, int, int]]) -> dict[str, dict]:
    """symbol -> {"count", "limit_bars", "first": the first _SHOW as {"from", "to",
    "bars"}} of `runs` ((first row, last row, limit) each)."""
    symbols, dates, out = frame["symbol"].to_numpy(), frame["date"], {}
    for first, last, limit in runs:
        entry = out.setdefault(str(symbols[first]), {"count": 0, "limit_bars": limit,
                                                     "first": []})
        entry["count"] += 1
        if len(entry["first"]) < _SHOW:
            entry["first"].append({"from": _fmt([dates[first]]), "to": _fmt([dates[last]]),
                                   "bars": last - first + 1})
    return out


def _flag_min_rows(bad, frame, min_rows) -> None:
    if min_rows is None:
        return
    sizes = frame["symbol"].value_counts().sort_index()
    for symbol, n in sizes[sizes < min_rows].items():
        if symbol not in bad:
            bad[symbol] = DataValidationError(
                f"symbol {symbol!r}: {counted(n, 'row')}, at least {min_rows} are needed "
                "(seq_len, "
                "horizons, the split sizes, purge/embargo and walk-forward's n_folds set this "
                "need); fix: load a longer date range, lower "
                "seq_len/horizons/n_folds/purge/embargo, "
                f"{_DROP_FIX}", symbol=symbol, rows=None)


def _error(symbol, what, rows, fix) -> DataValidationError:
    shown = list(dict.fromkeys(rows))  # duplicate rows share a date: name each date once
    return DataValidationError(f"symbol {symbol!r}: {what} at {_fmt(shown)}; fix: {fix}, "
                               f"{_DROP_FIX}", symbol=symbol, rows=rows)


def _fmt(rows: list) -> str:
    def one(r):
        if isinstance(r, pd.Timestamp):
            return r.strftime("%Y-%m-%d") if r == r.normalize() else r.isoformat()
        return str(r)

    more = f" (+{len(rows) - _SHOW} more)" if len(rows) > _SHOW else ""
    return ", ".join(one(r) for r in rows[:_SHOW]) + more


def _resolve(frame, bad, on_error, report) -> pd.DataFrame:
    """Raise or drop the failing symbols. Dropping every symbol is an error even with
    on_error="drop": an empty result would only fail later, further from the cause."""
    if not bad:
        return frame
    first = bad[min(bad)]
    if on_error == "raise" or len(bad) == report.symbols_in:
        message = str(first)
        if on_error == "drop":  # dropping is what failed: do not suggest it
            message = message.replace(f", {_DROP_FIX}", "")
            if report.symbols_in > 1:
                message = "every symbol fails validation: " + message
        others = sorted(bad)[1:]
        first.args = (message + (f" (also failing: {_fmt(others)})" if others else ""),)
        raise first
    report.dropped = {s: str(bad[s]).replace(f", {_DROP_FIX}", "") for s in sorted(bad)}
    return frame[~frame["symbol"].isin(bad.keys())].reset_index(drop=True)


def _finish(frame, counts, report, sorted_in_file=None) -> tuple[pd.DataFrame, ValidationReport]:
    """`sorted_in_file`: symbol -> rows the loader's sort moved (`SORTED_ROWS`), added to
    the `sorted` repair of the symbols kept."""
    table = pd.DataFrame({k: v.astype(np.int64) for k, v in counts.items()})
    per_symbol = table.groupby(frame["symbol"]).sum()
    report.repairs = {
        s: {k: int(v) for k, v in row.items() if v} for s, row in per_symbol.iterrows() if row.any()
    }
    for symbol, n in (sorted_in_file or {}).items():
        if symbol in per_symbol.index:
            repairs = report.repairs.setdefault(symbol, {})
            repairs["sorted"] = repairs.get("sorted", 0) + int(n)
    report.rows_out = len(frame)
    frame = frame.drop(columns="_pos")
    return frame, report
