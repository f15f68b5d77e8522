"""Standard scaling fitted on training rows only.

The parameters travel with the prepared data (`PreparedSymbol.scaler_mean/std`), so a
model applied later to new rows scales them exactly as it was trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A feature whose training std is below this is (numerically) constant on train: it is
# centred and divided by 1 instead, so a later non-constant value does not explode by 1e8.
MIN_STD = 1e-8


@dataclass(frozen=True)
class StandardScaler:
    mean: np.ndarray  # (F,) float32
    std: np.ndarray  # (F,) float32, >= MIN_STD (constant features get 1)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(T, F) -> (T, F) float32 C-contiguous (x - mean) / std."""
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"scaler fitted on {self.mean.shape[0]} features got array of shape {x.shape}"
            )
        out = (x.astype(np.float64) - self.mean.astype(np.float64)) / self.std.astype(np.float64)
        return np.ascontiguousarray(out, dtype=np.float32)


def fit_scaler(train_rows: np.ndarray) -> StandardScaler:
    """Mean and population std per column of (n, F) training rows (no NaN allowed)."""
    x = np.asarray(train_rows, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"fit_scaler: need (n >= 2, F) training rows, got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(axis=0)).tolist()
        raise ValueError(f"fit_scaler: non-finite training values in feature column(s) {bad}")
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std < MIN_STD, 1.0, std)
    return StandardScaler(mean=mean.astype(np.float32), std=std.astype(np.float32))
