"""Ensembles of a symbol's units, computed from the predictions each unit stored (no refit,
no model loading): the same soft voting as `models.ensemble`, weights equal or by
validation macro-F1 per horizon.

A member refit on train+val after a Tune search stores no val predictions (they would be
in-sample). When a member has none, there is no honest validation score to weight by nor
an out-of-sample val split for the ensemble: only `ensemble_equal` is scored, on test."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from data.prepared import PreparedSymbol
from data.symbols import safe_symbol
from ray_jobs.storage import JobStorage

CLASS_COLUMNS = ("down", "flat", "up")


Columns = Mapping[str, Any]  # a predictions table: a DataFrame or column name -> array


def _rows_of(cols: Columns, prepared: PreparedSymbol, split: str, model: str = "a member"
             ) -> np.ndarray:
    """Positions of `split`'s rows in `cols`, in the order of `prepared.splits[split]`;
    rows of other samples raise, naming `model` and the fold (the ensemble error is filed
    under the symbol alone)."""
    positions = np.flatnonzero(np.asarray(cols["split"]) == split)
    samples = np.asarray(cols["sample"])[positions]
    idx = prepared.splits[split]
    if samples.size != idx.size or not np.array_equal(np.sort(samples), np.sort(idx)):
        raise ValueError(f"{model}'s stored {split} predictions (fold {prepared.fold}) do "
                         "not match the prepared split: its unit was trained on other data "
                         "or dates; train it again")
    order = np.argsort(samples)
    return positions[order[np.searchsorted(samples, idx, sorter=order)]]


def _member_arrays(
    cols: Columns, prepared: PreparedSymbol, split: str, model: str = "a member"
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(n, H, 3) probabilities, (n, H) returns | None and (n, H) classes of one member on
    one split, in the order of `prepared.splits[split]`."""
    rows = _rows_of(cols, prepared, split, model)
    hs = prepared.horizons
    proba = np.stack(
        [np.stack([np.asarray(cols[f"p_{c}_h{h}"])[rows] for c in CLASS_COLUMNS], -1)
         for h in hs], 1,
    )  # fmt: skip  # [n, H, 3]
    ret_cols = [f"pred_return_h{h}" for h in hs]
    returns = (np.stack([np.asarray(cols[c])[rows] for c in ret_cols], 1)
               if all(c in cols for c in ret_cols) else None)  # fmt: skip
    classes = np.stack([np.asarray(cols[f"pred_class_h{h}"])[rows] for h in hs], 1)
    return proba.astype(np.float64), returns, classes


def symbol_ensemble_rows(
    symbol: str,
    prepared: PreparedSymbol,
    unit_dirs: dict[str, str],
    storage: JobStorage,
    splits: tuple[str, ...] = ("val", "test"),
) -> list[dict[str, Any]]:
    """Rows for `ensemble_equal` and `ensemble_f1` over the models in `unit_dirs`
    (model -> unit dir holding `predictions.parquet`); needs at least two members."""
    if len(unit_dirs) < 2:
        return []
    frames = {
        m: pd.read_parquet(io.BytesIO(storage.read_bytes(f"{d}/predictions.parquet")))
        for m, d in sorted(unit_dirs.items())
    }
    return ensemble_rows_from_predictions(symbol, prepared, frames, splits)


def ensemble_rows_from_predictions(
    symbol: str,
    prepared: PreparedSymbol,
    frames: Mapping[str, Columns],
    splits: tuple[str, ...] = ("val", "test"),
) -> list[dict[str, Any]]:
    """The ensemble rows from the members' prediction tables (`units.prediction_columns`
    or the stored `predictions.parquet` as a DataFrame), model -> table; needs at least
    two members."""
    from models.ensemble import f1_weights, soft_vote
    from models.leaderboard import prediction_rows

    if len(frames) < 2:
        return []
    frames = dict(sorted(frames.items()))  # fixed member order
    n_m, n_h = len(frames), len(prepared.horizons)
    weights = {"equal": np.full((n_m, n_h), 1.0 / n_m)}
    if all("val" in set(np.asarray(f["split"])) for f in frames.values()):
        preds = [_member_arrays(f, prepared, "val", m)[2] for m, f in frames.items()]
        weights["f1"] = f1_weights(prepared.y_class[prepared.splits["val"]], preds)
    else:  # a refit member: no out-of-sample val (module docstring)
        splits = tuple(s for s in splits if s != "val")
    arrays = {s: [_member_arrays(f, prepared, s, m) for m, f in frames.items()]
              for s in splits}
    stats = {"train_seconds": None, "epochs": None, "best_epoch": None, "params": None}
    rows: list[dict[str, Any]] = []
    for split in splits:
        probas = np.stack([p for p, _, _ in arrays[split]])  # [M, n, H, 3]
        rets = [r for _, r, _ in arrays[split]]
        stacked = None if any(r is None for r in rets) else np.stack(rets)  # [M, n, H]
        for name, w in weights.items():
            proba = soft_vote(probas, w)
            ret = None if stacked is None else np.einsum("mnh,mh->nh", stacked, w)
            rows += prediction_rows(symbol, f"ensemble_{name}", prepared, split,
                                    proba.argmax(-1), ret, stats)
    for row in rows:
        row.update(unit_id=f"{safe_symbol(row['symbol'])}__{row['model']}__f{row['fold']}",
                   artifact_uri=None)  # the planner's unit id form (BRK.B -> BRK_B)
    return rows
