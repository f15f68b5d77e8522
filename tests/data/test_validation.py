"""data.validation: every error path on real CSV and Parquet files, every repair with its
count, the shared S&P file's known quirks, the report, and LOB checks."""

from __future__ import annotations

import datetime
import pickle
import re
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.loading import load_bars
from data.validation import DataValidationError, ValidationReport, validate_bars, validate_lob

FORMATS = ["csv", "parquet"]


def _at(df: pd.DataFrame, symbol: str, i: int) -> int:
    """Label of the i-th row of `symbol`."""
    return df.index[df["symbol"] == symbol][i]


# ---- per-symbol errors: each breaks symbol BBB; AAA stays clean -------------------------


def _nonpositive(df):
    df.loc[_at(df, "BBB", 7), "low"] = 0.0
    return "non-positive prices", ["2020-01-10"]


def _nan_close(df):
    df.loc[_at(df, "BBB", 3), "close"] = np.nan
    return "NaN close", ["2020-01-06"]


def _duplicate(df):
    df.loc[_at(df, "BBB", 5), "date"] = df.loc[_at(df, "BBB", 4), "date"]
    return r"duplicate \(symbol, date\)", ["2020-01-07", "2020-01-07"]


def _infinite(df):
    df.loc[_at(df, "BBB", 6), "high"] = np.inf
    return "infinite prices or volume", ["2020-01-09"]


def _negative_volume(df):
    df.loc[_at(df, "BBB", 9), "volume"] = -5
    return "negative volume", ["2020-01-14"]


def _too_short(df):
    return "39 rows, at least 40 are needed", None


CASES = {
    "nonpositive": _nonpositive,
    "nan_close": _nan_close,
    "duplicate": _duplicate,
    "negative_volume": _negative_volume,
    "infinite": _infinite,
    "too_short": _too_short,
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_symbol_errors_raise_or_drop(bars, write_frame, fmt, case):
    df = bars(("AAA", "BBB"), n=40)
    what, rows = CASES[case](df)
    if case == "too_short":
        df = df.drop(index=_at(df, "BBB", 0))
    frame = load_bars(write_frame(df, fmt))

    with pytest.raises(DataValidationError, match=what) as err:
        validate_bars(frame, min_rows=40)
    assert err.value.symbol == "BBB"
    assert "'BBB'" in str(err.value) and "fix:" in str(err.value)
    if rows is None:
        assert err.value.rows is None
        assert "seq_len" in str(err.value) and "horizons" in str(err.value)
    else:
        assert [r.strftime("%Y-%m-%d") for r in err.value.rows] == rows
        assert rows[0] in str(err.value)

    clean, report = validate_bars(frame, min_rows=40, on_error="drop")
    assert list(report.dropped) == ["BBB"]
    assert "'BBB'" in report.dropped["BBB"]
    assert clean["symbol"].unique().tolist() == ["AAA"]
    assert report.symbols_in == 2 and report.symbols_out == 1 and report.rows_out == 40


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_numeric_column_is_a_frame_error(bars, write_frame, fmt):
    """A frame given to validation is named "frame"; a file is named by the loader, with
    the value's row in the file (rows are sorted by symbol and date after the read)."""
    df = bars(("BBB", "AAA"), n=10)
    df["close"] = df["close"].astype(object)
    df.loc[_at(df, "BBB", 2), "close"] = "n/a?"
    df.loc[:, "close"] = df["close"].astype(str)  # parquet: a string column
    for on_error in ("raise", "drop"):
        with pytest.raises(DataValidationError, match="frame: column 'close' is not numeric"
                           ) as err:
            validate_bars(df, on_error=on_error)
        assert "'n/a?'" in str(err.value) and err.value.symbol is None
    path = write_frame(df, fmt)
    with pytest.raises(DataValidationError, match=rf"^{re.escape(path)}: column 'close' is not "
                       r"numeric: 1 value does not parse, e.g. 'n/a\?' at row 2; fix or remove"):
        load_bars(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_column_is_a_frame_error(bars, write_frame, fmt):
    df = bars(("AAA",), n=5)
    with pytest.raises(DataValidationError, match=r"missing columns \['volume'\]"):
        load_bars(write_frame(df.drop(columns="volume"), fmt))
    with pytest.raises(DataValidationError, match=r"missing columns \['volume'\]"):
        validate_bars(df.drop(columns="volume"), on_error="drop")


def test_constant_close_is_dropped_alone(bars):
    df = bars(("AAA", "BBB"), n=40)
    df.loc[df["symbol"] == "BBB", ["open", "high", "low", "close"]] = 12.5
    with pytest.raises(DataValidationError, match="close is the same on all 40 rows") as err:
        validate_bars(df)
    assert err.value.symbol == "BBB"
    clean, report = validate_bars(df, on_error="drop")
    assert list(report.dropped) == ["BBB"] and clean["symbol"].unique().tolist() == ["AAA"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_numeric_dates_are_refused_naming_the_file(bars, write_frame, fmt):
    """pandas would read 20200102 (or epoch seconds) as nanoseconds after 1970."""
    df = bars(("AAA",), n=5)
    df["date"] = df["date"].dt.strftime("%Y%m%d").astype(np.int64)
    path = write_frame(df, fmt)
    with pytest.raises(DataValidationError, match="column 'date' holds numbers") as err:
        load_bars(path)
    assert path in str(err.value) and "%Y%m%d" in str(err.value)


def test_float_yyyymmdd_dates_get_a_conversion_that_works() -> None:
    """A YYYYMMDD column with a missing value is float (20180207.0): `.astype(str)` would
    leave '.0' and fail; the fix given converts it, the missing date staying missing."""
    from data.validation import to_datetime_column

    values = pd.Series([20180207.0, np.nan])
    with pytest.raises(DataValidationError) as err:
        to_datetime_column(values, "date", "f.csv")
    fix = str(err.value).split("e.g. ")[-1].removesuffix(" for YYYYMMDD")
    converted = eval(fix, {"pd": pd, "df": {"date": values}})
    assert converted[0] == pd.Timestamp("2018-02-07") and pd.isna(converted[1])


@pytest.mark.parametrize(("scale", "fix"), [
    (10**9, "pd.to_datetime(df['ts'], unit='ns')"), (10**6, "pd.to_datetime(df['ts'], unit='us')"),
    (10**3, "pd.to_datetime(df['ts'], unit='ms')"), (1, "pd.to_datetime(df['ts'], unit='s')"),
])  # fmt: skip
def test_epoch_times_get_the_conversion_of_their_unit(scale, fix):
    """Order-book feeds stamp epoch nanoseconds or milliseconds: the fix names the unit
    that the values' size says (unit='s' on milliseconds overflows)."""
    from data.validation import to_datetime_column

    seconds = pd.Series([1709544600, 1709544601], dtype=np.int64)
    with pytest.raises(DataValidationError, match="column 'ts' holds numbers") as err:
        to_datetime_column(seconds * scale, "ts", "lob.parquet")
    assert str(err.value).endswith(f"e.g. {fix} for these epoch times")
    converted = eval(fix, {"pd": pd, "df": {"ts": seconds * scale}})  # the fix works
    assert converted[0] == pd.Timestamp("2024-03-04 09:30:00")


def test_one_symbol_failing_is_named_without_every_symbol(bars):
    df = bars(("AAA",), n=10)
    df.loc[[3, 4], "date"] = df.loc[2, "date"]
    with pytest.raises(DataValidationError) as err:
        validate_bars(df, on_error="drop")
    message = str(err.value)
    assert message.startswith("symbol 'AAA': 3 rows with a duplicate (symbol, date) at ")
    assert message.count("2020-01-03") == 1  # each duplicated date named once
    assert "every symbol" not in message and "on_error" not in message


def test_other_frame_errors(bars):
    df = bars(("AAA",), n=5)
    with pytest.raises(DataValidationError, match="frame is empty"):
        validate_bars(df.iloc[:0])
    no_symbol = df.copy()
    no_symbol.loc[2, "symbol"] = None
    with pytest.raises(DataValidationError,
                       match=r"1 row has no symbol \(row position 2\); fill or remove it") as err:
        validate_bars(no_symbol, on_error="drop")
    assert err.value.rows == [2]
    bad_date = df.astype({"date": str})
    bad_date.loc[3, "date"] = "yesterday"
    with pytest.raises(DataValidationError, match="'yesterday' at row 3"):
        validate_bars(bad_date)
    with pytest.raises(ValueError, match="on_error must be one of"):
        validate_bars(df, on_error="ignore")
    with pytest.raises(ValueError, match="min_rows must be a positive integer"):
        validate_bars(df, min_rows=0)


def test_all_symbols_failing_raises_even_when_dropping(bars):
    with pytest.raises(DataValidationError, match="every symbol fails validation") as err:
        validate_bars(bars(("AAA", "BBB"), n=10), min_rows=11, on_error="drop")
    assert "also failing: BBB" in str(err.value)
    assert "on_error='drop'" not in str(err.value)


# ---- repairs ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_repairs_are_applied_and_counted(bars, write_frame, fmt):
    df = bars(("AAA", "BBB"), n=300)
    i_open, i_first, i_hl, i_wide, i_zero = (_at(df, "BBB", k) for k in (50, 0, 80, 120, 150))
    df.loc[[i_open, i_first], "open"] = np.nan  # with the high/low gap: 3 of 300 rows, 1%
    df.loc[i_hl, ["high", "low"]] = np.nan
    df.loc[i_wide, "high"] = df.loc[i_wide, ["open", "close"]].max() - 0.5
    df.loc[i_zero, "volume"] = 0
    expected_prev_close = df.loc[i_open - 1, "close"]
    shuffled = pd.concat([df[df["symbol"] == "AAA"], df[df["symbol"] == "BBB"].iloc[::-1]])

    clean, report = validate_bars(load_bars(write_frame(shuffled, fmt)))
    assert "AAA" not in report.repairs  # AAA needed nothing
    assert report.repairs["BBB"] == {  # sorted: every row of the reversed BBB moved (in
        "open_filled": 2, "high_low_filled": 1, "bracket_widened": 1, "zero_volume": 1,
        "sorted": 300,  # load_bars' sort, counted through SORTED_ROWS)
    }
    assert report.totals()["sorted"] == 300
    bbb = clean[clean["symbol"] == "BBB"].reset_index(drop=True)
    assert bbb.loc[50, "open"] == pytest.approx(expected_prev_close)
    assert bbb.loc[0, "open"] == bbb.loc[0, "close"]  # no previous close: its own close
    assert bbb.loc[80, "high"] == max(bbb.loc[80, "open"], bbb.loc[80, "close"])
    assert bbb.loc[80, "low"] == min(bbb.loc[80, "open"], bbb.loc[80, "close"])
    assert bbb.loc[120, "high"] == max(bbb.loc[120, "open"], bbb.loc[120, "close"])
    assert bbb.loc[150, "volume"] == 0
    prices = clean[["open", "high", "low", "close"]]
    assert not prices.isna().any().any()
    assert (clean["high"] >= prices.max(axis=1)).all()
    assert (clean["low"] <= prices.min(axis=1)).all()


def test_unsorted_rows_are_sorted_and_counted(bars):
    df = bars(("AAA", "BBB"), n=30)
    swapped = df.copy()
    a, b = _at(df, "BBB", 3), _at(df, "BBB", 10)
    swapped.loc[[a, b]] = swapped.loc[[b, a]].to_numpy()
    # symbols interleaved (AAA, BBB, AAA, ...) is not a repair: only BBB's swap counts
    mixed = swapped.iloc[np.argsort(swapped.groupby("symbol").cumcount(), kind="stable")]
    assert mixed["symbol"].iloc[:2].tolist() == ["AAA", "BBB"]
    clean, report = validate_bars(mixed)
    assert report.repairs == {"BBB": {"sorted": 2}}
    pd.testing.assert_frame_equal(clean, df, check_dtype=False)
    assert clean.index.equals(pd.RangeIndex(len(df)))


def test_more_than_one_percent_missing_is_an_error(bars):
    df = bars(("AAA", "BBB"), n=200)
    df.loc[[_at(df, "BBB", k) for k in (10, 20, 30)], "high"] = np.nan  # 1.5%
    with pytest.raises(DataValidationError, match="3 of 200 rows miss open/high/low") as err:
        validate_bars(df)
    assert len(err.value.rows) == 3
    _, report = validate_bars(df, on_error="drop")
    assert list(report.dropped) == ["BBB"]


def test_bad_print_fails_the_symbol_a_small_miss_is_widened(bars):
    df = bars(("AAA", "BBB"), n=60)
    i_bad, i_quirk, i_open = _at(df, "BBB", 30), _at(df, "BBB", 40), _at(df, "AAA", 20)
    df.loc[i_bad, "close"] = df.loc[i_bad, "low"] / 2  # a half-price print: -50%/+100%
    df.loc[i_quirk, "close"] = df.loc[i_quirk, "low"] * 0.91  # 9% under its low: a quirk
    df.loc[i_open, "open"] = df.loc[i_open, "high"] * 1.2  # 20% over its high: a quirk
    with pytest.raises(DataValidationError, match="bad print") as err:
        validate_bars(df)
    assert err.value.symbol == "BBB" and err.value.rows == [df.loc[i_bad, "date"]]
    message = str(err.value)
    assert "'BBB': 1 row with an open or close more than 25% outside" in message
    assert f"2020-02-12 (close {df.loc[i_bad, 'close']:g} outside low" in message
    assert "correct the row at the source or leave the symbol out" in message
    df.loc[i_bad, "close"] = df.loc[i_bad, "low"] * 0.95
    _, report = validate_bars(df)
    assert report.repairs == {"AAA": {"bracket_widened": 1}, "BBB": {"bracket_widened": 2}}


def test_long_gap_is_a_warning_in_the_report_not_an_error(bars):
    df = bars(("AAA", "BBB"), n=300)
    hole = df.index[df["symbol"].eq("BBB")][100:185]  # ~4 months of BBB's rows missing
    df = df.drop(index=hole).reset_index(drop=True)
    clean, report = validate_bars(df, min_rows=200)
    assert report.dropped == {} and report.rows_out == len(df)  # kept, unchanged
    assert list(report.gaps) == ["BBB"]  # weekends do not count
    assert report.gaps["BBB"] == {
        "count": 1, "limit_days": 10.0,
        "first": [{"after": "2020-05-19", "before": "2020-09-16", "days": 120.0}],
    }
    warning = report.warnings["BBB"]
    assert "'BBB': 1 gap between consecutive bars longer than 10 days" in warning
    assert "2020-05-19 -> 2020-09-16 (120 days)" in warning and "date range" in warning
    assert "warning BBB: symbol 'BBB': 1 gap" in report.summary()
    assert report.to_dict()["warnings"] == report.warnings
    assert ValidationReport.from_dict(report.to_dict()) == report
    merged = ValidationReport.merge([report, ValidationReport()])
    assert merged.gaps == report.gaps


def test_gap_warning_quotes_the_limit_constants(monkeypatch):
    """The message states the rule from the constants data.validation checks with, not
    copies of their values."""
    import data.validation as validation
    import data.validation_report as vr

    assert validation.GAP_MEDIANS == vr.GAP_MEDIANS
    assert validation.MIN_GAP == pd.Timedelta(days=vr.MIN_GAP_DAYS)
    monkeypatch.setattr(vr, "GAP_MEDIANS", 7)
    monkeypatch.setattr(vr, "MIN_GAP_DAYS", 12)
    gaps = {"count": 1, "limit_days": 12.0,
            "first": [{"after": "2020-01-02", "before": "2020-02-03", "days": 32.0}]}
    assert "(7 x its median spacing, at least 12 days)" in vr.gap_warning("AAA", gaps)


@pytest.mark.parametrize("freq, n, hole", [("W-FRI", 60, 15), ("5min", 2000, 800),
                                           ("h", 300, 100)])
def test_normal_spacing_is_no_gap(bars, freq, n, hole):
    """Weekly bars, and intraday bars with their nights and weekends: no warning; a hole
    of `hole` bars in them (15 weeks, or over 10 days of trading hours) is one."""
    df = bars(("AAA",), n=n)
    if freq == "W-FRI":
        df["date"] = pd.date_range("2020-01-03", periods=n, freq=freq)
    else:  # trading hours only, Monday to Friday
        stamps = pd.date_range("2021-03-01", periods=n * 40, freq=freq)
        stamps = stamps[(stamps.dayofweek < 5) & (stamps.hour >= 10) & (stamps.hour < 16)]
        df["date"] = stamps[:n]
    assert validate_bars(df)[1].gaps == {}
    df = df.drop(index=range(n // 2, n // 2 + hole))
    assert validate_bars(df)[1].gaps["AAA"]["count"] == 1


# ---- the shared S&P file ----------------------------------------------------------------


@pytest.fixture(scope="module")
def sp500(sp500_shared) -> pd.DataFrame:
    return load_bars(str(sp500_shared))


def test_shared_file_quirks_are_met_and_counted(sp500):
    clean, report = validate_bars(sp500, on_error="drop")
    # 12 unbracketed rows: 10 quirks within 9% of their range are widened, the 2 bad prints
    # (~2x off) fail their symbols
    assert report.totals() == {
        "sorted": 0, "open_filled": 11, "high_low_filled": 8, "bracket_widened": 10,
        "zero_volume": 4,
    }
    assert set(report.dropped) == {"CHD", "LNT"} and len(sp500) == 619_040
    assert report.rows_out == len(sp500) - 2 * 1259
    assert report.repairs["O"] == {
        "open_filled": 2, "high_low_filled": 1, "bracket_widened": 2, "zero_volume": 1
    }
    assert not clean[["open", "high", "low", "close"]].isna().any().any()
    # the file's only long gaps: 2015-03-06 -> 2015-03-23 in three symbols, kept
    assert sorted(report.gaps) == ["DHR", "ES", "O"]
    # and its only warnings: those gaps and Discovery's split (the intraday gap rule adds none)
    assert sorted(report.warnings) == ["DHR", "DISCA", "DISCK", "ES", "O"]
    assert report.gaps["O"]["first"] == [
        {"after": "2015-03-06", "before": "2015-03-23", "days": 17.0}
    ]


def test_shared_file_bad_prints_are_symbol_errors(sp500):
    with pytest.raises(DataValidationError, match="bad print") as err:
        validate_bars(sp500)
    assert err.value.symbol == "CHD" and "also failing: LNT" in str(err.value)
    _, report = validate_bars(sp500, on_error="drop")
    assert ("2016-05-19 (close 17.87 outside low 35.085 .. high 35.785)" in report.dropped["LNT"]
            and "correct the row at the source or leave the symbol out" in report.dropped["LNT"])
    assert "2014-05-19 (open 18.77 outside low 33.695" in report.dropped["CHD"]


def test_shared_file_short_symbols_dropped_or_raised(sp500):
    clean, report = validate_bars(sp500, min_rows=300, on_error="drop")
    assert "APTV" in report.dropped and "44 rows, at least 300" in report.dropped["APTV"]
    short = {"APTV", "DWDP", "BHF", "BHGE", "DXC", "HLT", "EVHC"}
    assert set(report.dropped) == short | {"CHD", "LNT"}  # + the two bad prints
    assert clean["symbol"].nunique() == 496
    with pytest.raises(DataValidationError, match="'APTV': 44 rows") as err:
        validate_bars(sp500, min_rows=300)
    assert err.value.symbol == "APTV"


# ---- report and error objects -----------------------------------------------------------


def test_report_roundtrip_merge_and_summary(bars):
    df = bars(("AAA", "BBB"), n=30)
    df.loc[_at(df, "AAA", 4), "volume"] = 0
    _, ra = validate_bars(df[df["symbol"] == "AAA"])
    _, rb = validate_bars(bars(("CCC",), n=5), min_rows=1)
    merged = ValidationReport.merge([ra, rb])
    assert merged.symbols_in == 2 and merged.rows_in == 35 and merged.totals()["zero_volume"] == 1
    assert ValidationReport.from_dict(merged.to_dict()) == merged
    text = merged.summary()
    assert "2 symbols in, 2 kept, 0 dropped" in text
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[2:]}
    assert rows["AAA"] == ["0", "0", "0", "0", "1"] and rows["TOTAL"][-1] == "1"
    with pytest.raises(ValueError, match="cannot merge reports of kinds"):
        ValidationReport.merge([ra, ValidationReport(kind="lob")])


def test_error_pickles_with_its_attributes(bars):
    df = bars(("AAA",), n=10)
    df.loc[3, "close"] = np.nan
    with pytest.raises(DataValidationError) as err:
        validate_bars(df)
    copy = pickle.loads(pickle.dumps(err.value))
    assert (copy.symbol, copy.rows, str(copy)) == (err.value.symbol, err.value.rows, str(err.value))


# ---- LOB --------------------------------------------------------------------------------


def _lob_crossed(df):
    df.loc[_at(df, "BBB", 4), "bid_price_1"] = df.loc[_at(df, "BBB", 4), "ask_price_1"]
    return "crossed book"


def _lob_size(df):
    df.loc[_at(df, "BBB", 6), "ask_size_2"] = 0.0
    return "non-positive prices or sizes"


def _lob_nan(df):
    df.loc[_at(df, "BBB", 2), "bid_size_1"] = np.nan
    return "NaN prices or sizes"


def _lob_dup(df):
    df.loc[_at(df, "BBB", 8), "ts"] = df.loc[_at(df, "BBB", 7), "ts"]
    return r"duplicate \(symbol, ts\)"


def _lob_levels(df):
    at = _at(df, "BBB", 5)  # level 2's ask below level 1's, still above the best bid
    df.loc[at, "ask_price_2"] = (df.loc[at, "ask_price_1"] + df.loc[at, "bid_price_1"]) / 2
    return "book levels out of order"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("breaker", [_lob_crossed, _lob_size, _lob_nan, _lob_dup, _lob_levels])
def test_lob_errors_raise_or_drop(lob, write_frame, fmt, breaker):
    from data.loading import load_lob

    df = lob(("AAA", "BBB"), n=20)
    what = breaker(df)
    frame = load_lob(write_frame(df, fmt))
    with pytest.raises(DataValidationError, match=what) as err:
        validate_lob(frame)
    assert err.value.symbol == "BBB"
    clean, report = validate_lob(frame, on_error="drop")
    assert list(report.dropped) == ["BBB"] and clean["symbol"].unique().tolist() == ["AAA"]


@pytest.mark.parametrize("breaker", [_lob_crossed, _lob_size, _lob_nan, _lob_levels])
def test_a_few_faulty_snapshots_are_dropped_not_the_symbol(lob, breaker):
    """One faulty snapshot in 400 (an empty level, a crossed book in a fast market) is
    dropped and counted; the symbol trains on the rest. More than 1% still fails it."""
    df = lob(("AAA", "BBB"), n=400)
    breaker(df)
    clean, report = validate_lob(df)
    assert report.repairs == {"BBB": {"snapshots_dropped": 1}} and not report.dropped
    kept = clean.loc[clean["symbol"] == "BBB", "ts"]
    assert len(kept) == 399 and kept.is_monotonic_increasing
    assert (clean["symbol"] == "AAA").sum() == 400

    many = lob(("AAA", "BBB"), n=150)  # 2 of 150 is over 1%
    at = many.index[many["symbol"] == "BBB"][[3, 9]]
    many.loc[at, "ask_size_2"] = 0.0
    with pytest.raises(DataValidationError,
                       match=r"2 rows with non-positive .*over 1% of this symbol's snapshots"):
        validate_lob(many)


def test_lob_unsorted_is_repaired_and_too_short_dropped(lob):
    df = lob(("AAA", "BBB"), n=20)
    shuffled = pd.concat([df.iloc[:20].iloc[::-1], df.iloc[20:]])
    clean, report = validate_lob(shuffled.iloc[:-5], min_rows=16, on_error="drop")
    assert report.kind == "lob" and report.repairs == {"AAA": {"sorted": 20}}
    assert list(report.dropped) == ["BBB"] and "15 rows, at least 16" in report.dropped["BBB"]
    pd.testing.assert_frame_equal(clean, df.iloc[:20][clean.columns], check_dtype=False)


def test_missing_columns_of_the_other_kind_name_the_kind_to_set() -> None:
    """Order-book snapshots read as bars (or bars as LOB) say which kind to set."""
    from data.validation import check_columns, lob_columns

    lob = ["symbol", "ts", "ask_price_1", "ask_size_1", "bid_price_1", "bid_size_1"]
    with pytest.raises(DataValidationError, match=r"look like order-book snapshots: set "
                       r"`dataset.kind: lob` in the job spec \(`--kind lob`") as got:  # fmt: skip
        check_columns(lob, ["symbol", "date", "open", "high", "low", "close", "volume"], "f")
    # the kind is the fix: no bar columns to add first (a book has no volume column)
    assert "add one" not in str(got.value) and "must have columns" not in str(got.value)
    bars = ["symbol", "date", "open", "high", "low", "close", "volume"]
    with pytest.raises(DataValidationError, match="look like bars: set `dataset.kind: bars`"):
        lob_columns(bars, "f")
    with pytest.raises(DataValidationError) as plain:
        check_columns(["symbol", "when", "close"], ["symbol", "date"], "f")
    assert "look like" not in str(plain.value)


# ---- bars that are not clean daily US equities --------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_padded_symbol_and_its_plain_twin_fail_naming_the_spaces(bars, write_frame, fmt):
    """'AAA ' (a padded export) is not 'AAA': no job can name it, and 'AAA' alone would
    silently train on part of its history. Both fail, saying so; a clean symbol stays."""
    df = bars(("AAA", "BBB", "CCC"), n=40)
    df.loc[df.index[(df["symbol"] == "AAA")][25:], "symbol"] = "AAA "
    df.loc[df["symbol"] == "CCC", "symbol"] = " CCC"
    frame = load_bars(write_frame(df, fmt))
    assert sorted(frame["symbol"].unique()) == [" CCC", "AAA", "AAA ", "BBB"]

    with pytest.raises(DataValidationError, match=r"symbol ' CCC' has spaces at its start or "
                       r"end, so it is not the symbol 'CCC'; fix: strip") as err:
        validate_bars(frame)
    assert err.value.symbol == " CCC"

    clean, report = validate_bars(frame, on_error="drop")
    assert clean["symbol"].unique().tolist() == ["BBB"]
    assert sorted(report.dropped) == [" CCC", "AAA", "AAA "]
    assert "some of its rows are spelled 'AAA ' (with spaces)" in report.dropped["AAA"]
    assert "so it is not the symbol 'AAA'" in report.dropped["AAA "]


def test_exact_copies_and_conflicting_duplicates_are_told_apart(bars):
    """Two rows of one (symbol, date): identical copies (overlapping downloads) and rows
    whose values differ fail with different messages and fixes."""
    df = bars(("AAA", "BBB", "CCC"), n=40)
    copies = df[df["symbol"] == "AAA"].iloc[[3, 4]]
    other = df[df["symbol"] == "BBB"].iloc[[6]].assign(close=lambda d: d["close"] * 1.01)
    df = pd.concat([df, copies, other], ignore_index=True)
    _, report = validate_bars(df, on_error="drop")
    assert sorted(report.dropped) == ["AAA", "BBB"]
    assert "4 rows with a duplicate (symbol, date) at 2020-01-06, 2020-01-07; fix: they " \
        "are exact copies" in report.dropped["AAA"]
    assert "drop_duplicates()" in report.dropped["AAA"]
    assert "2 rows with a duplicate (symbol, date) at 2020-01-09; fix: their values " \
        "differ: keep the right row" in report.dropped["BBB"]
    assert "drop_duplicates" not in report.dropped["BBB"]


def _split(df: pd.DataFrame, symbol: str, i: int, factor: float) -> None:
    """Divide `symbol`'s prices from its i-th row on by `factor` (an unadjusted split)."""
    rows = df.index[df["symbol"] == symbol][i:]
    df.loc[rows, ["open", "high", "low", "close"]] /= factor
    df["volume"] = df["volume"].astype(float)
    df.loc[rows, "volume"] *= factor


def test_split_like_moves_are_a_warning_not_an_error(bars):
    """A 2:1 split (prices halve overnight, volume doubles) and a 1:10 reverse split left
    unadjusted are named, with the date, prices and ratio; the symbols are kept unchanged.
    A random walk has none."""
    df = bars(("AAA", "BBB", "CCC"), n=60)
    _split(df, "AAA", 30, 2.0)
    _split(df, "BBB", 45, 0.1)
    clean, report = validate_bars(df)
    pd.testing.assert_frame_equal(clean, validate_bars(df, on_error="drop")[0])
    assert sorted(report.splits) == ["AAA", "BBB"] and not report.dropped
    (move,) = report.splits["AAA"]["first"]
    assert move["at"] == "2020-02-12" and move["split"] == "2:1 split"
    assert move["ratio"] == pytest.approx(0.5, abs=0.02)
    assert report.splits["BBB"]["first"][0]["split"] == "1:10 reverse split"
    warning = report.warnings["AAA"]
    assert "symbol 'AAA': 1 bar whose open and close moved by a split's ratio" in warning
    assert "at 2020-02-12 (close " in warning and "a 2:1 split?" in warning
    assert "adjust the earlier prices (and volumes) for the split" in warning
    assert "warning AAA: " in report.summary()
    back = ValidationReport.from_dict(report.to_dict())
    assert back.splits == report.splits and back.warnings == report.warnings
    merged = ValidationReport.merge([report, ValidationReport()])
    assert merged.splits == report.splits


def test_a_crash_that_is_no_split_ratio_is_no_split_warning(bars):
    """A -40% day, or a -50% open that recovers by the close, is a real move: no warning."""
    df = bars(("AAA", "BBB"), n=60)
    _split(df, "AAA", 30, 1 / 0.6)
    i = df.index[df["symbol"] == "BBB"][30]
    df.loc[i, "open"] = df.loc[i - 1, "close"] / 2
    df.loc[i, "low"] = df.loc[i, "open"]
    _, report = validate_bars(df)
    assert report.splits == {} and report.warnings == {}


def test_split_warning_and_gap_warning_share_one_message(bars):
    df = bars(("AAA",), n=80)
    _split(df, "AAA", 30, 3.0)
    df = df.drop(index=df.index[50:70])  # 20 business days missing: a long gap
    _, report = validate_bars(df)
    assert list(report.gaps) == ["AAA"] and list(report.splits) == ["AAA"]
    text = report.warnings["AAA"]
    assert "gap between consecutive bars" in text and "a 3:1 split?" in text


def test_shared_file_split_warnings_are_discoverys_split_only(sp500):
    """Of the shared file's drops over 25% (spin-offs, crashes, earnings), only DISCA and
    DISCK on 2014-08-07 land on a split's ratio at open and close: Discovery's 2-for-1."""
    _, report = validate_bars(sp500, on_error="drop")
    assert sorted(report.splits) == ["DISCA", "DISCK"]
    for s in ("DISCA", "DISCK"):
        assert [m["at"] for m in report.splits[s]["first"]] == ["2014-08-07"]
        assert report.splits[s]["first"][0]["split"] == "2:1 split"


@pytest.mark.parametrize(("factor", "guess"), [
    (1 / 20, "a 20:1 split or a change of unit (pence to pounds, cents to dollars)"),  # AMZN
    (1 / 50, "a 50:1 split or a change of unit (pence to pounds, cents to dollars)"),  # CMG
    (100, "a change of unit (pounds to pence, dollars to cents) or a 1:100 reverse split"),
    (1000, "a change of unit (pounds to pence, dollars to cents) or a 1:1000 reverse split"),
    (1 / 13, "a split or a change of unit (pence to pounds, cents to dollars)"),
], ids=["20:1", "50:1", "x100", "x1000", "x1/13"])
def test_a_jump_of_ten_times_or_more_is_a_warning(bars, factor, guess):
    """A 20:1 or 50:1 split, or a x100 / x1000 change of unit, left in the prices passed
    validation silently (the split check knows ratios up to 10); it is now a warning naming
    the date, the closes and what it may be, and the symbol is kept unchanged."""
    df = bars(("AAA", "BBB"), n=60)
    _split(df, "AAA", 30, 1 / factor)
    clean, report = validate_bars(df)
    assert set(clean["symbol"]) == {"AAA", "BBB"} and report.splits == {}
    assert list(report.jumps) == ["AAA"]
    (jump,) = report.jumps["AAA"]["first"]
    assert jump["at"] == "2020-02-12" and jump["guess"] == guess and "back" not in jump
    assert jump["ratio"] == pytest.approx(factor, rel=0.05)
    warning = report.warnings["AAA"]
    assert warning.startswith("symbol 'AAA': 1 bar whose close moved by a factor of 9.5 or "
                              "more against the previous close at 2020-02-12 (close ")
    assert f": {guess}?)" in warning
    assert "adjust the earlier prices (and volumes) for the split, or write every price in " \
        "one unit" in warning and "bad tick" not in warning
    assert ValidationReport.from_dict(report.to_dict()).jumps == report.jumps
    assert ValidationReport.merge([report, ValidationReport()]).jumps == report.jumps


def test_a_one_bar_spike_is_one_bad_tick_warning(bars):
    """One bar with every price x1000 and back on the next bar (a bad tick) is one warning
    that says so, not two jumps."""
    df = bars(("AAA",), n=60)
    i = df.index[20]
    df.loc[i, ["open", "high", "low", "close"]] *= 1000
    _, report = validate_bars(df)
    assert report.jumps["AAA"]["count"] == 1 and report.jumps["AAA"]["spikes"] == 1
    (jump,) = report.jumps["AAA"]["first"]
    assert jump["guess"] == "a bad tick" and jump["back"] == df.loc[i + 1, "close"]
    warning = report.warnings["AAA"]
    assert f"at {df.loc[i, 'date']:%Y-%m-%d} (close " in warning
    assert ", back to " in warning and "on the next bar: a bad tick?)" in warning
    assert warning.endswith("correct the bad tick (or remove that bar) at the source")


def test_a_ten_to_one_split_is_told_once_as_a_split(bars):
    """A 10:1 split is a split-like move (open and close x0.1): not a jump as well."""
    df = bars(("AAA",), n=60)
    _split(df, "AAA", 30, 10.0)
    _, report = validate_bars(df)
    assert list(report.splits) == ["AAA"] and report.jumps == {}


def test_shared_file_and_intraday_bars_have_no_jumps(sp500):
    """The shared file's largest one-day moves (NI x0.37, LNT's bad print x0.51 and x2.0)
    are far under a factor of 9.5; neither do minute bars move so far."""
    from data.synthetic import intraday_bars, session_times

    assert validate_bars(sp500, on_error="drop")[1].jumps == {}
    minutes = intraday_bars(session_times("2021-03-01", "2021-04-30"), ("AAA", "BBB"),
                            price=2.0, sigma=0.01, tick=0.01)
    assert validate_bars(minutes)[1].jumps == {}


def test_local_times_repeated_when_daylight_saving_ends_are_named(bars):
    """24-hour bars (crypto) in New York clock time without an offset repeat 01:00 on
    2021-11-07: the duplicate's fix says so and how to write the times; a duplicate at
    another time keeps the plain fix."""
    t = pd.date_range("2021-11-05", "2021-11-09", freq="h", tz="America/New_York")
    n = len(t)
    df = bars(("AAA", "BBB", "CCC"), n=n)
    plain = pd.date_range("2021-11-05", periods=n, freq="h")
    df["date"] = np.concatenate([t.tz_localize(None), plain, plain])
    i = df.index[df["symbol"] == "BBB"][30]
    df.loc[i, "date"] = df.loc[i - 1, "date"]  # 2021-11-06 05:00: no clock change
    _, report = validate_bars(df, on_error="drop")
    assert sorted(report.dropped) == ["AAA", "BBB"]
    assert ("2 rows with a duplicate (symbol, date) at 2021-11-07T01:00:00; fix: each "
            "repeated time is in the hour that clocks repeat when daylight saving time ends "
            "in America/New_York") in report.dropped["AAA"]
    assert "daylight saving" not in report.dropped["BBB"]


def test_a_series_without_volume_is_told_to_use_zero(bars):
    """An index or FX rate has no volume (empty cells): the symbol fails, and the fix says
    that 0 is valid there; with 0 it validates, counted as zero volume."""
    df = bars(("AAA", "EURUSD"), n=40)
    df["volume"] = df["volume"].astype(float)
    df.loc[df["symbol"] == "EURUSD", "volume"] = np.nan
    _, report = validate_bars(df, on_error="drop")
    assert "missing volume" in report.dropped["EURUSD"]
    assert "with 0 for a series that has no volume" in report.dropped["EURUSD"]
    df["volume"] = df["volume"].fillna(0)
    _, report = validate_bars(df)
    assert report.repairs["EURUSD"] == {"zero_volume": 40}


# ---- data brought by users (tester's report /tmp/hdata) -----------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_date_fails_its_symbol_alone_named_by_its_file_row(bars, write_frame, fmt):
    """A missing date (NaT in Parquet, an empty cell in CSV) failed every symbol with a
    TypeError from the duplicate check; it fails its own symbol, named by its row in the
    file (the loader's sort moves it), and the other symbols are kept."""
    df = bars(("AAA", "BBB"), n=40)
    df["date"] = df["date"].astype(object)
    df.loc[_at(df, "BBB", 5), "date"] = None
    frame = load_bars(write_frame(df, fmt))
    kept, report = validate_bars(frame, on_error="drop")
    assert set(kept["symbol"]) == {"AAA"}
    assert report.dropped["BBB"] == ("symbol 'BBB': 1 row with missing date at row 45 of the "
                                     "file; fix: fill or remove these rows at the source")
    with pytest.raises(DataValidationError, match="1 row with missing date") as err:
        validate_bars(frame)
    assert err.value.symbol == "BBB"
    # a frame given directly: its own row positions
    _, report = validate_bars(df, on_error="drop")
    assert "missing date at row position 45 of the frame" in report.dropped["BBB"]
    # with a date window too: the window's filter dropped the row, and BBB trained on
    # the rest as if nothing were missing
    dates = sorted(d for d in df["date"] if d is not None)
    frame = load_bars(write_frame(df, fmt), start=dates[2], end=dates[-3])
    kept, report = validate_bars(frame, on_error="drop")
    assert set(kept["symbol"]) == {"AAA"} and "missing date" in report.dropped["BBB"]


def test_out_of_range_parquet_time_names_the_file_column_and_fix(bars, write_frame):
    """A 9999-12-31 sentinel in a Parquet timestamp[us] column gave pandas' bare "Out of
    bounds nanosecond timestamp"."""
    df = bars(("AAA",), n=10)
    table = pa.Table.from_pandas(df, preserve_index=False)
    when = table.column("date").cast(pa.timestamp("us")).to_pylist()
    when[3] = datetime.datetime(9999, 12, 31)
    table = table.set_column(1, "date", pa.array(when, pa.timestamp("us")))
    path = write_frame(df, "parquet")
    pq.write_table(table, path)
    with pytest.raises(DataValidationError, match=rf"^{re.escape(path)}: column 'date' holds 1 "
                       r"time outside the range .* e\.g\. 9999-12-31 at row 3 .*remove those "
                       r"rows or give them their real time") as err:
        load_bars(path)
    assert err.value.rows == [3]


def test_absurd_prices_fail_their_symbol_without_overflow_warnings(bars):
    """Prices of 1e200 passed validation, then failed preparation with a false reason
    ("missing or non-positive inputs") and a numpy overflow warning."""
    from data.prepare import PrepareConfig, prepare_frame

    df = bars(("AAA", "BBB"), n=400)
    df.loc[df["symbol"] == "BBB", ["open", "high", "low", "close"]] *= 1e200
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept, report = validate_bars(df, on_error="drop")
        result = prepare_frame(df, PrepareConfig(horizons=(1,), seq_len=5), on_error="drop")
    assert set(kept["symbol"]) == {"AAA"}
    assert report.dropped["BBB"].startswith("symbol 'BBB': 400 rows with prices above 1e+15, "
                                            "which no market quotes")
    assert "prices above 1e+15" in result.dropped["BBB"] and set(result.prepared) == {"AAA"}
    # the largest real quotes pass
    df.loc[df["symbol"] == "BBB", ["open", "high", "low", "close"]] /= 1e200 / 1e4
    assert validate_bars(df)[1].dropped == {}


def _halted(df: pd.DataFrame, symbol: str, first: int, last: int) -> pd.DataFrame:
    """`symbol`'s rows first..last: one price, no volume (a halt)."""
    rows = df.index[df["symbol"] == symbol][first:last + 1]
    df.loc[rows, ["open", "high", "low", "close"]] = df.loc[rows[0], "close"]
    df.loc[rows, "volume"] = 0
    return df


def test_a_halt_inside_or_at_the_end_of_a_symbol_is_a_warning(bars):
    """Long runs of one price with zero volume went unflagged, and made the test split's
    labels all flat; a short one (an illiquid day or two) is no warning."""
    df = bars(("AAA", "BBB", "CCC"), n=400)
    df = _halted(df, "BBB", 241, 399)  # its last 159 bars
    df = _halted(df, "CCC", 100, 111)  # 12 bars inside
    df = _halted(df, "AAA", 50, 58)  # 9 bars: under STALE_BARS
    kept, report = validate_bars(df)
    assert set(kept["symbol"]) == {"AAA", "BBB", "CCC"}  # kept, unchanged
    assert set(report.stale) == {"BBB", "CCC"}
    bbb = report.stale["BBB"]
    assert bbb["count"] == 1 and bbb["limit_bars"] == 10
    assert bbb["first"] == [{"from": "2020-12-03", "to": "2021-07-13", "bars": 159}]
    message = report.warnings["BBB"]
    assert message.startswith("symbol 'BBB': 1 run of bars without a trade (volume 0, open = "
                              "high = low = close, one price throughout) of 10 bars or more")
    assert "at 2020-12-03 -> 2021-07-13 (159 bars); kept" in message
    assert "(12 bars)" in report.warnings["CCC"]
    assert ValidationReport.from_dict(report.to_dict()).stale == report.stale


def test_a_series_quoted_by_its_close_only_is_no_halt(bars):
    """An index or FX series with open = high = low = close and no volume moves every bar:
    no run of one price, no warning."""
    df = bars(("AAA",), n=200)
    df[["open", "high", "low"]] = np.repeat(df[["close"]].to_numpy(), 3, axis=1)
    df["volume"] = 0
    assert validate_bars(df)[1].stale == {}


def _flat(df: pd.DataFrame, symbol: str, first: int, last: int) -> pd.DataFrame:
    """`symbol`'s rows first..last: one price, volume unchanged (traded)."""
    rows = df.index[df["symbol"] == symbol][first:last + 1]
    df.loc[rows, ["open", "high", "low", "close"]] = df.loc[rows[0], "close"]
    return df


def test_a_long_run_of_one_close_with_volume_is_a_warning(bars):
    """One price through a symbol's last 200 bars with volume went unflagged (the stale
    check needs volume 0) and made its test split all flat; a run of 19 bars is none, and a
    halt without trade is told by the stale check alone."""
    df = bars(("AAA", "BBB", "CCC", "DDD"), n=400)
    df = _flat(df, "AAA", 200, 399)  # its last 200 bars
    df = _flat(df, "BBB", 100, 118)  # 19 bars: under FLAT_BARS
    df = _flat(df, "CCC", 100, 120)  # 21 bars inside
    df = _halted(df, "DDD", 300, 399)  # no trade: a stale run
    kept, report = validate_bars(df)
    assert set(kept["symbol"]) == {"AAA", "BBB", "CCC", "DDD"}
    assert set(report.flat) == {"AAA", "CCC"} and set(report.stale) == {"DDD"}
    assert report.flat["AAA"] == {"count": 1, "limit_bars": 20, "first": [
        {"from": "2020-10-07", "to": "2021-07-13", "bars": 200}]}
    message = report.warnings["AAA"]
    assert message.startswith("symbol 'AAA': 1 run of bars whose close does not change (with "
                              "volume traded) of 20 bars or more")
    assert "at 2020-10-07 -> 2021-07-13 (200 bars); kept" in message
    assert "choose a date range without it" in message
    assert "(21 bars)" in report.warnings["CCC"]
    assert ValidationReport.from_dict(report.to_dict()).flat == report.flat
    assert ValidationReport.merge([report, ValidationReport()]).flat == report.flat


def test_minute_bars_on_one_tick_for_hours_are_no_flat_run():
    """A cheap stock's minute bars sit on one cent for over a hundred bars (more than
    FLAT_BARS and 1% of its bars) within a day: normal, no warning. The same price for a
    week of minutes is one."""
    from data.synthetic import intraday_bars, session_times

    df = intraday_bars(session_times("2021-03-01", "2021-03-12"), price=2.0, sigma=0.0005,
                       tick=0.01)
    close = df["close"].to_numpy()
    runs = np.bincount(np.cumsum(np.r_[True, close[1:] != close[:-1]]))
    assert runs.max() > max(20, 0.01 * len(df))
    assert validate_bars(df)[1].flat == {}
    stuck = df["date"].between("2021-03-03", "2021-03-10 10:00")
    df.loc[stuck, ["open", "high", "low", "close"]] = 2.5  # a price of its own
    (run,) = validate_bars(df)[1].flat["AAA"]["first"]
    assert (run["from"], run["to"]) == ("2021-03-03T09:30:00", "2021-03-10T10:00:00")


def test_shared_file_has_no_flat_run(sp500):
    """The shared file's longest run of one close is 4 bars."""
    assert validate_bars(sp500, on_error="drop")[1].flat == {}


@pytest.mark.parametrize(("columns", "hints"), [
    (["ticker", "date", "open", "high", "low", "close", "volume"], ["rename 'ticker' -> 'symbol'"]),
    (["Symbol", "Date", "open", "high", "low", "Adj Close", "volume"],
     ["rename 'Symbol' -> 'symbol', 'Date' -> 'date', 'Adj Close' -> 'close' (column names are "
      "case- and whitespace-sensitive)", "'Adj Close' as the close: adjust open, high and low"]),
    (["Date", "Open", "High", "Low", "Close", "Adj Close", "Volume"],
     ["'Close' -> 'close', 'Volume' -> 'volume'", "there is no symbol column: add one, e.g. "
      "df['symbol'] = 'AAPL'"]),
    (["symbol", "date", "open", "high", "low", "close"],
     ["there is no volume column: add one, with 0 for a series that has no volume"]),
    # the Kaggle S&P 500 set (the bundled sample's source) names its symbols `Name`
    (["date", "open", "high", "low", "close", "volume", "Name"], ["rename 'Name' -> 'symbol'"]),
    # beside a ticker, `Name` is the company's name: the ticker is the symbol
    (["Name", "Ticker", "date", "open", "high", "low", "close", "volume"],
     ["rename 'Ticker' -> 'symbol'"]),
])  # fmt: skip
def test_missing_columns_are_told_all_at_once_with_what_to_do(columns, hints):
    """Another tool's names (ticker, Adj Close), a one-symbol file without a symbol column
    and a series without volume: each missing column gets its fix in the one error."""
    from data.validation import check_columns

    with pytest.raises(DataValidationError, match="missing columns") as err:
        check_columns(columns, ("symbol", "date", "open", "high", "low", "close", "volume"), "f")
    for hint in hints:
        assert hint in str(err.value)
    assert "the file must have columns" not in str(err.value)


def _csv_error(tmp_path, *rows: str) -> str:
    """load_bars' error for a CSV of `rows` under the bars header (tmp_path / 'f.csv')."""
    path = tmp_path / "f.csv"
    path.write_text("symbol,date,open,high,low,close,volume\n" + "".join(f"{r}\n" for r in rows))
    with pytest.raises(DataValidationError) as err:
        load_bars(str(path))
    return str(err.value)


def test_every_non_numeric_column_is_told_at_once_with_the_separator_hint(tmp_path):
    text = _csv_error(tmp_path, 'AAA,2020-01-02,1,1.1,0.9,$1.05,"158,168,416"')
    assert text.startswith(f"{tmp_path / 'f.csv'}: column 'close' is not numeric")
    assert "column 'volume' is not numeric: 1 value does not parse, e.g. '158,168,416' at row " \
           "0; write plain numbers (158168416) without thousands separators" in text
    assert "e.g. '$1.05' at row 0; write plain numbers (1.05)" in text


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_rows_the_loader_sorted_are_counted_as_the_sorted_repair(bars, write_frame, fmt):
    """The loader sorts by (symbol, date) before validation, whose `sorted` count was then
    always 0 (`quantray data inspect` of a shuffled file said so). A file in (date, symbol)
    order has its rows in order within each symbol: nothing to count."""
    df = bars(("AAA", "BBB"), n=10)
    by_date = df.sort_values(["date", "symbol"], kind="stable")
    _, report = validate_bars(load_bars(write_frame(by_date, fmt, "by_date")))
    assert all("sorted" not in r for r in report.repairs.values()), report.repairs
    swapped = df.iloc[[1, 0, *range(2, 12), 13, 12, 15, 14, *range(16, 20)]]  # AAA 1, BBB 2
    _, report = validate_bars(load_bars(write_frame(swapped, fmt, "swapped")))
    assert {s: r.get("sorted") for s, r in report.repairs.items()} == {"AAA": 2, "BBB": 4}
    _, report = validate_bars(load_bars(write_frame(swapped, fmt, "swapped"), symbols=["BBB"]))
    assert {s: r.get("sorted") for s, r in report.repairs.items()} == {"BBB": 4}


def test_missing_value_text_in_a_string_price_column_reads_as_csv_reads_it(bars, tmp_path):
    """'NaN' in a Parquet column of strings refused the whole file as not numeric, while
    the same CSV read it as a missing value and dropped only that symbol."""
    df = bars(("AAA", "BBB"), n=300)
    df["close"] = df["close"].map(repr).astype(object)
    df.loc[5, "close"] = "NaN"  # AAA's
    df.to_csv(tmp_path / "f.csv", index=False)
    df.to_parquet(tmp_path / "f.parquet")
    results = []
    for name in ("f.csv", "f.parquet"):
        clean, report = validate_bars(load_bars(str(tmp_path / name)), on_error="drop")
        results.append((sorted(clean["symbol"].unique()), report.dropped))
    assert results[0] == results[1]
    assert results[0][0] == ["BBB"] and "1 row with NaN close" in results[0][1]["AAA"]


def test_an_empty_date_column_is_called_empty_not_numbers(tmp_path):
    """A CSV date column with no value reads as float NaN: it was said to hold numbers
    (e.g. nan) and told to convert YYYYMMDD or epoch seconds."""
    text = _csv_error(tmp_path, "AAA,,1,1,1,1,1", "AAA,,1,1,1,1,1")
    assert text == (f"{tmp_path / 'f.csv'}: column 'date' is empty (no value in its 2 rows); "
                    "fill it with the rows' dates at the source")


def test_decimal_commas_are_told_to_read_with_decimal_comma_not_thousands(tmp_path):
    """'67,71' was told to drop the comma (6771, 100 times the price); a comma followed by
    other than three digits is a decimal comma."""
    text = _csv_error(tmp_path, 'AAA,2020-01-02,"67,71","68,5","1.066,9",67,"1,000"')
    assert "column 'open' is not numeric: 1 value does not parse, e.g. '67,71' at row 0; the " \
           "numbers are written with a decimal comma ('67,71' is 67.71): write them with a " \
           "decimal point at the source (pandas: pd.read_csv(..., decimal=',')" in text
    assert "'68,5' is 68.5" in text and "'1.066,9' is 1066.9" in text
    assert "e.g. '1,000' at row 0; write plain numbers (1000) without thousands" in text


def test_a_bytes_symbol_column_says_how_to_decode_it(bars):
    df = bars(("AAA",), n=5)
    df["symbol"] = df["symbol"].str.encode("utf-8")
    with pytest.raises(DataValidationError, match=r"found bytes such as b'AAA'; decode it, "
                       r"e\.g\. df\['symbol'\] = df\['symbol'\]\.str\.decode\('utf-8'\)"):
        validate_bars(df)
