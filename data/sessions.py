"""The trading hours of intraday bars, learned from the bars, and the gaps that miss part of
them: the intraday half of `data.validation`'s gap warning.

A symbol's weekly profile says, for each slot of the week (slots as wide as its bar
spacing, at least a minute), in what share of the weeks its data spans the slot holds a
bar. The trading time a gap between two bars misses is the profile's sum over the slots
strictly inside it, after the first bar's own slot: 0 for a night or a weekend (slots
that never trade), 6.5 hours for a missing Wednesday of 09:30-16:00 bars, an hour for an
hour of missing minutes. Each gap is measured against the other weeks only (the share
leaves the gap's own week out), so that a hole does not hide itself. Slots that trade in
part of the weeks count in part: bars in UTC shift by an hour with daylight saving, and
bars of an illiquid symbol are absent in the minutes without trades. A symbol whose
sessions keep a zone's daylight saving (09:30-16:00 New York bars kept in UTC) is measured
on that zone's clock, where its slots trade every week (`_exchange_clock`): in UTC the
gap across the change would miss the summer-only and winter-only slots, an hour in all.

Market closures leave holes too. Full-day closures of the New York Stock Exchange (its
holidays, and its unscheduled closures since 2001) and the afternoon after its 13:00 early
closes are not counted (`nyse_closures`), for symbols that do not trade on weekends
(24/7 markets trade through them); another exchange's holidays count as missing days.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from pandas.tseries.holiday import (
    MO,
    AbstractHolidayCalendar,
    DateOffset,
    GoodFriday,
    Holiday,
    USLaborDay,
    USMemorialDay,
    USPresidentsDay,
    USThanksgivingDay,
    nearest_workday,
    sunday_to_monday,
)

__all__ = ["missed_trading_time", "nyse_closures"]

NS = 10**9
DAY = 86_400 * NS
WEEK = 7 * DAY
# slot widths that divide a week (seconds); a symbol's slot is the widest not over its spacing
_SLOT_SECONDS = (60, 120, 180, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 14400, 21600,
                 28800, 43200)
# unscheduled full-day closures of the NYSE since 2001
_SPECIAL_CLOSURES = ("2001-09-11", "2001-09-12", "2001-09-13", "2001-09-14", "2004-06-11",
                     "2007-01-02", "2012-10-29", "2012-10-30", "2018-12-05", "2025-01-09")


class _NyseHolidays(AbstractHolidayCalendar):
    rules = [
        Holiday("New Year's Day", month=1, day=1, observance=sunday_to_monday),
        Holiday("Martin Luther King Jr. Day", month=1, day=1, offset=DateOffset(weekday=MO(3)),
                start_date="1998-01-01"),
        USPresidentsDay,
        GoodFriday,
        USMemorialDay,
        Holiday("Juneteenth", month=6, day=19, start_date="2022-01-01",
                observance=nearest_workday),
        Holiday("Independence Day", month=7, day=4, observance=nearest_workday),
        USLaborDay,
        USThanksgivingDay,
        Holiday("Christmas Day", month=12, day=25, observance=nearest_workday),
    ]


@functools.lru_cache(maxsize=32)
def nyse_closures(first_year: int, last_year: int) -> tuple[frozenset, frozenset]:
    """(days closed, days of a 13:00 early close) of the NYSE in these years, as day
    numbers since 1970-01-01. Early closes: July 3 and December 24 on a weekday that is no
    holiday, and the day after Thanksgiving."""
    start, end = pd.Timestamp(first_year, 1, 1), pd.Timestamp(last_year, 12, 31)
    closed = set(_NyseHolidays().holidays(start, end)) | {pd.Timestamp(d)
                                                          for d in _SPECIAL_CLOSURES}
    thanksgiving = USThanksgivingDay.dates(start, end)
    early = {d + pd.Timedelta(days=1) for d in thanksgiving}
    for year in range(first_year, last_year + 1):
        for month, day in ((7, 3), (12, 24)):
            d = pd.Timestamp(year, month, day)
            if d.dayofweek < 5 and d not in closed:
                early.add(d)

    def days(stamps) -> frozenset:
        return frozenset(int(d.value // DAY) for d in stamps)

    return days(closed), days(early)


class _WeeklyProfile:
    """Per slot of the week: the share of the other weeks with a bar there (see the module
    docstring); `active(a, b)` is the trading time in [a, b) (ns since 1970)."""

    def __init__(self, t: np.ndarray, spacing: int) -> None:
        width = max((s for s in _SLOT_SECONDS if s * NS <= spacing), default=60) * NS
        n_slots = WEEK // width
        monday = (t[0] // DAY - (t[0] // DAY + 3) % 7) * DAY  # 1970-01-01 was a Thursday
        self.origin = monday + (t[0] - monday) % width  # bars on the slot grid start slots
        x = t - self.origin
        weeks, slot = x // WEEK, (x % WEEK) // width
        key = weeks * n_slots + slot  # non-decreasing, as t is sorted
        seen = key[np.r_[True, key[1:] != key[:-1]]] % n_slots  # each (week, slot) once
        hits = np.bincount(seen, minlength=n_slots).astype(np.float64)
        start = np.arange(n_slots, dtype=np.int64) * width  # weeks whose slot lies in the data
        spanned = np.maximum((x[-1] - start) // WEEK + (start - x[0]) // WEEK + 1, 0)
        others = spanned - 1  # the gap's own week left out
        share = np.divide(hits, others, out=np.zeros(n_slots), where=others > 0)
        self.share = np.minimum(share, 1.0)
        self.cum = np.concatenate([[0.0], np.cumsum(self.share)]) * width
        self.width = width
        saturday, sunday = 5 * DAY // width, 7 * DAY // width
        self.weekends = bool(self.share[saturday:sunday].max(initial=0.0) > 0.5)

    def _at(self, x: np.ndarray) -> np.ndarray:
        """Trading time from the origin to x (ns after the origin)."""
        weeks, within = x // WEEK, x % WEEK
        slot = within // self.width
        return (weeks * self.cum[-1] + self.cum[slot]
                + self.share[slot] * (within % self.width))  # fmt: skip

    def active(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = self._at(np.asarray(b) - self.origin) - self._at(np.asarray(a) - self.origin)
        return np.maximum(out, 0.0)


def missed_trading_time(t: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """(missed, counted): per gap between consecutive bars of one symbol (`t`: sorted,
    distinct, at least 2, ns since 1970), the trading time it misses (ns, float) and that
    time without the NYSE's closures, which is 0 where `missed` is under `limit` (ns): the
    closures are looked up for those gaps only."""
    t = np.asarray(t, dtype=np.int64)
    step = np.diff(t)
    spacing = int(np.median(step))
    t, profile = _exchange_clock(t, spacing)
    a = t[:-1] + max(spacing, profile.width)  # the slot of the bar before the gap is its own
    missed = np.where(a < t[1:], profile.active(a, t[1:]), 0.0)
    counted = np.zeros_like(missed)
    for i in np.flatnonzero(missed >= limit):
        counted[i] = missed[i] - _closed_time(profile, int(t[i]), int(a[i]), int(t[i + 1]))
    return missed, counted


# zones whose daylight-saving dates a session may follow (one per set of rules: New York's
# are Chicago's, London's are the EU's, Sydney's the south's)
_CLOCK_ZONES = ("America/New_York", "Europe/London", "Australia/Sydney")


def _exchange_clock(t: np.ndarray, spacing: int) -> tuple[np.ndarray, _WeeklyProfile]:
    """(t, its profile) on the clock the symbol's sessions keep: UTC as given, or the local
    time of a zone with daylight saving in which the profile is clearly sharper (bars kept
    in UTC of a session that opens at 09:30 New York time move an hour twice a year). In
    UTC such slots trade in part of the weeks each, and a gap across the change (Friday's
    last summer bar to Monday's first winter bar) would miss the summer-only and the
    winter-only slots, about an hour in all, though no bar is missing. Sharpness: the
    trading time in slots that trade in some weeks and not in others, sum(share x (1 -
    share)) x width; local times that are not increasing (the hour clocks repeat) rule a
    zone out."""
    profile = _WeeklyProfile(t, spacing)
    blur = float(np.sum(profile.share * (1 - profile.share)))
    best = (t, profile)
    for zone in _CLOCK_ZONES:
        local = pd.DatetimeIndex(t).tz_localize("UTC").tz_convert(zone).tz_localize(None)
        lt = local.asi8
        if not (np.diff(lt) > 0).all():
            continue
        candidate = _WeeklyProfile(lt, spacing)
        sharpness = float(np.sum(candidate.share * (1 - candidate.share)))
        if sharpness < 0.5 * blur:
            best, blur = (lt, candidate), sharpness
    return best


def _closed_time(profile: _WeeklyProfile, last: int, a: int, b: int) -> float:
    """The trading time in [a, b) on NYSE closure days, and after an early close on the day
    of the gap's last bar `last`; 0 for a symbol that trades on weekends."""
    if profile.weekends:
        return 0.0
    first_day, last_day = a // DAY, (b - 1) // DAY
    closed, early = nyse_closures(_year(first_day), _year(last_day))
    out = 0.0
    for day in range(first_day, last_day + 1):
        if day in closed or (day == last // DAY and day in early):
            lo, hi = max(a, day * DAY), min(b, (day + 1) * DAY)
            out += float(profile.active(np.int64(lo), np.int64(hi)))
    return out


def _year(day: int) -> int:
    return int(pd.Timestamp(day * DAY).year)
