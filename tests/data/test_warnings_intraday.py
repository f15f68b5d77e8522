"""Warnings about intraday data: holes in a symbol's trading hours (data.validation with
data.sessions), an explicit threshold whose flat band holds only exactly-0 returns (tick
prices; data.prepare), and counts in messages that read "1 row", not "1 rows"."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.prepare import PrepareConfig, prepare_frame, prepare_symbol
from data.split_rules import leaky_gap_problem
from data.splits import SplitError, holdout_split
from data.synthetic import intraday_bars, session_times
from data.targets import fit_thresholds, to_classes
from data.validation import DataValidationError, validate_bars
from data.validation_report import ValidationReport
from data.wording import counted

MINUTES = session_times("2021-03-01", "2021-04-30")  # 09:30-16:00, Good Friday included
HOURS = session_times("2021-03-01", "2021-04-30", "1h", session=("10:00", "16:00"))


def _gaps(times) -> dict | None:
    _, report = validate_bars(intraday_bars(pd.DatetimeIndex(times)))
    return report.gaps.get("AAA")


def _without(times, start: str, end: str):
    return times[~((times >= start) & (times < end))]


# ---- holes in intraday bars -------------------------------------------------------------
def test_a_missing_weekday_in_minute_bars_is_a_gap_with_its_times_and_length():
    """Wednesday 2021-03-17 missing from 1-minute bars: under the old rule (10 days at
    least) no warning; now one, from the last bar before the hole to the first after."""
    _, report = validate_bars(intraday_bars(MINUTES[MINUTES.normalize() != "2021-03-17"]))
    assert report.gaps == {"AAA": {
        "count": 1, "limit_days": 10.0, "limit_hours": 1.0,
        "first": [{"after": "2021-03-16T15:59:00", "before": "2021-03-18T09:30:00",
                   "days": 1.73, "missing_hours": 6.5}],
    }}
    warning = report.warnings["AAA"]
    assert warning.startswith("symbol 'AAA': 1 gap between consecutive bars missing 1 hour or "
                              "more of its usual trading time")
    assert ("2021-03-16T15:59:00 -> 2021-03-18T09:30:00 (1.73 days, 6.5 trading hours "
            "missing)") in warning
    assert "fill the missing bars at the source" in warning
    assert ValidationReport.from_dict(report.to_dict()) == report


@pytest.mark.parametrize("times, short, long, hours", [
    # 45 minutes of 1-minute bars: under an hour; 2 hours are a gap
    (MINUTES, ("2021-03-23 11:00", "2021-03-23 11:45"), ("2021-03-23 11:00", "2021-03-23 13:00"),
     2.0),
    # 59 minutes, and an hour
    (MINUTES, ("2021-03-23 11:00", "2021-03-23 11:59"), ("2021-03-23 11:00", "2021-03-23 12:00"),
     1.0),
    # one hourly bar: under 2 bars; 2 hourly bars are a gap
    (HOURS, ("2021-03-23 12:00", "2021-03-23 13:00"), ("2021-03-23 12:00", "2021-03-23 14:00"),
     2.0),
    # a weekday of hourly bars
    (HOURS, ("2021-03-23 12:00", "2021-03-23 13:00"), ("2021-03-16 16:00", "2021-03-18 00:00"),
     6.0),
])
def test_missing_hours_inside_a_session_are_a_gap(times, short, long, hours):
    assert _gaps(_without(times, *short)) is None
    gaps = _gaps(_without(times, *long))
    assert gaps["count"] == 1 and gaps["first"][0]["missing_hours"] == hours


@pytest.mark.parametrize("tz", [None, "America/New_York"])  # local clock, or UTC with DST
def test_nights_weekends_nyse_holidays_and_early_closes_are_no_gap(tz):
    """Oct 2021 - Jan 2022 without Thanksgiving, Christmas (observed Fri Dec 24) and MLK
    day, and with the 13:00 close of Nov 26; in UTC the session moves an hour on Nov 7.
    A missing weekday that is no NYSE holiday is a gap (another exchange's holiday too)."""
    times = session_times("2021-10-01", "2022-01-31", tz=tz,
                          skip=("2021-11-25", "2021-12-24", "2022-01-17"))
    early_close = "2021-11-26 13:00" if tz is None else "2021-11-26 18:00"
    times = _without(times, early_close, "2021-11-27")
    assert _gaps(times) is None
    gaps = _gaps(times[times.normalize() != "2021-11-10"])  # in UTC, about 6.5 hours
    assert gaps["count"] == 1 and 6.5 <= gaps["first"][0]["missing_hours"] < 7.5


@pytest.mark.parametrize("freq", ["1min", "5min", "1h"])
def test_intraday_bars_in_utc_across_daylight_saving(freq):
    """US session bars in UTC, 14:30-21:00 in winter and 13:30-20:00 from March 14: no
    gap; without Wednesday 2021-04-14, one."""
    times = session_times("2021-01-04", "2021-06-30", freq, tz="America/New_York")
    assert _gaps(times) is None
    gaps = _gaps(times[times.normalize() != "2021-04-14"])
    (gap,) = gaps["first"]
    assert gap["after"].startswith("2021-04-13T19:") and gap["before"] == "2021-04-15T13:30:00"
    assert 6.5 <= gap["missing_hours"] < 7.5  # the hour that is in session in part of the year


def test_24_7_and_24_5_markets_have_their_own_sessions():
    crypto = pd.date_range("2021-03-01", "2021-04-30", freq="1min")
    assert _gaps(crypto) is None
    gaps = _gaps(_without(crypto, "2021-03-10 03:00", "2021-03-10 04:30"))
    assert gaps["first"][0]["after"] == "2021-03-10T02:59:00"
    assert gaps["first"][0]["missing_hours"] == 1.5
    fx = pd.date_range("2021-03-01", "2021-04-30", freq="5min")  # Sunday 17:00 - Friday 17:00
    closed = (((fx.dayofweek == 4) & (fx.hour >= 17)) | (fx.dayofweek == 5)
              | ((fx.dayofweek == 6) & (fx.hour < 17)))  # fmt: skip
    assert _gaps(fx[~closed]) is None
    assert _gaps(fx[~closed & (fx.normalize() != "2021-03-17")])["count"] == 1


def test_an_illiquid_symbols_missing_minutes_are_no_gap():
    """1-minute bars of a symbol that trades in 30% of the minutes: the minutes without a
    trade are no gap, a missing day is (the share of its usual slots of 6.5 hours)."""
    rng = np.random.default_rng(1)
    times = MINUTES[rng.random(len(MINUTES)) < 0.3]
    assert _gaps(times) is None
    (gap,) = _gaps(times[times.normalize() != "2021-03-17"])["first"]
    assert gap["before"].startswith("2021-03-18T09:3") and 1 < gap["missing_hours"] < 6.5


# ---- an explicit threshold on tick prices -------------------------------------------------
TICKS = intraday_bars(session_times("2021-03-01", "2021-03-12"), price=3.0, tick=0.01)
TICK_CFG = {"seq_len": 20, "horizons": (1, 5)}


def test_threshold_zero_on_tick_prices_is_warned_about_and_kept():
    """A $3 stock in cents, 1-minute bars: 78% of the 1-bar returns are exactly 0. With
    threshold 0 "flat" is exactly those: a warning names the horizons, the share of exact
    zeros and the fix; the labels are still the ones asked for."""
    result = prepare_frame(TICKS, PrepareConfig(**TICK_CFG, threshold=0.0))
    warning = result.warnings["AAA"]
    assert warning.startswith("threshold 0.0 leaves a flat band that holds only returns of "
                              "exactly 0 (prices that move in ticks): h=1 (tau 0): 77.8% of "
                              "the training returns are exactly 0, the smallest move is ")
    assert "; h=5 (tau 0): 51.7% of the training returns are exactly 0" in warning
    assert "use threshold 'auto'" in warning and "a threshold above the tick size" in warning
    (prep,) = result.prepared["AAA"]
    assert prep.meta["zero_width_band"] in warning
    np.testing.assert_array_equal(prep.thresholds, [0.0, 0.0])
    np.testing.assert_array_equal(prep.y_class, to_classes(prep.y_return, np.zeros(2)))
    # 'auto' widens such a band itself: no warning
    auto = prepare_frame(TICKS, PrepareConfig(**TICK_CFG))
    assert auto.warnings == {} and auto.prepared["AAA"][0].meta["zero_width_band"] is None


def test_threshold_zero_where_exact_zeros_are_rare_gets_no_zero_band_warning(bars):
    """Daily bars: exact zeros are rare, so threshold 0 only gets the warning about the
    nearly empty "flat" class."""
    zero = prepare_frame(bars(("AAA",), n=400), PrepareConfig(**TICK_CFG, threshold=0.0))
    assert "leaves a class under 5% of the training labels" in zero.warnings["AAA"]
    assert "exactly 0" not in zero.warnings["AAA"]
    assert zero.prepared["AAA"][0].meta["zero_width_band"] is None




def test_a_per_horizon_zero_or_a_sub_tick_threshold_is_named_too():
    per_horizon = prepare_frame(TICKS, PrepareConfig(**TICK_CFG, threshold=(0.0, 0.004)))
    warning = per_horizon.warnings["AAA"]
    assert "threshold [0.0, 0.004] leaves a flat band" in warning
    band = per_horizon.prepared["AAA"][0].meta["zero_width_band"]
    assert band.startswith("h=1 (tau 0): 77.8%") and "h=5" not in band  # 0.004 > one tick
    sub_tick = prepare_frame(TICKS, PrepareConfig(**TICK_CFG, threshold=0.001))
    assert "h=1 (tau 0.001): 77.8% of the training returns are exactly 0" in (
        sub_tick.warnings["AAA"])


# ---- counts in messages -----------------------------------------------------------------
def test_counted():
    assert counted(1, "row") == "1 row" and counted(0, "row") == "0 rows"
    assert counted(2, "target column") == "2 target columns"


def test_a_count_of_one_reads_in_the_singular(bars):
    df = bars(("AAA", "BBB"), n=40)
    df["close"] = df["close"].astype(object)
    df.loc[3, "close"] = "n/k"  # not a missing-value text ('n/a' reads as missing, as in CSV)
    with pytest.raises(DataValidationError, match="1 value does not parse, e.g. 'n/k'"):
        validate_bars(df)
    df = bars(("AAA", "BBB"), n=40)
    df.loc[5, "high"] = np.nan
    with pytest.raises(DataValidationError, match="'AAA': 1 of 40 rows misses open/high/low"):
        validate_bars(df)
    _, report = validate_bars(bars(("AAA",), n=40))
    assert report.summary().startswith("validation (bars): 1 symbol in, 1 kept, 0 dropped; "
                                       "40 rows in, 40 rows out")
    with pytest.raises(ValueError, match="'AAA': 1 row, at least 354 are needed"):
        prepare_symbol(bars(("AAA",), n=1), PrepareConfig(**TICK_CFG))
    assert "= 1 bar between splits, but the longest horizon is 5 bars" in (
        leaky_gap_problem(1, 0, 5))
    with pytest.raises(ValueError, match="threshold has 1 value but there are 2 horizons"):
        fit_thresholds(np.zeros((5, 2)), [0.1])
    with pytest.raises(SplitError, match="has 1 sample, needs >= 2"):
        holdout_split(12, 0.8, 0.1, 0.1, 0, 0, min_size=2)


def test_a_year_of_new_york_minute_bars_in_utc_has_no_gap_at_the_november_change():
    """A year of 09:30-16:00 New York 1-minute bars kept in UTC, with bars on NYSE holidays:
    the gap from Friday's last summer bar (19:59 UTC) to Monday's first winter bar (14:30
    UTC) missed the summer-only and winter-only slots, 52/51 of an hour with the week of
    the gap left out, and was warned about. Measured on the New York clock the session
    does not move; a missing Wednesday is still a gap of its 6.5 hours."""
    times = session_times("2021-01-04", "2021-12-31", "1min", tz="America/New_York")
    assert _gaps(times) is None
    gaps = _gaps(times[times.normalize() != "2021-11-17"])  # naive UTC: 14:30-21:00
    (gap,) = gaps["first"]
    assert (gap["after"], gap["before"]) == ("2021-11-16T20:59:00", "2021-11-18T14:30:00")
    assert gap["missing_hours"] == 6.5
