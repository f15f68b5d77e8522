"""Ordinary least squares per horizon with HAC (Newey-West) standard errors.

Forward returns over h bars overlap from one sample to the next, so the regression errors
are autocorrelated (MA(h-1) under no predictability) and plain OLS standard errors are
too small. The HAC covariance (Bartlett kernel: statsmodels' `cov_type="HAC"`, computed
here directly) with `maxlags = h` by default covers that overlap. The coefficients
themselves are plain OLS; the covariance only changes the inference kept in the artifact
(std errors, t, p).

Collinear features (a MACD histogram equals the MACD line minus its signal) leave some
coefficients unidentified. Features are float32, so such an identity holds only to ~1e-8
relative, and the design's smallest singular value is ~1e-8 of its largest where an exact
identity gives ~1e-16: a direction below `RANK_RCOND` of the largest is treated as an exact
dependence and left out (the minimum-norm solution; the forecasts barely change), where
the 1e-15 cutoff of statsmodels' pinv fitted it and returned coefficients of +-800 (1e5 on
real data) that cancel each other, with noise for standard errors. The coefficients that
load on a dropped direction (`aliased`, feature column indices in the summary) are not
identified: their std errors, t and p are NaN. The design's condition number and rank are
kept in the summary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from models.linear.base import LinearConfig, LinearFit

# Singular values below this share of the largest are exact dependences (see the docstring).
RANK_RCOND = 1e-6
# A coefficient whose column puts more than this share of its unit weight on the dropped
# directions is not identified.
ALIAS_LOADING = 1e-3


@dataclass(frozen=True)
class OLSConfig(LinearConfig):
    hac_maxlags: int | None = None  # None: the horizon h of each regression
    hac_correction: bool = True  # small-sample correction of the HAC covariance

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hac_maxlags is not None and (
            isinstance(self.hac_maxlags, bool) or int(self.hac_maxlags) < 0
        ):
            raise ValueError(
                f"OLSConfig.hac_maxlags={self.hac_maxlags!r}: use None (= horizon) or an"
                " integer >= 0"
            )


def fit_ols(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    horizons: tuple[int, ...],
    config: OLSConfig,
) -> LinearFit:
    """OLS of y_train[:, j] (n,) on [1, x_train] (n, 1 + F) for each horizon j.

    The validation split is not used: OLS has nothing to select.

    statsmodels' `OLS(y, add_constant(x)).fit(cov_type="HAC", cov_kwds={"maxlags": L,
    "use_correction": c})`, computed directly (tested equal to it): one SVD of the design
    serves every horizon (the pinv solution and its bread (X'X)^+), the meat is the
    Bartlett-weighted autocovariances of the scores x_t e_t up to lag L, and p-values are
    two-sided normal, as statsmodels' robust covariances use. statsmodels is not imported:
    it costs a second per process, paid again by every Ray worker of a sweep.
    """
    del x_val, y_val
    x = np.asarray(x_train, dtype=np.float64)
    design = np.column_stack([np.ones(x.shape[0]), x])
    n, k = design.shape
    u, sv, vt = np.linalg.svd(design, full_matrices=False)
    keep = sv > RANK_RCOND * sv.max()
    # Columns in a dropped direction (their squared loadings on it, of 1 in all)
    aliased = np.flatnonzero(np.sum(vt[~keep] ** 2, axis=0) > ALIAS_LOADING)
    inv_sv = np.divide(1.0, sv, out=np.zeros_like(sv), where=keep)
    pinv = (vt.T * inv_sv) @ u.T  # (k, n)
    bread = (vt.T * inv_sv**2) @ vt  # (X'X)^+ = pinv @ pinv.T
    y = np.asarray(y_train, dtype=np.float64)
    params = (pinv @ y).T  # (H, k)
    resid = y - design @ params.T  # (n, H)
    bse = np.empty_like(params)
    lags = []
    for j, h in enumerate(horizons):
        maxlags = int(h if config.hac_maxlags is None else config.hac_maxlags)
        scores = design * resid[:, j : j + 1]
        meat = scores.T @ scores
        for lag in range(1, min(maxlags, n - 1) + 1):
            auto = scores[lag:].T @ scores[:-lag]
            meat += (1.0 - lag / (maxlags + 1.0)) * (auto + auto.T)
        cov = bread @ meat @ bread
        if config.hac_correction:
            cov *= n / float(n - k)
        with np.errstate(invalid="ignore"):
            # sqrt of a negative variance (collinear design) -> NaN, kept as NaN on purpose
            bse[j] = np.sqrt(np.diag(cov))
        bse[j, aliased] = np.nan  # not identified: no standard error
        lags.append(maxlags)
    tvalues = params / bse
    pvalues = 2.0 * ndtr(-np.abs(tvalues))
    return LinearFit(
        coef=params[:, 1:],
        intercept=params[:, 0],
        arrays={"bse": bse, "tvalues": tvalues, "pvalues": pvalues},
        summary={
            "hac_maxlags": lags,
            "n_train": int(n),
            "condition_number": float(sv.max() / sv.min()) if sv.min() > 0 else float("inf"),
            "rank": int(keep.sum()),
            "aliased": [int(i) - 1 for i in aliased if i > 0],  # feature columns
            "undefined_se": int(np.isnan(bse).sum()),
        },
    )


OLS_PRESET = {"model": {}, "train": {}, "seq_len": 1}
OLS_PRESETS = {"fast": OLS_PRESET, "balanced": OLS_PRESET, "quality": OLS_PRESET}
# OLS has no setting that changes its forecasts (hac_maxlags changes inference only),
# so there is nothing to search.
OLS_SEARCH_SPACE: dict[str, dict] = {}
