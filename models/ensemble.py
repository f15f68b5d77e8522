"""Soft-voting ensembles over one symbol's fitted models.

The ensemble's class probabilities are a weighted mean of its members' `predict_proba`,
per horizon: p_h = sum_m w_{m,h} p_{m,h} with sum_m w_{m,h} = 1, and its class is the
argmax. Two weightings:
- "equal": w_{m,h} = 1 / M  -> leaderboard model "ensemble_equal".
- "f1": w_{m,h} proportional to member m's macro-F1 on the VALIDATION split at horizon h
  -> "ensemble_f1". When every member scores 0 there, the F1 weighting carries no
  information and is defined as equal weights.
The weights use validation labels, so the "ensemble_f1" val rows are in-sample for the
weights; its test rows are out-of-sample like every other model's.
If every member forecasts returns, the ensemble's return forecast is the same weighted
mean; otherwise its return metrics are None.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data.prepared import PreparedSymbol
from models.leaderboard import count_params, fit_stats, model_inputs, prediction_rows
from models.metrics import direction_metrics

WEIGHTINGS = ("equal", "f1")


def member_outputs(
    members: dict[str, Any], prepared: PreparedSymbol, split: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Stack the members' outputs on one split: probas (M, n, H, 3), returns (M, n, H) | None."""
    probas, returns = [], []
    for name, model in members.items():
        x = model_inputs(model, prepared, split)
        proba = np.asarray(model.predict_proba(x), dtype=np.float64)
        if not np.isfinite(proba).all():
            raise ValueError(
                f"{prepared.symbol}: ensemble member {name!r} gives NaN/inf probabilities on"
                f" {split}; leave it out of the ensemble"
            )
        probas.append(proba)
        r = model.predict_return(x)
        returns.append(None if r is None else np.asarray(r, dtype=np.float64))
    stacked_returns = None if any(r is None for r in returns) else np.stack(returns)
    return np.stack(probas), stacked_returns


def ensemble_weights(
    members: dict[str, Any], prepared: PreparedSymbol, weighting: str
) -> np.ndarray:
    """(M, H) member weights per horizon, each column summing to 1."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"ensemble weighting {weighting!r}: choose one of {WEIGHTINGS}")
    n_m, n_h = len(members), len(prepared.horizons)
    if weighting == "equal":
        return np.full((n_m, n_h), 1.0 / n_m)
    preds = [np.asarray(m.predict(model_inputs(m, prepared, "val"))) for m in members.values()]
    return f1_weights(prepared.y_class[prepared.splits["val"]], preds)


def f1_weights(y_val: np.ndarray, preds: list[np.ndarray]) -> np.ndarray:
    """(M, H) weights proportional to each member's validation macro-F1 per horizon, from
    the labels [n_val, H] and the members' class predictions, each [n_val, H]; equal
    weights where every member scores 0."""
    n_m, n_h = len(preds), y_val.shape[1]
    scores = np.zeros((n_m, n_h))
    for m, pred in enumerate(preds):
        for j in range(n_h):
            scores[m, j] = direction_metrics(y_val[:, j], pred[:, j])["macro_f1"]
    totals = scores.sum(axis=0, keepdims=True)  # [1, H]
    return np.where(totals > 0, scores / np.where(totals > 0, totals, 1.0), 1.0 / n_m)


def soft_vote(probas: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(M, n, H, 3) member probabilities x (M, H) weights -> (n, H, 3) ensemble probabilities."""
    if probas.shape[0] != weights.shape[0] or probas.shape[2] != weights.shape[1]:
        raise ValueError(f"probas {probas.shape} do not match weights {weights.shape}")
    bad = ~np.isfinite(probas).reshape(probas.shape[0], -1).all(axis=1)
    if bad.any():  # NaN would vote, and argmax of NaN is silently class 0 (down)
        raise ValueError(f"members {np.flatnonzero(bad).tolist()} have NaN/inf probabilities")
    return np.einsum("mnhc,mh->nhc", probas, weights)


def ensemble_rows(
    symbol: str,
    members: dict[str, Any],
    prepared: PreparedSymbol,
    splits: tuple[str, ...] = ("val", "test"),
    weightings: tuple[str, ...] = WEIGHTINGS,
) -> list[dict[str, Any]]:
    """Leaderboard rows ("ensemble_equal" / "ensemble_f1") of a symbol's fitted models."""
    if len(members) < 2:
        raise ValueError(
            f"{symbol}: an ensemble needs at least 2 fitted models, got {list(members)}"
        )
    stats = [fit_stats(m) for m in members.values()]
    seconds = [s["train_seconds"] for s in stats]
    params = [count_params(m) for m in members.values()]
    n_h = len(prepared.horizons)  # per horizon: a linear member counts that horizon's own
    summary = {
        "train_seconds": None if None in seconds else float(sum(seconds)),
        "epochs": None,
        "best_epoch": None,
        "params": None if None in params else tuple(
            sum(p[j] if isinstance(p, tuple) else p for p in params) for j in range(n_h)),
    }
    weights = {w: ensemble_weights(members, prepared, w) for w in weightings}
    rows: list[dict[str, Any]] = []
    for split in splits:
        probas, returns = member_outputs(members, prepared, split)
        for weighting, w in weights.items():
            proba = soft_vote(probas, w)  # [n, H, 3]
            ret = None if returns is None else np.einsum("mnh,mh->nh", returns, w)
            rows += prediction_rows(symbol, f"ensemble_{weighting}", prepared, split,
                                    proba.argmax(axis=-1), ret, summary)
    return rows
