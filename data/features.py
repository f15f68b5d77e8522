"""Causal, scale-free technical features of one symbol's daily bars.

Every feature at row t uses rows <= t only (rolling windows end at t, EMAs run forward),
so a model never sees the future through its inputs. Everything is vectorized over rows
(numpy sliding windows and pandas EWM); there is no Python loop over time.

Features are scale-free (returns, ratios, z-scores): no raw price or volume levels, so one
model can learn across symbols that trade at $5 and at $500. The first `BAR_WARMUP` rows
hold NaN (windows not yet full) and are dropped by `data.prepare`; after them a frame
without missing values gives no NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

BAR_COLUMNS = ("open", "high", "low", "close", "volume")
RETURN_LAGS = (1, 2, 5, 10, 20)
VOL_WINDOWS = (5, 20)
RSI_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
BB_WINDOW, BB_WIDTH = 20, 2.0
ATR_PERIOD = 14
VOLUME_Z_WINDOW = 20
FLAT_REL = 1e-12  # relative std below which a rolling window counts as flat (round-off)

# Rows without a full look-back = the first row index where every feature is defined.
# Each term is that index for one feature; the longest chain is the MACD signal: the slow
# EMA is defined from row MACD_SLOW - 1 and its 9-row EMA from row MACD_SLOW + MACD_SIGNAL - 2.
BAR_WARMUP = max(
    max(RETURN_LAGS),
    max(VOL_WINDOWS),  # returns start at row 1, a w-row window of them ends at row w
    RSI_PERIOD,
    MACD_SLOW + MACD_SIGNAL - 2,
    BB_WINDOW - 1,
    ATR_PERIOD,
    VOLUME_Z_WINDOW - 1,
)

BAR_FEATURE_NAMES: tuple[str, ...] = (
    *(f"logret_{k}" for k in RETURN_LAGS),
    *(f"vol_{w}" for w in VOL_WINDOWS),
    f"rsi_{RSI_PERIOD}",
    "macd",
    "macd_signal",
    "macd_hist",
    f"bb_pctb_{BB_WINDOW}",
    f"atr_{ATR_PERIOD}",
    f"volume_z_{VOLUME_Z_WINDOW}",
    "range_ratio",
    "body_ratio",
)


# ---- causal building blocks (1-D float64 in, 1-D float64 out, same length) --------------
def lagged(x: np.ndarray, k: int) -> np.ndarray:
    """x shifted down by k rows (row t holds x[t - k]); the first k rows are NaN."""
    out = np.full_like(x, np.nan, dtype=np.float64)
    out[k:] = x[: len(x) - k]
    return out


def rolling_mean_std(x: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std (ddof=0) of x[t - window + 1 : t + 1]; NaN until the window
    is full or while it holds a NaN. Each window is computed on its own (two-pass), so row t
    never depends on rows > t and a flat window is not hidden by running-sum round-off;
    a std below FLAT_REL * |mean| is round-off of a flat window and set to exactly 0."""
    mean, std = np.full(len(x), np.nan), np.full(len(x), np.nan)
    if len(x) >= window:
        win = sliding_window_view(x, window)  # [T - w + 1, w] view, no copy
        m = win.mean(axis=-1)
        sd = np.sqrt(np.mean((win - m[:, None]) ** 2, axis=-1))
        mean[window - 1 :] = m
        std[window - 1 :] = np.where(sd <= FLAT_REL * np.abs(m), 0.0, sd)
    return mean, std


def rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing-window mean (see `rolling_mean_std`)."""
    return rolling_mean_std(x, window)[0]


def rolling_std(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing-window population std (see `rolling_mean_std`)."""
    return rolling_mean_std(x, window)[1]


def rolling_zscore(x: np.ndarray, window: int) -> np.ndarray:
    """(x_t - mean) / std over the trailing window including t; 0 where the window is flat."""
    mean, std = rolling_mean_std(x, window)
    return _safe_div(x - mean, std, 0.0)


def ewm(x: np.ndarray, alpha: float, min_periods: int) -> np.ndarray:
    """Recursive EMA y_t = alpha x_t + (1 - alpha) y_{t-1}, seeded with the first non-NaN
    value (pandas `ewm(alpha, adjust=False)`); NaN for the first `min_periods - 1` values.

    A NaN after the start propagates to every later row (the recursion cannot skip it), so
    unrepaired gaps surface as NaN instead of being smoothed over.
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.full(len(x), np.nan)
    valid = np.flatnonzero(~np.isnan(x))
    if len(valid) == 0:
        return out
    s0 = int(valid[0])
    z = x[s0:]  # (n,)
    n, b = len(z), 1.0 - alpha
    # Blocked closed form, vectorized inside blocks of k rows:
    #   y[i*k + j] = b^(j+1) y[i*k - 1] + alpha * b^j * cumsum_{m<=j}(b^-m z[i*k + m])
    # k keeps b^-k <= 1e3, so the rescaled cumsum loses at most ~3 digits of 16.
    k = int(min(256, max(1, np.floor(np.log(1e3) / -np.log(b))))) if b > 0 else 1
    n_blocks = -(-n // k)
    zb = np.zeros(n_blocks * k)
    zb[:n] = z  # padding sits after the data, so it cannot reach earlier rows
    zb = zb.reshape(n_blocks, k)  # [B, k]
    j = np.arange(k)
    partial = alpha * b**j * np.cumsum(zb * b ** (-j.astype(np.float64)), axis=1)  # [B, k]
    carry = np.empty(n_blocks)  # y at the row before each block
    prev = z[0]  # seed: y[-1] = z[0] makes y[0] = z[0]
    for i in range(n_blocks):  # loop over blocks (n / k of them), not rows
        carry[i] = prev
        prev = b**k * prev + partial[i, -1]
    y = (b ** (j + 1))[None, :] * carry[:, None] + partial  # [B, k]
    out[s0:] = y.reshape(-1)[:n]
    if min_periods > 1:
        out[s0 : s0 + min_periods - 1] = np.nan
    return out


def _safe_div(num: np.ndarray, den: np.ndarray, where_zero: float) -> np.ndarray:
    """num / den with `where_zero` where den == 0 (NaN inputs stay NaN)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    return np.where(den == 0, where_zero, out)


# ---- the bar feature set --------------------------------------------------------------
def bar_features(df: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """(T, F) float32 features of ONE symbol's bars sorted by date, and their names.

    `df` needs columns open, high, low, close, volume (any index). Zero volume is legal
    (log1p). Rows < BAR_WARMUP contain NaN.
    """
    missing = [c for c in BAR_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"bar_features: missing column(s) {missing}; need {list(BAR_COLUMNS)}")
    # one 2-D copy instead of five column lookups: [T, 5] -> five (T,) column views
    o, h, lo, c, v = df.loc[:, list(BAR_COLUMNS)].to_numpy(dtype=np.float64).T
    logc = np.log(c)
    r1 = logc - lagged(logc, 1)  # (T,) 1-bar log return, NaN at row 0

    cols: list[np.ndarray] = [logc - lagged(logc, k) for k in RETURN_LAGS]
    # volatility of 1-bar returns; the window starts at row 1 where r1 exists
    cols += [rolling_std(r1, w) for w in VOL_WINDOWS]

    # RSI with Wilder smoothing (alpha = 1/period), in [0, 1]; flat window -> 0.5
    diff = np.diff(c, prepend=np.nan)
    gain = ewm(np.maximum(diff, 0.0), 1.0 / RSI_PERIOD, RSI_PERIOD)  # NaN at row 0 stays NaN
    loss = ewm(np.maximum(-diff, 0.0), 1.0 / RSI_PERIOD, RSI_PERIOD)
    cols.append(_safe_div(gain, gain + loss, 0.5))

    # MACD of price, divided by price so it is a relative (scale-free) spread
    fast = ewm(c, 2.0 / (MACD_FAST + 1), MACD_FAST)
    slow = ewm(c, 2.0 / (MACD_SLOW + 1), MACD_SLOW)
    macd = (fast - slow) / c
    signal = ewm(macd, 2.0 / (MACD_SIGNAL + 1), MACD_SIGNAL)
    cols += [macd, signal, macd - signal]

    # Bollinger %b: 0 at the lower band, 1 at the upper; flat window -> 0.5 (the middle)
    ma, sd = rolling_mean_std(c, BB_WINDOW)
    cols.append(_safe_div(c - (ma - BB_WIDTH * sd), 2 * BB_WIDTH * sd, 0.5))

    # ATR (Wilder) relative to price; true range needs the previous close
    prev_c = lagged(c, 1)
    tr = np.maximum(h - lo, np.maximum(np.abs(h - prev_c), np.abs(lo - prev_c)))
    cols.append(ewm(tr, 1.0 / ATR_PERIOD, ATR_PERIOD) / c)

    cols.append(rolling_zscore(np.log1p(v), VOLUME_Z_WINDOW))
    cols.append((h - lo) / c)
    cols.append(_safe_div(c - o, h - lo, 0.0))  # doji bar (high == low) -> 0

    # [F][T] -> [T, F]
    out = np.stack(cols, axis=1).astype(np.float32)
    return out, list(BAR_FEATURE_NAMES)
