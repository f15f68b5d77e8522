"""A tiny PreparedSymbol with a planted signal, shared by the training-loop tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data.prepared import PreparedSymbol


def planted(
    n: int = 600,
    f: int = 5,
    seq_len: int = 6,
    horizons: Sequence[int] = (1, 2),
    seed: int = 0,
    *,
    lag_weight: float = 0.0,
    return_scales: Sequence[float] | None = None,
    cuts: tuple[float, float] = (0.7, 0.85),
) -> PreparedSymbol:
    """Feature 0 at the decision time (plus `lag_weight` x feature 1 one step earlier)
    decides the class of every horizon: > 0.4 up, < -0.4 down, else flat. Horizon j's
    return is 0.01 x signal x `return_scales[j]` (default 1), its threshold 0.004 x scale."""
    rng = np.random.default_rng(seed)
    t = n + seq_len - 1
    features = rng.standard_normal((t, f)).astype(np.float32)  # [T, F]
    signal = features[seq_len - 1 :, 0]
    if lag_weight:
        signal = signal + lag_weight * features[seq_len - 2 : -1, 1]
    y = np.where(signal > 0.4, 2, np.where(signal < -0.4, 0, 1)).astype(np.int64)
    scales = np.asarray(return_scales or [1.0] * len(horizons), dtype=np.float32)
    idx = np.arange(n)
    cut1, cut2 = round(n * cuts[0]), round(n * cuts[1])
    return PreparedSymbol(
        symbol="SYN",
        features=features,
        feature_names=tuple(f"f{i}" for i in range(f)),
        timestamps=np.datetime64("2015-01-01", "ns") + np.arange(t) * np.timedelta64(1, "D"),
        y_return=(signal[:, None] * 0.01 * scales[None, :]).astype(np.float32),
        y_class=np.repeat(y[:, None], len(horizons), 1),
        horizons=tuple(horizons),
        seq_len=seq_len,
        splits={"train": idx[:cut1], "val": idx[cut1:cut2], "test": idx[cut2:]},
        thresholds=(0.004 * scales).astype(np.float32),
        scaler_mean=np.zeros(f, dtype=np.float32),
        scaler_std=np.ones(f, dtype=np.float32),
        meta={"source": "synthetic"},
    )
