"""The job spec's data sections (target, features, split), their limits, the spec's error
type and the checks every section shares. They are in the data layer because preparing
data outside a job needs them too: `quantray data prepare` and `quantray train` refuse
what a job spec refuses, with the job's messages (imports point down only).
`ray_jobs.spec_sections` builds the rest of the spec on these and re-exports them.
Stdlib only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from data.split_rules import DEFAULT_SEQ_LEN, MAX_SEQ_LEN, MIN_SEQ_LEN

# ---- limits: the service rejects specs beyond these (422 naming the field) ---------------
MAX_HORIZONS = 8
# bars, of any frequency: a year of daily bars, about 10 trading days of 1-minute bars
# (390 a day: a one-day-ahead label on minute data is h=390); data too short for a long
# horizon fails its symbol's row check (`PrepareConfig.min_rows`), naming the rows needed
MAX_HORIZON = 4096
MAX_FOLDS = 20
MAX_EMBARGO = 4096  # bars, as MAX_HORIZON
# The dates a dataset window's start and end may take: pandas' nanosecond timestamps
# (1677-09-21 to 2262-04-11, as the loader reads times), a day in from each end so that a
# date-only end's whole day fits too.
FIRST_DATE, LAST_DATE = "1677-09-22", "2262-04-10"
TARGET_KINDS = ("direction", "return")
FEATURE_SETS = ("technical",)
SPLIT_METHODS = ("holdout", "walk_forward")


ECHO_CHARS = 60  # of a quoted value or a field path echoed in an error message
_LONG_QUOTED = re.compile(r"""(['"])([^'"]{""" + str(ECHO_CHARS + 20) + r""",})\1""")


def shorten_echoes(text: str) -> str:
    """`text` with every quoted value longer than ECHO_CHARS + 20 cut to its first
    ECHO_CHARS characters and its length: a 5,000-character name is not sent back whole."""
    return _LONG_QUOTED.sub(
        lambda m: f"{m[1]}{m[2][:ECHO_CHARS]}...{m[1]} ({len(m[2])} characters)", text)


def _short_path(path: str) -> str:
    return path if len(path) <= 2 * ECHO_CHARS else f"{path[:ECHO_CHARS]}..."


# Problems a SpecError lists; more are counted in one last entry. A 1 MB body of 70,000
# unknown fields made a 20 MB answer, each entry naming every allowed field again.
MAX_SPEC_ERRORS = 50


class SpecError(ValueError):
    """An invalid job spec: `errors` is a list of (field path, message) pairs; quoted values
    and paths of absurd length are shortened (`shorten_echoes`). `listed` (and the message)
    holds the first MAX_SPEC_ERRORS of them and a count of the rest."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = [(_short_path(str(p)), shorten_echoes(m)) for p, m in errors]
        self.listed = self.errors[:MAX_SPEC_ERRORS]
        if len(self.errors) > MAX_SPEC_ERRORS:
            self.listed.append(("", f"and {len(self.errors) - MAX_SPEC_ERRORS} more problems "
                                "not listed: fix these and check again"))
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in self.listed))

    def to_list(self) -> list[dict[str, str]]:
        """`[{"loc": path, "msg": message}, ...]`, the body of a 422 response."""
        return [{"loc": path, "msg": msg} for path, msg in self.listed]


class _Issues:
    """Collects (path, message) pairs of one section, then raises them together."""

    def __init__(self, where: str) -> None:
        self.where, self.items = where, []

    def add(self, name: str, msg: str) -> None:
        path = f"{self.where}.{name}" if self.where and name else (self.where or name)
        self.items.append((path, msg))

    def done(self) -> None:
        if self.items:
            raise SpecError(self.items)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> float | None:
    """A finite number, or None. Numeric strings count: YAML 1.1 reads `1e-3` as a string."""
    if isinstance(v, bool):
        return None
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            return None
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def _int_in(iss: _Issues, name: str, v: Any, lo: int, hi: int, hint: str = "") -> None:
    if not _is_int(v):
        iss.add(name, f"expected an integer in [{lo}, {hi}], got {v!r}{hint}")
    elif not lo <= v <= hi:
        iss.add(name, f"{v} is out of range: use an integer in [{lo}, {hi}]{hint}")


def _one_of(iss: _Issues, name: str, v: Any, allowed: tuple[str, ...]) -> None:
    if v not in allowed:
        iss.add(name, f"unknown value {v!r}; choose one of: {', '.join(allowed)}")


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalise a frozen field (list -> tuple, ...)



@dataclass(frozen=True)
class TargetSpec:
    """Forward-return / direction targets at each horizon (in bars)."""

    kind: str = "direction"
    horizons: tuple[int, ...] = (1, 5, 10, 20)
    threshold: str | float | tuple[float, ...] = "auto"  # flat band |r| <= tau, per horizon

    def __post_init__(self) -> None:
        iss = _Issues("target")
        _one_of(iss, "kind", self.kind, TARGET_KINDS)
        if not isinstance(self.horizons, list | tuple) or not self.horizons:
            iss.add("horizons", f"give a non-empty list of up to {MAX_HORIZONS} bar counts")
        else:
            _set(self, "horizons", tuple(self.horizons))
            if len(self.horizons) > MAX_HORIZONS:
                iss.add("horizons", f"{len(self.horizons)} horizons; at most {MAX_HORIZONS}")
            for i, h in enumerate(self.horizons):
                _int_in(iss, f"horizons[{i}]", h, 1, MAX_HORIZON)
            if all(_is_int(h) for h in self.horizons) and list(self.horizons) != sorted(
                set(self.horizons)
            ):
                iss.add("horizons", "list horizons increasing, each once, e.g. [1, 5, 10, 20]")
        t = self.threshold
        if isinstance(t, list | tuple):
            _set(self, "threshold", tuple(_num(x) if _num(x) is not None else x for x in t))
            if isinstance(self.horizons, tuple) and len(t) != len(self.horizons):
                iss.add("threshold", f"{len(t)} thresholds for {len(self.horizons)} horizons")
            for i, x in enumerate(t):
                if _num(x) is None or _num(x) < 0:
                    iss.add(f"threshold[{i}]", f"{x!r}: use a return >= 0 such as 0.002")
        elif t != "auto":
            if _num(t) is None or _num(t) < 0:
                iss.add("threshold", f"{t!r}: use 'auto', a return >= 0, or one per horizon")
            else:
                _set(self, "threshold", _num(t))
        iss.done()


@dataclass(frozen=True)
class FeaturesSpec:
    set: str = "technical"
    seq_len: int = DEFAULT_SEQ_LEN  # window of every sequence model of the job

    def __post_init__(self) -> None:
        iss = _Issues("features")
        _one_of(iss, "set", self.set, FEATURE_SETS)
        _int_in(iss, "seq_len", self.seq_len, MIN_SEQ_LEN, MAX_SEQ_LEN)
        iss.done()


@dataclass(frozen=True)
class SplitSpec:
    """Chronological splits; walk_forward gives `n_folds` expanding folds."""

    method: str = "holdout"
    train: float = 0.7
    val: float = 0.15
    test: float = 0.15
    n_folds: int = 3
    purge: str | int = "auto"  # auto: the longest horizon
    embargo: int = 5

    def __post_init__(self) -> None:
        iss = _Issues("split")
        _one_of(iss, "method", self.method, SPLIT_METHODS)
        fractions = []
        for name in ("train", "val", "test"):
            v = _num(getattr(self, name))
            if v is None or not 0 < v < 1:
                iss.add(name, f"{getattr(self, name)!r}: use a fraction in (0, 1)")
            else:
                _set(self, name, v)
                fractions.append(v)
        if len(fractions) == 3 and abs(sum(fractions) - 1) > 1e-6:
            iss.add("", f"train + val + test = {sum(fractions):.6g}; make them sum to 1")
        lo = 2 if self.method == "walk_forward" else 1
        _int_in(iss, "n_folds", self.n_folds, lo, MAX_FOLDS)
        if self.purge != "auto":
            _int_in(iss, "purge", self.purge, 0, MAX_HORIZON, " (or 'auto')")
        _int_in(iss, "embargo", self.embargo, 0, MAX_EMBARGO)
        iss.done()

    @property
    def folds(self) -> int:
        return self.n_folds if self.method == "walk_forward" else 1

    def new_spec_problems(self) -> list[tuple[str, str]]:
        """(field, message) for what a spec submitted now may not hold, though a stored
        spec.json (read back by every resume, and so never refused) may: `n_folds` other
        than 1 or the default with a holdout split, which ran one holdout and dropped the
        folds without a word (`quantray data prepare` refuses --n-folds there)."""
        if self.method == "holdout" and self.n_folds not in (1, SplitSpec.n_folds):
            return [("split.n_folds", f"{self.n_folds}: folds are for method walk_forward "
                     "(this split is one holdout); set method: walk_forward, or leave "
                     "n_folds out")]
        return []
