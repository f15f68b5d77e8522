"""`ValidationReport`: what `data.validation` repaired and dropped, as plain values.

Kept apart from the checks so that readers of reports (CLI, service, leaderboards) need
not import pandas-heavy validation code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from data.wording import counted

# repair names in report order; see the policy in data/validation.py
BAR_REPAIRS = ("sorted", "open_filled", "high_low_filled", "bracket_widened", "zero_volume")
LOB_REPAIRS = ("sorted", "snapshots_dropped")
# the gap-warning limit (see data/validation.py, which imports these): a gap between
# consecutive bars over max(GAP_MEDIANS x the symbol's median spacing, MIN_GAP_DAYS days)
GAP_MEDIANS = 10
MIN_GAP_DAYS = 10
# and for intraday bars (median spacing under a day) also a gap that misses at least
# SESSION_GAP_BARS bars' worth and SESSION_GAP_HOURS hours of the symbol's usual trading
# time (nights, weekends and NYSE closures not counted; see data/sessions.py)
SESSION_GAP_BARS = 2
SESSION_GAP_HOURS = 1
# a run of bars without a trade (volume 0, open = high = low = close, one price throughout:
# a trading halt, or a feed that repeats the last price) of at least STALE_BARS bars and
# STALE_SHARE of the symbol's bars is a warning (report.stale): its labels are all flat
STALE_BARS = 10
STALE_SHARE = 0.01
# a run of bars with one close, whatever their volume (a feed that repeats the last price
# with volume, a suspended or pegged quote), of at least FLAT_BARS bars and STALE_SHARE of
# the symbol's bars over FLAT_DAYS calendar days or more is a warning (report.flat): its
# labels are all flat too. The shared S&P file's longest such run is 4 bars; minute bars of
# a cheap stock sit on one tick for dozens of bars, but not for days
FLAT_BARS = 20
FLAT_DAYS = 5
# a bar whose close moved by a factor of JUMP_FACTOR or more either way against the
# previous close (x0.105 or less, x9.5 or more: 10 less a split's 5% tolerance) is a warning
# (report.jumps), unless the split check names it: an unadjusted split past 10:1 (20:1,
# 50:1), a change of unit (pence to pounds, x100) or, with a move back on the next bar, a
# bad tick
JUMP_FACTOR = 9.5


@dataclass
class ValidationReport:
    """What validation did: repairs per symbol (non-zero counts only), dropped symbols with
    their error messages, row/symbol totals, and warnings about kept symbols: `gaps`, a
    symbol's long gaps between consecutive bars ({"count", "limit_days", "first": the first
    few as {"after", "before", "days"}}; see `data.validation`) and `splits`, its bars
    that moved by a split's price ratio ({"count", "first": [{"at", "before", "after",
    "ratio", "split"}]}: prices perhaps not adjusted for a split), `jumps`, its bars whose
    close moved by a factor of JUMP_FACTOR or more ({"count", "spikes", "first": [{"at",
    "before", "after", "ratio", "guess"}, plus "back" for a one-bar spike]}: an unadjusted
    split past 10:1, a change of unit, a bad tick), and `stale`, its long runs of
    bars without a trade ({"count", "limit_bars", "first": [{"from", "to", "bars"}]}), and
    `flat`, its long runs of one close with volume traded (same form as `stale`).
    Plain values only, so it
    crosses process boundaries as `to_dict()` and merges across per-symbol validations with
    `merge`."""

    kind: str = "bars"
    rows_in: int = 0
    rows_out: int = 0
    symbols_in: int = 0
    repairs: dict[str, dict[str, int]] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    gaps: dict[str, dict[str, Any]] = field(default_factory=dict)
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    jumps: dict[str, dict[str, Any]] = field(default_factory=dict)
    stale: dict[str, dict[str, Any]] = field(default_factory=dict)
    flat: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def warnings(self) -> dict[str, str]:
        """symbol -> warning message (kept symbols whose data is suspect, not wrong): its
        long gaps, its split-like moves, its jumps, its runs without a trade and its runs
        of one close, one message."""
        out: dict[str, list[str]] = {}
        for s, g in self.gaps.items():
            out.setdefault(s, []).append(gap_warning(s, g))
        for s, m in self.splits.items():
            out.setdefault(s, []).append(split_warning(s, m))
        for s, j in self.jumps.items():
            out.setdefault(s, []).append(jump_warning(s, j))
        for s, r in self.stale.items():
            out.setdefault(s, []).append(stale_warning(s, r))
        for s, r in self.flat.items():
            out.setdefault(s, []).append(flat_warning(s, r))
        return {s: "; ".join(out[s]) for s in sorted(out)}

    @property
    def repair_names(self) -> tuple[str, ...]:
        return BAR_REPAIRS if self.kind == "bars" else LOB_REPAIRS

    @property
    def symbols_out(self) -> int:
        return self.symbols_in - len(self.dropped)

    def totals(self) -> dict[str, int]:
        """Rows per repair over all kept symbols (zero included)."""
        return {k: sum(r.get(k, 0) for r in self.repairs.values()) for k in self.repair_names}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "rows_in": self.rows_in, "rows_out": self.rows_out,
            "symbols_in": self.symbols_in, "symbols_out": self.symbols_out,
            "totals": self.totals(), "repairs": {s: dict(r) for s, r in self.repairs.items()},
            "dropped": dict(self.dropped),
            "gaps": {s: dict(g) for s, g in self.gaps.items()},
            "splits": {s: dict(m) for s, m in self.splits.items()},
            "jumps": {s: dict(j) for s, j in self.jumps.items()},
            "stale": {s: dict(r) for s, r in self.stale.items()},
            "flat": {s: dict(r) for s, r in self.flat.items()}, "warnings": self.warnings,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ValidationReport:
        keys = ("kind", "rows_in", "rows_out", "symbols_in", "repairs", "dropped")
        return cls(**{k: d[k] for k in keys}, gaps=d.get("gaps", {}),
                   splits=d.get("splits", {}), jumps=d.get("jumps", {}),
                   stale=d.get("stale", {}), flat=d.get("flat", {}))

    @classmethod
    def merge(cls, reports: Sequence[ValidationReport]) -> ValidationReport:
        """One report for disjoint symbol sets (e.g. one validation per symbol)."""
        kinds = {r.kind for r in reports}
        if len(kinds) != 1:
            raise ValueError(f"cannot merge reports of kinds {sorted(kinds)}; merge one kind")
        out = cls(kind=kinds.pop())
        for r in reports:
            out.rows_in, out.rows_out = out.rows_in + r.rows_in, out.rows_out + r.rows_out
            out.symbols_in += r.symbols_in
            out.repairs.update(r.repairs)
            out.dropped.update(r.dropped)
            out.gaps.update(r.gaps)
            out.splits.update(r.splits)
            out.jumps.update(r.jumps)
            out.stale.update(r.stale)
            out.flat.update(r.flat)
        return out

    def summary(self) -> str:
        """Text table: totals, repairs per symbol, dropped symbols with reasons."""
        names = self.repair_names
        width = {n: len(n) + 2 for n in names}
        lines = [
            f"validation ({self.kind}): {counted(self.symbols_in, 'symbol')} in, "
            f"{self.symbols_out} kept, {len(self.dropped)} dropped; "
            f"{counted(self.rows_in, 'row')} in, {counted(self.rows_out, 'row')} out",
            f"{'symbol':<8}" + "".join(f"{n:>{width[n]}}" for n in names),
        ]
        for s in sorted(self.repairs):
            counts = self.repairs[s]
            lines.append(f"{s:<8}" + "".join(f"{counts.get(n, 0):>{width[n]}}" for n in names))
        totals = self.totals()
        lines.append(f"{'TOTAL':<8}" + "".join(f"{totals[n]:>{width[n]}}" for n in names))
        lines += [f"dropped {s}: {msg}" for s, msg in sorted(self.dropped.items())]
        lines += [f"warning {s}: {msg}" for s, msg in self.warnings.items()]
        return "\n".join(lines)


def gap_warning(symbol: str, gaps: dict[str, Any]) -> str:
    """The message of a symbol's long gaps between consecutive bars (`ValidationReport.gaps`):
    intraday bars' gaps (with "limit_hours") are told by the trading time they miss."""
    n, first = gaps["count"], gaps["first"]
    if "limit_hours" in gaps:
        shown = ", ".join(f"{g['after']} -> {g['before']} ({g['days']:g} days, "
                          f"{g['missing_hours']:g} trading hours missing)" for g in first)
        hours, least = _hours(gaps["limit_hours"]), _hours(SESSION_GAP_HOURS)
        rule = (f"missing {hours} or more of its usual trading time "
                f"({counted(SESSION_GAP_BARS, 'bar')}' worth, at least {least}; nights, "
                "weekends, NYSE holidays and early closes do not count, another exchange's "
                f"holidays do) or longer than {gaps['limit_days']:g} days")
    else:
        shown = ", ".join(f"{g['after']} -> {g['before']} ({g['days']:g} days)" for g in first)
        rule = (f"longer than {gaps['limit_days']:g} days ({GAP_MEDIANS} x its median "
                f"spacing, at least {MIN_GAP_DAYS} days)")
    more = f" (+{n - len(first)} more)" if n > len(first) else ""
    return (f"symbol {symbol!r}: {counted(n, 'gap')} between consecutive bars {rule} at "
            f"{shown}{more}; kept, but an h-bar label and the rolling features span each gap "
            "as if it were one bar: fill the missing bars at the source, or choose a date "
            "range without the gap (dataset.start/end, --start/--end)")


def _hours(h: float) -> str:
    return f"{h:g} hour{'' if h == 1 else 's'}"


def split_warning(symbol: str, moves: dict[str, Any]) -> str:
    """The message of a symbol's split-like moves (`ValidationReport.splits`)."""
    n, first = moves["count"], moves["first"]
    shown = ", ".join(f"{m['at']} (close {m['before']:.6g} -> {m['after']:.6g}, x{m['ratio']:g}: "
                      f"a {m['split']}?)" for m in first)
    more = f" (+{n - len(first)} more)" if n > len(first) else ""
    return (f"symbol {symbol!r}: {counted(n, 'bar')} whose open and close moved by "
            f"a split's ratio against the previous close at {shown}{more}; kept, but if the "
            "prices are not adjusted for the split, the returns, volatility and labels across "
            "it see a move that did not happen: adjust the earlier prices (and volumes) for "
            "the split at the source, or choose a date range that does not cross it "
            "(dataset.start/end, --start/--end)")


def jump_warning(symbol: str, jumps: dict[str, Any]) -> str:
    """The message of a symbol's bars whose close moved by a factor of JUMP_FACTOR or more
    (`ValidationReport.jumps`): an unadjusted split or a change of unit, or a one-bar
    spike (a bad tick) when the close moved back on the next bar."""
    n, first, spikes = jumps["count"], jumps["first"], jumps.get("spikes", 0)
    shown = ", ".join(
        f"{j['at']} (close {j['before']:.6g} -> {j['after']:.6g}, x{j['ratio']:g}"
        + (f", back to {j['back']:.6g} on the next bar" if "back" in j else "")
        + f": {j['guess']}?)" for j in first)
    more = f" (+{n - len(first)} more)" if n > len(first) else ""
    fixes = []
    if n > spikes:
        fixes.append("adjust the earlier prices (and volumes) for the split, or write every "
                     "price in one unit (pounds, not pence), at the source, or choose a date "
                     "range that does not cross it (dataset.start/end, --start/--end)")
    if spikes:
        fixes.append("correct the bad tick (or remove that bar) at the source")
    return (f"symbol {symbol!r}: {counted(n, 'bar')} whose close moved by a factor of "
            f"{JUMP_FACTOR:g} or more against the previous close at {shown}{more}; kept, but "
            "the returns, volatility and labels across it see a move that did not happen: "
            + "; ".join(fixes))


def _runs_shown(runs: dict[str, Any]) -> tuple[int, str, str]:
    """(count, the first runs as text, "(+N more)" or "") of a `stale` or `flat` entry."""
    n, first = runs["count"], runs["first"]
    shown = ", ".join(f"{r['from']} -> {r['to']} ({counted(r['bars'], 'bar')})" for r in first)
    return n, shown, f" (+{n - len(first)} more)" if n > len(first) else ""


def stale_warning(symbol: str, runs: dict[str, Any]) -> str:
    """The message of a symbol's long runs of bars without a trade (`ValidationReport.stale`)."""
    n, shown, more = _runs_shown(runs)
    return (f"symbol {symbol!r}: {counted(n, 'run')} of bars without a trade (volume 0, open = "
            f"high = low = close, one price throughout) of {runs['limit_bars']} bars or more "
            f"(at least {STALE_BARS} bars and {STALE_SHARE:.0%} of its bars) at {shown}{more}; "
            "kept, but a trading halt or a feed that repeats the last price makes every "
            "label there flat and the features stale, and a val or test split in it scores "
            "nothing real: choose a date range without it (dataset.start/end, "
            "--start/--end), or remove those bars at the source")


def flat_warning(symbol: str, runs: dict[str, Any]) -> str:
    """The message of a symbol's long runs of one close with volume traded
    (`ValidationReport.flat`)."""
    n, shown, more = _runs_shown(runs)
    return (f"symbol {symbol!r}: {counted(n, 'run')} of bars whose close does not change "
            f"(with volume traded) of {runs['limit_bars']} bars or more (at least {FLAT_BARS} "
            f"bars and {STALE_SHARE:.0%} of its bars, over {FLAT_DAYS} days or more) at "
            f"{shown}{more}; kept, but a feed that repeats the last price (or a suspended or "
            "pegged quote) makes every label there flat and the features stale, and a val or "
            "test split in it scores nothing real: choose a date range without it "
            "(dataset.start/end, --start/--end), or correct or remove those bars at the source")
