"""Targets: forward log returns per horizon and their direction classes.

Classes: 0 down (r < -tau_h), 1 flat (|r| <= tau_h), 2 up (r > tau_h). The flat band
tau_h is fitted on the training rows only, so no statistic of the future leaks into
the labels' definition.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data.wording import counted

Threshold = str | float | Sequence[float]

# "auto": tau_h is this quantile of |r| on the training rows, so about a third of the
# training samples are flat and the rest split between down and up (roughly balanced).
# Where it is 0 (over a third of the returns are exactly 0: prices that move in ticks),
# tau_h is half the smallest non-zero |r| instead: the same training classes, with a band
# of non-zero width (see `_half_smallest_move`).
AUTO_QUANTILE = 1.0 / 3.0


def forward_log_returns(close: np.ndarray, horizons: Sequence[int]) -> np.ndarray:
    """(T, H) float64: r[t, j] = log(close[t + h_j] / close[t]); NaN where t + h_j >= T."""
    close = np.asarray(close, dtype=np.float64)
    if close.ndim != 1:
        raise ValueError(f"forward_log_returns: close must be 1-D, got shape {close.shape}")
    if any(int(h) < 1 for h in horizons) or not len(horizons):
        raise ValueError(f"forward_log_returns: horizons must be >= 1, got {list(horizons)}")
    logc = np.log(close)
    out = np.full((len(close), len(horizons)), np.nan)
    for j, h in enumerate(horizons):  # loop over horizons (few), not rows
        if h < len(close):
            out[: len(close) - h, j] = logc[h:] - logc[:-h]
    return out


def fit_thresholds(train_returns: np.ndarray, threshold: Threshold) -> np.ndarray:
    """(H,) float32 flat-band half-widths from (n, H) TRAINING returns.

    threshold: "auto" -> per-horizon 1/3 quantile of |r| (half the smallest non-zero |r|
    where that quantile is 0); a float -> that tau for every
    horizon; a sequence -> one tau per horizon.
    """
    train_returns = np.asarray(train_returns, dtype=np.float64)
    if train_returns.ndim != 2:
        raise ValueError(f"fit_thresholds: expected (n, H) returns, got {train_returns.shape}")
    n_h = train_returns.shape[1]
    if isinstance(threshold, str):
        if threshold != "auto":
            raise ValueError(f"threshold={threshold!r}: use 'auto', a float or one per horizon")
        if (np.isfinite(train_returns).sum(axis=0) == 0).any():
            raise ValueError(
                "fit_thresholds: a horizon has no finite training return to fit 'auto' on;"
                " the training split is empty or shorter than the horizon"
            )
        absr = np.abs(train_returns)
        # np.quantile is much faster; nanquantile only when some rows lack a return
        quantile = np.quantile if np.isfinite(absr).all() else np.nanquantile
        tau = quantile(absr, AUTO_QUANTILE, axis=0)
        tau = np.where(tau > 0, tau, _half_smallest_move(absr))
        tau = np.array([_off_tick_level(absr[:, j], tau[j]) for j in range(n_h)])
    elif isinstance(threshold, int | float):
        tau = np.full(n_h, float(threshold))
    else:
        tau = np.asarray(list(threshold), dtype=np.float64)
        if tau.shape != (n_h,):
            raise ValueError(
                f"threshold has {counted(tau.size, 'value')} but there "
                f"{'is' if n_h == 1 else 'are'} {counted(n_h, 'horizon')}; give one each"
            )
    if not (np.isfinite(tau).all() and (tau >= 0).all()):
        raise ValueError(f"threshold values must be finite and >= 0, got {tau.tolist()}")
    return tau.astype(np.float32)


# A gap between consecutive sorted |r| larger than this (relative) separates price levels
# (one tick, two ticks...); a level is at most this wide (relative: its one-tick moves
# differ by the price's range over the training rows), where the stretch of continuous
# returns around the 1/3 quantile reaches from near 0 far into the tail.
TICK_GAP = 0.2
TICK_LEVEL_WIDTH = 0.5
TICK_LEVEL_MIN_SHARE = 0.1  # a level is a mass of moves, not a stretch between two
TICK_MIN_SAMPLES = 200      # chance gaps among the smallest moves of a continuous series


def _off_tick_level(absr: np.ndarray, tau: float) -> float:
    """`tau`, or where it falls inside a level of discrete |r| (prices that move in ticks:
    every one-tick move is 1 tick / price, a tight cluster), the midpoint of the gap below
    or above that level, whichever leaves the flat share nearer a third. A band edge
    inside the level split the one-tick moves by the price level: a test period at a price
    0.3% higher turned 91% of its samples "flat" (33% in training), which hid a strong
    signal behind the class scores. Continuous returns have no such gaps and keep `tau`."""
    x = np.sort(absr[np.isfinite(absr)])
    if tau <= 0 or x.size < TICK_MIN_SAMPLES:
        return float(tau)
    with np.errstate(divide="ignore", invalid="ignore"):
        gaps = np.where(x[:-1] > 0, x[1:] / x[:-1] - 1.0, np.where(x[1:] > 0, np.inf, 0.0))
    breaks = np.flatnonzero(gaps > TICK_GAP)  # a level ends at x[b], the next starts at b + 1
    at = int(np.searchsorted(x, tau, side="right")) - 1  # the last |r| <= tau
    at = max(at, 0)
    lo = int(breaks[breaks < at].max()) + 1 if (breaks < at).any() else 0
    hi = int(breaks[breaks >= at].min()) if (breaks >= at).any() else x.size - 1
    if not (0 < x[lo] <= tau < x[hi] <= x[lo] * (1 + TICK_LEVEL_WIDTH)) \
            or (hi - lo + 1) < TICK_LEVEL_MIN_SHARE * x.size:
        return float(tau)  # at a gap already, or no level: a continuous distribution
    below = (x[lo - 1] + x[lo]) / 2 if lo > 0 else x[lo] / 2
    options = [below] + ([(x[hi] + x[hi + 1]) / 2] if hi + 1 < x.size else [])
    return float(min(options, key=lambda t: abs((x <= t).mean() - AUTO_QUANTILE)))


def _half_smallest_move(absr: np.ndarray) -> np.ndarray:
    """(H,) half the smallest non-zero |r| per horizon of (n, H) training |returns| (0 where
    every return is 0). Prices that move in ticks (intraday bars of a low-priced stock, a
    pegged or illiquid series) leave over a third of the returns exactly 0, and the 1/3
    quantile is then 0: a flat band of zero width. The training classes are the same with
    this band (no |r| lies between 0 and the smallest move), but a model that forecasts a
    continuous return (the linear models' predictive distribution) puts no probability on
    a zero-width band, so it never called "flat" while most labels were."""
    moved = np.where(absr > 0, absr, np.inf)  # NaN compares False: never a move
    smallest = moved.min(axis=0)
    return np.where(np.isfinite(smallest), smallest / 2, 0.0)


def to_classes(returns: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(n, H) int64 classes of (n, H) returns: 0 down, 1 flat, 2 up.

    NaN is an error rather than silently "flat": label only rows that have a return.
    """
    returns = np.asarray(returns)
    if np.isnan(returns).any():
        raise ValueError("to_classes: returns contain NaN; drop rows without a label first")
    tau = np.asarray(thresholds).reshape(1, -1)
    return np.where(returns > tau, 2, np.where(returns < -tau, 0, 1)).astype(np.int64)
