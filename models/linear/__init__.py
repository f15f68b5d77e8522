"""Linear models (ols, ridge, lasso): registry entries, fit and load.

Each is a `ModelSpec(kind="linear", input="tabular", module_cls=None)`; its estimator
function (`spec.extra["estimator"]`) maps training/validation arrays to a `LinearFit`.
Presets and overrides set fields of the model's config dataclass only (linear models
have no training loop, so `train.*` keys and `seq_len` do not apply).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from data.prepared import PreparedSymbol
from models.config import TASKS, config_from_dict
from models.linear.base import METADATA_FILE, LinearModel, fit_log_scale
from models.linear.lasso import LASSO_PRESETS, LASSO_SEARCH_SPACE, LassoConfig, fit_lasso
from models.linear.ols import OLS_PRESETS, OLS_SEARCH_SPACE, OLSConfig, fit_ols
from models.linear.ridge import RIDGE_PRESETS, RIDGE_SEARCH_SPACE, RidgeConfig, fit_ridge
from models.spec import PRESETS, ModelSpec, artifact_errors, read_metadata

LINEAR_SPECS: dict[str, ModelSpec] = {
    "ols": ModelSpec(
        name="ols", kind="linear", input="tabular", config_cls=OLSConfig, module_cls=None,
        presets=OLS_PRESETS, search_space=OLS_SEARCH_SPACE,
        description="OLS per horizon, HAC (Newey-West) inference",
        extra={"estimator": fit_ols},
    ),
    "ridge": ModelSpec(
        name="ridge", kind="linear", input="tabular", config_cls=RidgeConfig, module_cls=None,
        presets=RIDGE_PRESETS, search_space=RIDGE_SEARCH_SPACE,
        description="ridge per horizon, alpha chosen on validation",
        extra={"estimator": fit_ridge},
    ),
    "lasso": ModelSpec(
        name="lasso", kind="linear", input="tabular", config_cls=LassoConfig, module_cls=None,
        presets=LASSO_PRESETS, search_space=LASSO_SEARCH_SPACE,
        description="lasso per horizon, alpha chosen on validation",
        extra={"estimator": fit_lasso},
    ),
}  # fmt: skip


def _spec(name: str) -> ModelSpec:
    if name not in LINEAR_SPECS:
        raise ValueError(f"unknown linear model {name!r}; known: {sorted(LINEAR_SPECS)}")
    return LINEAR_SPECS[name]


def resolve_linear(name: str, preset: str = "fast", overrides: dict | None = None) -> Any:
    """The config dataclass of linear model `name`: preset values, then overrides."""
    spec = _spec(name)
    if preset not in PRESETS:
        raise ValueError(f"{name}: unknown preset {preset!r}; choose one of {PRESETS}")
    values = {**spec.presets[preset]["model"], **(overrides or {})}
    return config_from_dict(spec.config_cls, values, where=f"{name} overrides")


def fit_linear(
    name: str,
    prepared: PreparedSymbol,
    *,
    preset: str = "fast",
    overrides: dict | None = None,
    task: str = "direction",
) -> LinearModel:
    """Fit linear model `name` on `prepared`'s training split (validation selects alpha).

    `task` is recorded only: a linear model always forecasts returns and also yields
    classes, so it serves both tasks.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r}: choose one of {TASKS}")
    spec = _spec(name)
    config = resolve_linear(name, preset, overrides)
    x_tr, _, y_tr = prepared.split_arrays("train", sequence=False)
    x_va, _, y_va = prepared.split_arrays("val", sequence=False)
    if x_tr.shape[0] <= x_tr.shape[1] or x_va.shape[0] == 0:
        raise ValueError(
            f"{prepared.symbol}: {name} needs more training samples ({x_tr.shape[0]}) than"
            f" features ({x_tr.shape[1]}) and a non-empty validation split ({x_va.shape[0]});"
            " load a longer history"
        )
    start = time.perf_counter()
    y_tr64, y_va64 = y_tr.astype(np.float64), y_va.astype(np.float64)
    x_tr64, x_va64 = x_tr.astype(np.float64), x_va.astype(np.float64)
    fit = spec.extra["estimator"](x_tr64, y_tr64, x_va64, y_va64, prepared.horizons, config)
    residuals = (y_tr64 - (x_tr64 @ fit.coef.T + fit.intercept)).T  # [H, n_train]
    scale = scaled = None
    if config.scale == "conditional":
        scale, train_scale = fit_log_scale(x_tr64, residuals)
        scaled = residuals / train_scale.T
    info = {
        "symbol": prepared.symbol,
        "fold": prepared.fold,
        "preset": preset,
        "task": task,
        "horizons": list(prepared.horizons),
        "feature_names": list(prepared.feature_names),
        "scaler_mean": prepared.scaler_mean.tolist(),
        "scaler_std": prepared.scaler_std.tolist(),
        "n_train": int(x_tr.shape[0]),
        "n_val": int(x_va.shape[0]),
        "data_window": prepared.data_window(),
        "data_meta": prepared.meta,
        "train_seconds": time.perf_counter() - start,
    }
    return LinearModel(name, config, fit, residuals, prepared.thresholds, info, scale=scale,
                       scaled_residuals=scaled)


def load_linear(directory: str) -> LinearModel:
    """Load a linear model saved with `LinearModel.save` (no pickle involved)."""
    path = os.path.join(directory, METADATA_FILE)
    name = read_metadata(directory).get("model")
    if name not in LINEAR_SPECS:
        raise ValueError(f"{path}: model {name!r} is not a linear model {sorted(LINEAR_SPECS)}")
    with artifact_errors(directory, name):
        return LinearModel.load(directory, LINEAR_SPECS[name].config_cls)


__all__ = ["LINEAR_SPECS", "LinearModel", "fit_linear", "load_linear", "resolve_linear"]
