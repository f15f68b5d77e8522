"""Lasso regression per horizon; the penalty is chosen on the validation split.

scikit-learn's Lasso minimises (1/2n)||y - b - Xw||^2 + alpha ||w||_1, whose scale follows
the returns' scale, so the grid is relative (as in glmnet): per horizon,
alpha_max = max_k |x_k' (y - mean y)| / n is the smallest penalty that zeroes every
coefficient, and the grid runs log-spaced from alpha_max down to `min_ratio * alpha_max`.
Each alpha is fitted on the training split only (warm-started from the previous, stronger
one); the lowest validation MSE wins (ties -> the stronger penalty). A model that keeps
no coefficient forecasts the training mean: the honest answer when there is no signal.
Coordinate descent that stops at `max_iter` is recorded per horizon and alpha in the
artifact (`converged`), not hidden.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from models.linear.base import LinearConfig, LinearFit
from models.linear.ridge import check_grid, select_on_validation

MAX_ITER = 100_000  # coordinate-descent sweeps per alpha


@dataclass(frozen=True)
class LassoConfig(LinearConfig):
    min_ratio: float = 1e-3  # smallest alpha as a fraction of alpha_max
    n_alphas: int = 13
    max_iter: int = 5000
    tol: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.min_ratio <= 1:
            raise ValueError(f"LassoConfig.min_ratio={self.min_ratio}: use a value in (0, 1]")
        check_grid("LassoConfig", self.min_ratio, 1.0, self.n_alphas)
        if not 1 <= self.max_iter <= MAX_ITER:
            raise ValueError(f"LassoConfig.max_iter={self.max_iter}: use 1 to {MAX_ITER}, e.g. "
                             "5000")
        if not self.tol > 0:
            raise ValueError(f"LassoConfig.tol={self.tol}: use a small positive value, e.g. 1e-4")


def fit_lasso(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    horizons: tuple[int, ...],
    config: LassoConfig,
) -> LinearFit:
    """Lasso path on the training split per horizon; keep the alpha best on validation.

    scikit-learn's `lasso_path` on the centred training inputs with their Gram matrix
    computed once: coordinate descent warm-started down the grid, the same objective and
    dual-gap stopping rule as `Lasso(alpha, fit_intercept=True)` per alpha, without
    re-validating the inputs for each of the grid's fits. The intercept is
    mean(y) - mean(x) w."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import lasso_path

    del horizons
    n, n_f = x_train.shape
    n_h = y_train.shape[1]
    ratios = np.geomspace(1.0, config.min_ratio, config.n_alphas)  # (A,) strongest first
    x_mean, y_mean = x_train.mean(axis=0), y_train.mean(axis=0)
    xc = np.asfortranarray(x_train - x_mean)
    gram = xc.T @ xc
    alphas = np.empty((ratios.size, n_h))
    coefs = np.zeros((ratios.size, n_h, n_f))
    intercepts = np.empty((ratios.size, n_h))
    val_mse = np.empty((ratios.size, n_h))
    converged = np.ones((ratios.size, n_h), dtype=bool)
    for j in range(n_h):
        yc = y_train[:, j] - y_mean[j]
        xy = xc.T @ yc
        alphas[:, j] = max(float(np.abs(xy).max()) / n, 1e-300) * ratios
        with warnings.catch_warnings():
            # recorded in `converged` below instead of printed
            warnings.simplefilter("ignore", ConvergenceWarning)
            _, path, _, n_iter = lasso_path(
                xc, yc, alphas=alphas[:, j], precompute=gram, Xy=xy,
                max_iter=config.max_iter, tol=config.tol, return_n_iter=True,
            )  # fmt: skip
        coefs[:, j] = path.T  # (A, F)
        converged[:, j] = np.asarray(n_iter) < config.max_iter
        intercepts[:, j] = y_mean[j] - coefs[:, j] @ x_mean
        pred = x_val @ coefs[:, j].T + intercepts[:, j]  # (n_val, A)
        val_mse[:, j] = ((pred - y_val[:, j : j + 1]) ** 2).mean(axis=0)
    best = select_on_validation(val_mse)  # (H,)
    cols = np.arange(n_h)
    return LinearFit(
        coef=coefs[best, cols],
        intercept=intercepts[best, cols],
        arrays={"alphas": alphas, "val_mse": val_mse, "converged": converged},
        summary={
            "alpha": [float(alphas[b, j]) for j, b in enumerate(best)],
            "alphas": alphas.T.tolist(),  # [H][A]
            "val_mse": val_mse.T.tolist(),  # [H][A]
            "n_nonzero": [int(np.count_nonzero(coefs[b, j])) for j, b in enumerate(best)],
            "converged": bool(converged[best, cols].all()),
            "selected_on": "val",
        },
    )


LASSO_PRESETS = {
    "fast": {"model": {"n_alphas": 8}, "train": {}, "seq_len": 1},
    "balanced": {"model": {"n_alphas": 13}, "train": {}, "seq_len": 1},
    "quality": {"model": {"n_alphas": 25, "min_ratio": 1e-4, "max_iter": 20000}, "train": {},
                "seq_len": 1},
}  # fmt: skip
LASSO_SEARCH_SPACE = {
    "min_ratio": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
    "n_alphas": {"type": "randint", "low": 8, "high": 30},
}
