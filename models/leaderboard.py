"""Leaderboard rows of a fitted model: predictions on each split scored per horizon.

Every model, linear or deep, lands in the same table (`metrics.LEADERBOARD_COLUMNS`):
direction metrics come from `predict` (classes), return metrics from `predict_return`
when the model predicts returns (linear models, deep models trained with task="return"),
else they are None.

Columns `train_seconds`, `epochs`, `best_epoch` come from the fitted model's training
result; `params` is the number of fitted parameters (weights and biases of a deep model,
coefficients and intercepts of a linear one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data.prepared import PreparedSymbol
from models.metrics import direction_metrics, empty_row, return_metrics


def input_kind(fitted: Any) -> str:
    """"tabular" or "sequence": the fitted model's attribute, else its registry entry."""
    kind = getattr(fitted, "input_kind", None)
    if kind is None:
        from models.registry import get_spec

        kind = get_spec(fitted.name).input
    if kind not in ("tabular", "sequence"):
        raise ValueError(f"model {fitted.name!r}: unknown input kind {kind!r}")
    return kind


def model_inputs(fitted: Any, prepared: PreparedSymbol, split: str) -> np.ndarray:
    """The inputs `fitted` expects for one split: (n, F) rows or (n, L, F) windows.

    A sequence model trained on shorter windows than the prepared `seq_len` gets the
    last `fitted.seq_len` steps of each window (the same decision time).
    """
    if split not in prepared.splits:
        raise ValueError(f"{prepared.symbol}: no split {split!r}; have {sorted(prepared.splits)}")
    idx = prepared.splits[split]
    if input_kind(fitted) == "tabular":
        return np.ascontiguousarray(prepared.X[idx], dtype=np.float32)
    length = int(getattr(fitted, "seq_len", None) or prepared.seq_len)
    if length > prepared.seq_len:
        raise ValueError(
            f"model {fitted.name!r} needs windows of {length} steps but {prepared.symbol} was"
            f" prepared with seq_len={prepared.seq_len}; prepare with seq_len >= {length}"
        )
    # [n, L_prepared, F] -> [n, L_model, F]: keep the most recent steps
    return np.ascontiguousarray(prepared.X_seq[idx][:, -length:, :], dtype=np.float32)


def count_params(fitted: Any) -> int | tuple[int, ...] | None:
    """Number of fitted parameters: one per horizon (`params_by_horizon`: a linear model
    is a regression per horizon), else `n_params` or the torch module's parameters (one
    network forecasts every horizon)."""
    per_horizon = getattr(fitted, "params_by_horizon", None)
    if per_horizon is not None:
        return tuple(int(n) for n in per_horizon)
    n = getattr(fitted, "n_params", None)
    if n is not None:
        return int(n)
    module = getattr(fitted, "module", None)
    if module is not None and hasattr(module, "parameters"):
        return int(sum(p.numel() for p in module.parameters()))
    return None


def fit_stats(fitted: Any) -> dict[str, Any]:
    """train_seconds / epochs / best_epoch / params of a fitted model (None if unknown)."""
    result = getattr(fitted, "result", None)
    if result is not None:
        seconds = getattr(result, "train_seconds", None)
        epochs = getattr(result, "epochs_run", None)
        best = getattr(result, "best_epoch", None)
    else:
        seconds = getattr(fitted, "train_seconds", None)
        epochs = best = None
    return {
        "train_seconds": None if seconds is None else float(seconds),
        "epochs": None if epochs is None else int(epochs),
        # counted from 1, as `epochs` and the learning curves count (the training
        # result's best_epoch indexes its history from 0); -1: no epoch ever improved
        "best_epoch": None if best is None or int(best) < 0 else int(best) + 1,
        "params": count_params(fitted),
    }


def prediction_rows(
    symbol: str,
    model_name: str,
    prepared: PreparedSymbol,
    split: str,
    classes: np.ndarray,
    returns: np.ndarray | None,
    stats: dict[str, Any],
) -> list[dict[str, Any]]:
    """Score (n, H) predicted classes (and returns) of one split: one row per horizon."""
    idx = prepared.splits[split]
    train = prepared.splits["train"]
    n_h = len(prepared.horizons)
    if classes.shape != (idx.size, n_h):
        raise ValueError(
            f"{model_name} on {symbol}/{split}: predicted classes {classes.shape},"
            f" expected {(idx.size, n_h)}"
        )
    rows = []
    for j, h in enumerate(prepared.horizons):
        row = empty_row(symbol, model_name, h, split, prepared.fold)
        row.update(stats)
        if isinstance(row.get("params"), tuple):  # a regression per horizon: its own count
            row["params"] = row["params"][j]
        row.update(direction_metrics(prepared.y_class[idx, j], classes[:, j],
                                     prepared.y_class[train, j], horizon=h))
        if returns is not None:
            train_mean = float(np.mean(prepared.y_return[train, j]))
            row.update(return_metrics(prepared.y_return[idx, j], returns[:, j], train_mean,
                                      horizon=h))
        rows.append(row)
    return rows


def fitted_rows(
    symbol: str,
    model_name: str,
    fitted: Any,
    prepared: PreparedSymbol,
    splits: tuple[str, ...] = ("val", "test"),
) -> list[dict[str, Any]]:
    """Leaderboard rows (one per horizon x split) of a fitted model on a prepared symbol."""
    stats = fit_stats(fitted)
    rows: list[dict[str, Any]] = []
    for split in splits:
        x = model_inputs(fitted, prepared, split)
        classes = np.asarray(fitted.predict(x))
        returns = fitted.predict_return(x)
        rows += prediction_rows(symbol, model_name, prepared, split, classes,
                                None if returns is None else np.asarray(returns), stats)
    return rows
