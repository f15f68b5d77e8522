"""Ordinary least squares per horizon with HAC (Newey-West) standard errors.

Forward returns over h bars overlap from one sample to the next, so the regression errors
are autocorrelated (MA(h-1) under no predictability) and plain OLS standard errors are
too small. The HAC covariance (Bartlett kernel, statsmodels' `cov_type="HAC"`) with
`maxlags = h` by default covers that overlap. The coefficients themselves are plain OLS;
the covariance only changes the inference kept in the artifact (std errors, t, p).

Collinear features (e.g. a MACD histogram that equals MACD line minus signal) leave some
coefficients unidentified: statsmodels' pinv solution still forecasts fine, but their
standard errors are meaningless and can come out NaN (a numerically negative variance).
The design's condition number is kept in the summary so such a table can be recognised.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.linear.base import LinearConfig, LinearFit


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
    """
    import warnings

    import statsmodels.api as sm

    del x_val, y_val
    design = sm.add_constant(np.asarray(x_train, dtype=np.float64), has_constant="add")
    n_h = y_train.shape[1]
    params = np.empty((n_h, design.shape[1]))
    bse, tvalues, pvalues = np.empty_like(params), np.empty_like(params), np.empty_like(params)
    lags = []
    for j, h in enumerate(horizons):
        maxlags = int(h if config.hac_maxlags is None else config.hac_maxlags)
        res = sm.OLS(np.asarray(y_train[:, j], dtype=np.float64), design).fit(
            cov_type="HAC", cov_kwds={"maxlags": maxlags, "use_correction": config.hac_correction}
        )
        with warnings.catch_warnings():
            # sqrt of a negative variance (collinear design) -> NaN, kept as NaN on purpose
            warnings.simplefilter("ignore", RuntimeWarning)
            params[j], bse[j] = res.params, res.bse
            tvalues[j], pvalues[j] = res.tvalues, res.pvalues
        lags.append(maxlags)
    return LinearFit(
        coef=params[:, 1:],
        intercept=params[:, 0],
        arrays={"bse": bse, "tvalues": tvalues, "pvalues": pvalues},
        summary={
            "hac_maxlags": lags,
            "n_train": int(design.shape[0]),
            "condition_number": float(np.linalg.cond(design)),
            "undefined_se": int(np.isnan(bse).sum()),
        },
    )


OLS_PRESET = {"model": {}, "train": {}, "seq_len": 1}
OLS_PRESETS = {"fast": OLS_PRESET, "balanced": OLS_PRESET, "quality": OLS_PRESET}
# OLS has no setting that changes its forecasts (hac_maxlags changes inference only),
# so there is nothing to search.
OLS_SEARCH_SPACE: dict[str, dict] = {}
