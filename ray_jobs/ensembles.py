"""Ensembles of a symbol's units, computed from the predictions each unit stored (no refit,
no model loading): the same soft voting as `models.ensemble`, weights equal or by
validation macro-F1 per horizon."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd

from data.prepared import PreparedSymbol
from ray_jobs.storage import JobStorage

CLASS_COLUMNS = ("down", "flat", "up")


def _member_arrays(
    frame: pd.DataFrame, prepared: PreparedSymbol, split: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """(n, H, 3) probabilities and (n, H) returns | None of one member on one split, in
    the order of `prepared.splits[split]`."""
    part = frame[frame["split"] == split].set_index("sample")
    idx = prepared.splits[split]
    if len(part) != idx.size or not np.array_equal(np.sort(part.index.to_numpy()), np.sort(idx)):
        raise ValueError(f"stored {split} predictions do not match the prepared split")
    part = part.loc[idx]
    hs = prepared.horizons
    proba = np.stack(
        [np.stack([part[f"p_{c}_h{h}"].to_numpy() for c in CLASS_COLUMNS], -1) for h in hs], 1
    )  # [n, H, 3]
    ret_cols = [f"pred_return_h{h}" for h in hs]
    returns = part[ret_cols].to_numpy() if all(c in part for c in ret_cols) else None
    return proba.astype(np.float64), returns


def symbol_ensemble_rows(
    symbol: str,
    prepared: PreparedSymbol,
    unit_dirs: dict[str, str],
    storage: JobStorage,
    splits: tuple[str, ...] = ("val", "test"),
) -> list[dict[str, Any]]:
    """Rows for `ensemble_equal` and `ensemble_f1` over the models in `unit_dirs`
    (model -> unit dir holding `predictions.parquet`); needs at least two members."""
    from models.ensemble import soft_vote
    from models.leaderboard import prediction_rows
    from models.metrics import direction_metrics

    if len(unit_dirs) < 2:
        return []
    frames = {
        m: pd.read_parquet(io.BytesIO(storage.read_bytes(f"{d}/predictions.parquet")))
        for m, d in sorted(unit_dirs.items())
    }
    arrays = {s: [_member_arrays(f, prepared, s) for f in frames.values()] for s in splits}
    n_m, n_h = len(frames), len(prepared.horizons)
    y_val = prepared.y_class[prepared.splits["val"]]
    scores = np.zeros((n_m, n_h))
    val_idx = prepared.splits["val"]
    for m, f in enumerate(frames.values()):
        part = f[f["split"] == "val"].set_index("sample").loc[val_idx]
        pred = part[[f"pred_class_h{h}" for h in prepared.horizons]].to_numpy()  # [n_val, H]
        for j in range(n_h):
            scores[m, j] = direction_metrics(y_val[:, j], pred[:, j])["macro_f1"]
    totals = scores.sum(0, keepdims=True)
    weights = {
        "equal": np.full((n_m, n_h), 1.0 / n_m),
        "f1": np.where(totals > 0, scores / np.where(totals > 0, totals, 1.0), 1.0 / n_m),
    }
    stats = {"train_seconds": None, "epochs": None, "best_epoch": None, "params": None}
    rows: list[dict[str, Any]] = []
    for split in splits:
        probas = np.stack([p for p, _ in arrays[split]])  # [M, n, H, 3]
        rets = [r for _, r in arrays[split]]
        stacked = None if any(r is None for r in rets) else np.stack(rets)  # [M, n, H]
        for name, w in weights.items():
            proba = soft_vote(probas, w)
            ret = None if stacked is None else np.einsum("mnh,mh->nh", stacked, w)
            rows += prediction_rows(symbol, f"ensemble_{name}", prepared, split,
                                    proba.argmax(-1), ret, stats)
    for row in rows:
        row.update(unit_id=f"{row['symbol']}__{row['model']}__f{row['fold']}", artifact_uri=None)
    return rows
