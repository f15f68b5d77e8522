"""Causal, scale-free, level-free features of limit-order-book snapshots, for any number of
levels L.

Input columns (one symbol, sorted by `ts`): ask_price_1..L, ask_size_1..L, bid_price_1..L,
bid_size_1..L; level 1 is the best quote. Row t uses rows <= t only.

- Sizes become rolling z-scores of log1p(size), so nothing depends on an instrument's
  share-count scale.
- The spread and each level's distance from the mid price are taken relative to their own
  trailing mean over the same window (x_t / mean - 1: 0.5 is a spread half as wide again
  as of late). Plain basis-point offsets carried the price level: a real book's levels sit
  a fixed number of ticks apart, so a tick in bps is tick / mid, and a linear model turned
  that into a price-level forecast whose test IC on random walks looked significant
  (ic_p_value < 0.01 for 20% of symbols at h = 50). Against its recent mean a distance
  moves with the mid's last `LOB_WINDOW` snapshots only, which carries no level.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from data.features import lagged, rolling_zscore

LOB_WINDOW = 50  # snapshots of the size z-scores and of the distances' trailing means
# the mid-price return needs 1 previous row, the z-scores and trailing means a full window
LOB_WARMUP = max(1, LOB_WINDOW - 1)

_LEVEL_COL = re.compile(r"^(ask|bid)_(price|size)_(\d+)$")


def lob_levels(columns: pd.Index | list[str]) -> int:
    """Number of book levels L in a LOB frame; every side/field must have levels 1..L."""
    found: dict[tuple[str, str], set[int]] = {}
    for col in columns:
        m = _LEVEL_COL.match(str(col))
        if m:
            found.setdefault((m[1], m[2]), set()).add(int(m[3]))
    keys = [(s, f) for s in ("ask", "bid") for f in ("price", "size")]
    if not found or any(k not in found for k in keys):
        raise ValueError(
            "LOB frame needs columns ask_price_1..L, ask_size_1..L, bid_price_1..L, "
            f"bid_size_1..L; got {list(columns)}"
        )
    n = max(max(v) for v in found.values())
    for k in keys:
        if found[k] != set(range(1, n + 1)):
            raise ValueError(
                f"LOB frame: {k[0]}_{k[1]}_* has levels {sorted(found[k])}; need 1..{n}"
            )
    return n


def lob_feature_names(levels: int) -> list[str]:
    names = ["mid_logret", "spread_rel"]
    names += [f"imbalance_{i}" for i in range(1, levels + 1)]
    names += [f"cum_imbalance_{i}" for i in range(1, levels + 1)]
    names += [f"ask_offset_rel_{i}" for i in range(1, levels + 1)]
    names += [f"bid_offset_rel_{i}" for i in range(1, levels + 1)]
    names += [f"ask_size_z_{i}" for i in range(1, levels + 1)]
    names += [f"bid_size_z_{i}" for i in range(1, levels + 1)]
    return names


def mid_price(df: pd.DataFrame) -> np.ndarray:
    """(T,) mid price (best ask + best bid) / 2."""
    return (df["ask_price_1"].to_numpy(np.float64) + df["bid_price_1"].to_numpy(np.float64)) / 2


def _imbalance(bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    """(bid - ask) / (bid + ask) in [-1, 1]; an empty level (both 0) is balanced (0)."""
    total = bid + ask
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (bid - ask) / total
    return np.where(total == 0, 0.0, out)


def relative_to_recent(x: np.ndarray, window: int) -> np.ndarray:
    """(T, K) x_t / (mean of x over the trailing `window` rows including t) - 1, per
    column; 0 where that mean is 0 (a locked book's zero spread); NaN until the window is
    full."""
    x = np.asarray(x, dtype=np.float64)
    mean = np.full(x.shape, np.nan)
    if len(x) >= window:  # each window on its own (no running sums), all columns at once
        mean[window - 1:] = sliding_window_view(x, window, axis=0).mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = x / mean - 1.0
    return np.where(mean == 0, 0.0, ratio)


def lob_features(df: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """(T, 2 + 6L) float32 features of ONE symbol's LOB snapshots sorted by time, and names.

    Rows < LOB_WARMUP contain NaN (size z-score windows not yet full).
    """
    levels = lob_levels(df.columns)

    def side(name: str) -> np.ndarray:
        # [L][T] -> [T, L]
        return np.stack(
            [df[f"{name}_{i}"].to_numpy(np.float64) for i in range(1, levels + 1)], axis=1
        )

    # each (T, L)
    ask_p, ask_s = side("ask_price"), side("ask_size")
    bid_p, bid_s = side("bid_price"), side("bid_size")
    mid = (ask_p[:, 0] + bid_p[:, 0]) / 2  # (T,)
    log_mid = np.log(mid)

    cols: list[np.ndarray] = [
        (log_mid - lagged(log_mid, 1))[:, None],
        relative_to_recent((ask_p[:, :1] - bid_p[:, :1]), LOB_WINDOW),
        _imbalance(bid_s, ask_s),  # (T, L) per level
        _imbalance(np.cumsum(bid_s, axis=1), np.cumsum(ask_s, axis=1)),  # depth up to level l
        relative_to_recent(ask_p - mid[:, None], LOB_WINDOW),  # (T, L)
        relative_to_recent(mid[:, None] - bid_p, LOB_WINDOW),  # (T, L)
    ]
    for sizes in (ask_s, bid_s):
        log_sizes = np.log1p(sizes)
        cols.append(
            np.stack(
                [rolling_zscore(log_sizes[:, i], LOB_WINDOW) for i in range(levels)],
                axis=1,
            )
        )
    out = np.concatenate(cols, axis=1).astype(np.float32)  # (T, 2 + 6L)
    return out, lob_feature_names(levels)
