"""Chronological splits of a symbol's samples with purge and embargo.

Samples are indexed 0..n-1 in time order; sample t's label window is (t, t + max_h].
At every boundary between an earlier split E and a later split L there is a gap of
exactly `purge + embargo` samples:

- purge: the last `purge` samples of E are dropped, so with purge >= max_h every sample t
  kept in E has t + max_h < first sample of L (its label never sees L's period).
- embargo: `embargo` more samples are skipped, as a margin against serial correlation.
  Before a validation block they are skipped at its start; before a test block they are
  taken from the end of the validation block instead, so test blocks are never shortened
  and walk-forward test blocks tile the tail exactly (contiguous out-of-sample results).

Holdout: train | val | test by fractions of n. Walk-forward: the tail after the initial
`train + val` fractions is cut into `n_folds` consecutive test blocks; fold k trains on
everything before its validation block (expanding window), and its validation block
(`val * n` samples, minus the gaps) sits right before its test block.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from data.wording import counted

Bounds = dict[str, tuple[int, int]]  # split name -> [start, stop) sample range
_EPS = 1e-9  # n * fraction is floored after this nudge so 100 * (0.7 + 0.2) is 90, not 89


class SplitError(ValueError):
    """A split ended up smaller than required; `needed` is the smallest n that works."""

    def __init__(self, message: str, needed: int) -> None:
        super().__init__(message)
        self.needed = needed


def check_fractions(train: float, val: float, test: float | None = None) -> None:
    """Each fraction in (0, 1); with `test`, they must sum to 1; else train + val < 1."""
    given = {"train": train, "val": val} | ({} if test is None else {"test": test})
    for name, value in given.items():
        if not isinstance(value, int | float) or not 0 < value < 1:
            raise ValueError(f"split fraction {name}={value!r}: use a number in (0, 1)")
    if test is not None and abs(train + val + test - 1) > 1e-6:
        raise ValueError(
            f"split fractions train={train} + val={val} + test={test} = {train + val + test};"
            " they must sum to 1"
        )
    if test is None and train + val >= 1:
        raise ValueError(f"split fractions train={train} + val={val} leave no test tail; keep < 1")


def _check_gaps(purge: int, embargo: int) -> None:
    for name, value in (("purge", purge), ("embargo", embargo)):
        if not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name}={value!r}: use an integer number of samples >= 0")


def _floor(x: float) -> int:
    return math.floor(x + _EPS)


def holdout_bounds(n: int, train: float, val: float, test: float, purge: int, embargo: int
                   ) -> Bounds:
    """[start, stop) of train, val, test (possibly empty) for n samples."""
    check_fractions(train, val, test)
    _check_gaps(purge, embargo)
    return _holdout(n, train, val, purge, embargo)


def _holdout(n: int, train: float, val: float, purge: int, embargo: int) -> Bounds:
    a, b = _floor(n * train), _floor(n * (train + val))
    return {
        "train": (0, max(0, a - purge)),
        "val": (a + embargo, max(a + embargo, b - purge - embargo)),
        "test": (b, n),
    }


def walk_forward_bounds(n: int, n_folds: int, train: float, val: float, purge: int,
                        embargo: int) -> list[Bounds]:
    """[start, stop) of train, val, test per fold (possibly empty) for n samples."""
    check_fractions(train, val)
    _check_gaps(purge, embargo)
    if not isinstance(n_folds, int | np.integer) or n_folds < 1:
        raise ValueError(f"n_folds={n_folds!r}: use an integer >= 1")
    return _walk_forward(n, n_folds, train, val, purge, embargo)


def _walk_forward(n: int, n_folds: int, train: float, val: float, purge: int, embargo: int
                  ) -> list[Bounds]:
    a0, v = _floor(n * train), _floor(n * val)
    tail = n - a0 - v
    starts = [a0 + v + (k * tail) // n_folds for k in range(n_folds + 1)]
    folds = []
    for k in range(n_folds):
        s = starts[k]
        folds.append({
            "train": (0, max(0, s - v - purge)),
            "val": (s - v + embargo, max(s - v + embargo, s - purge - embargo)),
            "test": (s, starts[k + 1]),
        })
    return folds


def min_samples(method: str, *, train: float, val: float, test: float, n_folds: int,
                purge: int, embargo: int, min_size: int = 1) -> int:
    """Smallest n for which every split (of every fold) has at least `min_size` samples."""
    if method == "holdout":
        holdout_bounds(1, train, val, test, purge, embargo)  # validates the settings

        def smallest(n: int) -> int:
            return min(b - a for a, b in _holdout(n, train, val, purge, embargo).values())

        fracs = [train, val, test]
    elif method == "walk_forward":
        check_fractions(train, val, test)
        walk_forward_bounds(1, n_folds, train, val, purge, embargo)

        def smallest(n: int) -> int:
            folds = _walk_forward(n, n_folds, train, val, purge, embargo)
            return min(b - a for f in folds for a, b in f.values())

        fracs = [train, val, test / n_folds]
    else:
        raise ValueError(f"split={method!r}: use 'holdout' or 'walk_forward'")
    # a split of fraction f holds at most n * f + 2 samples (floors), so scanning from
    # (min_size - 2) / f cannot skip the answer; gaps only raise it
    n = max(1, *(math.floor((min_size - 2) / f) for f in fracs))
    while smallest(n) < min_size:
        n += 1
        if n > 10**8:
            raise ValueError("min_samples: no series length satisfies the split settings")
    return n


def _materialize(bounds: Bounds, n: int, min_size: int, needed: Callable[[], int], where: str
                 ) -> dict[str, np.ndarray]:
    out = {}
    for name, (a, b) in bounds.items():
        if b - a < max(1, min_size):
            n_needed = needed()
            raise SplitError(
                f"split {name!r}{where} has {counted(max(0, b - a), 'sample')}, needs >= "
                f"{max(1, min_size)}: {counted(n, 'sample')} {'is' if n == 1 else 'are'} too "
                "few for these fractions/purge/embargo; need at least"
                f" {n_needed} (use more history or a smaller seq_len/purge/embargo)",
                n_needed,
            )
        out[name] = np.arange(a, b, dtype=np.int64)
    return out


def holdout_split(n: int, train: float, val: float, test: float, purge: int, embargo: int,
                  min_size: int = 1) -> dict[str, np.ndarray]:
    """{"train", "val", "test"} -> int64 sample indices for n samples (see module doc)."""
    bounds = holdout_bounds(n, train, val, test, purge, embargo)

    def needed() -> int:
        return min_samples("holdout", train=train, val=val, test=test, n_folds=1, purge=purge,
                           embargo=embargo, min_size=max(1, min_size))

    return _materialize(bounds, n, min_size, needed, "")


def walk_forward_splits(n: int, n_folds: int, train: float, val: float, purge: int,
                        embargo: int, min_size: int = 1) -> list[dict[str, np.ndarray]]:
    """One {"train", "val", "test"} dict of int64 indices per fold (see module doc)."""
    folds = walk_forward_bounds(n, n_folds, train, val, purge, embargo)

    def needed() -> int:
        return min_samples("walk_forward", train=train, val=val, test=1 - train - val,
                           n_folds=n_folds, purge=purge, embargo=embargo, min_size=max(1, min_size))

    return [_materialize(f, n, min_size, needed, f" of fold {k}") for k, f in enumerate(folds)]
