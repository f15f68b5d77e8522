"""Ridge regression per horizon; the penalty is chosen on the validation split.

Grid: `n_alphas` log-spaced penalties from `alpha_max` down to `alpha_min`. The features
are standardised on the training split, so X'X ~ n I and the shrinkage factor of a
penalty alpha is about n / (n + alpha): the default grid spans almost none (alpha = 0.01)
to almost total (alpha = 1e5 against ~10^3 training samples). Each alpha is fitted on the
training split only; per horizon the alpha with the lowest validation MSE wins (ties ->
the stronger penalty). The test split is never seen. Chosen alphas and the whole
(n_alphas, H) validation-MSE grid are kept in the artifact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from models.linear.base import LinearConfig, LinearFit, log_grid

MAX_GRID = 1000  # alphas per grid: the fit holds (alphas, horizons, validation rows) floats


def check_grid(owner: str, low: float, high: float, n: int) -> None:
    """Validate a log grid's bounds and size, naming the fields to fix."""
    if not (low > 0 and high > 0 and math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{owner}: grid bounds must be positive and finite, got min={low}, "
                         f"max={high}")
    if low > high:
        raise ValueError(f"{owner}: grid min {low} exceeds max {high}; swap them")
    if not 1 <= n <= MAX_GRID:
        raise ValueError(f"{owner}.n_alphas={n}: use 1 to {MAX_GRID} grid points, e.g. 15")


@dataclass(frozen=True)
class RidgeConfig(LinearConfig):
    alpha_min: float = 1e-2
    alpha_max: float = 1e5
    n_alphas: int = 15

    def __post_init__(self) -> None:
        super().__post_init__()
        check_grid("RidgeConfig", self.alpha_min, self.alpha_max, self.n_alphas)


def select_on_validation(val_mse: np.ndarray) -> np.ndarray:
    """(A, H) validation MSE on a strongest-first grid -> (H,) chosen grid index.

    argmin returns the first minimum, i.e. the strongest penalty among ties.
    """
    return np.argmin(val_mse, axis=0)


def fit_ridge(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    horizons: tuple[int, ...],
    config: RidgeConfig,
) -> LinearFit:
    """Ridge on the training split for every alpha; per horizon keep the best on validation.

    Closed form from one thin SVD of the centred training inputs, Xc = U S V': for each
    alpha, w = V diag(s / (s^2 + alpha)) U' yc and b = mean(y) - mean(x) w, the same
    solution as scikit-learn's `Ridge(alpha, fit_intercept=True)` (its Cholesky solve of
    (Xc'Xc + alpha I) w = Xc'yc), for every alpha and horizon at the cost of one SVD."""
    del horizons
    alphas = log_grid(config.alpha_min, config.alpha_max, config.n_alphas)  # (A,) strongest first
    x_mean, y_mean = x_train.mean(axis=0), y_train.mean(axis=0)
    u, s, vt = np.linalg.svd(x_train - x_mean, full_matrices=False)
    uty = u.T @ (y_train - y_mean)  # (K, H)
    shrink = s / (s**2 + alphas[:, None])  # (A, K)
    coefs = np.einsum("kf,ak,kh->ahf", vt, shrink, uty)  # (A, H, F)
    intercepts = y_mean - coefs @ x_mean  # (A, H)
    pred = np.einsum("nf,ahf->ahn", x_val, coefs) + intercepts[..., None]  # (A, H, n_val)
    val_mse = ((pred - y_val.T) ** 2).mean(axis=-1)  # (A, H)
    best = select_on_validation(val_mse)  # (H,)
    cols = np.arange(y_train.shape[1])
    return LinearFit(
        coef=coefs[best, cols],
        intercept=intercepts[best, cols],
        arrays={"alphas": alphas, "val_mse": val_mse},
        summary={
            "alpha": [float(alphas[b]) for b in best],
            "alphas": alphas.tolist(),
            "val_mse": val_mse.T.tolist(),  # [H][A]
            "selected_on": "val",
        },
    )


RIDGE_PRESETS = {
    "fast": {"model": {"n_alphas": 8}, "train": {}, "seq_len": 1},
    "balanced": {"model": {"n_alphas": 15}, "train": {}, "seq_len": 1},
    "quality": {"model": {"n_alphas": 29, "alpha_min": 1e-3, "alpha_max": 1e6}, "train": {},
                "seq_len": 1},
}  # fmt: skip
RIDGE_SEARCH_SPACE = {
    "alpha_max": {"type": "loguniform", "low": 1e3, "high": 1e6},
    "n_alphas": {"type": "randint", "low": 8, "high": 40},
}
