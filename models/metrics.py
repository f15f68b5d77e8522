"""Evaluation metrics for one horizon of one split, and the leaderboard row schema.

Direction metrics (classes 0 down / 1 flat / 2 up)
- accuracy, macro_f1, weighted_f1 (labels fixed to {0, 1, 2}, so a class absent from
  both truth and prediction scores 0 instead of being dropped), mcc (multiclass
  Matthews), kappa (Cohen).
- baseline_accuracy: the share of the most frequent class IN THE EVALUATED SPLIT, i.e.
  the accuracy of the best constant prediction in hindsight. Every model must beat every
  constant guess. (The training split's majority class is a weaker bar: when the class
  mix shifts between train and test — a calmer test period makes "flat" common — a model
  that only tracks volatility beats it without any directional skill, and it would differ
  between models trained on different windows, e.g. a train+val refit.)
- p_value: one-sided binomial test of H0 "accuracy <= baseline_accuracy", on an effective
  sample size: P(X >= accuracy * n_eff) for X ~ Binomial(n_eff, baseline_accuracy), with
  n_eff = n / design effect. The design effect is the Newey-West long-run variance of the
  per-sample correct (0/1) series, in time order, over its plain variance (Bartlett kernel,
  lag h - 1 + floor(4 (n / 100)^(2/9)): the h - 1 bars that neighbouring labels share plus
  the Newey-West (1994) rule of thumb), and at least 1. Consecutive h-bar labels overlap,
  and a model's hits come in runs (a persistent state, a calm spell), so n samples carry
  less evidence than n independent ones: the plain binomial flagged 2.5% of random-walk
  tests at h = 20 at the 1% level. With independent hits it is the exact binomial test
  (n_eff = n). Against the best constant guess in hindsight the test is conservative: a
  model with no skill scores below that bar in expectation, so on random walks most
  p-values are large. The acceptance tests (tests/models/test_learning.py) pool symbols
  with the same variance.

Return metrics (only for models that predict returns)
- r2: 1 - SSE(prediction) / SSE(best constant forecast in hindsight), the constant being
  the evaluated split's mean return: skill over every constant forecast, as
  baseline_accuracy is for the classes. Zero, the training mean or any drift scores at
  most 0; it can be negative. (Against the training-mean forecast alone, the out-of-sample
  R^2 of Campbell & Thompson 2008, a forecast shrunk towards 0 looked skilled on random
  walks: the mean of overlapping h-bar returns over a few hundred training bars lies far
  from a short test block's, so a near-zero forecast beat it; deep return models at h = 20
  on walk-forward folds of a random walk scored +0.05 to +0.11 on average, up to +0.6 on a
  fold, where a constant 0 scored +0.62.)
- rmse, mae; ic and rank_ic (Spearman) between prediction and realized return;
  directional_accuracy = share of samples with sign(prediction) == sign(realized).
- ic is the smaller of two Pearson correlations (`oos_ic`): both series centred on their
  own test means, and both centred on the TRAINING split's mean return (the naive forecast
  a model could make from its training data). Each alone is flattered without skill: the
  first when a forecast built from recent returns and the h-bar returns that follow share
  bars (their test means co-move: a reversal forecast on a random walk averaged +0.10 at h
  = 20 over 225 test samples, +0.2 with a 60-bar lookback, its test rejecting at 1% in
  1.7-7.7% of cases); the second when a forecast with an offset meets a test period whose
  mean drifts from the training one (one bet on the regime counted as n samples: +0.18,
  "significant" at 1% in 68% of draws). The smaller is flattered by neither (about +0.02
  and 1% in both cases). rank_ic stays the plain Spearman correlation: descriptive, with
  the first bias on short splits; ic_p_value tests ic.
- ic_p_value: the significance test beside the return scores (`p_value` tests the class
  accuracy, not the forecast): one-sided test of H0 "IC <= 0", a Student t on the
  effective sample size n / design effect, the design effect being that of a correlation
  between two autocorrelated series (`correlation_design_effect`): overlapping h-bar
  returns and a persistent forecast (rolling features) carry fewer independent samples
  than n. On a random walk it is rarely small; a model with no skill
  can still show an IC or a directional_accuracy well away from 0 / 0.5 on a short test
  split.
- baseline_directional_accuracy: the share of the most common sign (-, 0, +) of the
  realized returns IN THE EVALUATED SPLIT, the directional_accuracy of the best constant
  forecast in hindsight (as baseline_accuracy is for the classes): in a trending test
  period a constant forecast of the trend's sign beats 0.5, so 0.5 is no bar.
- directional_p_value: the test of directional_accuracy against that baseline, as p_value
  tests accuracy: one-sided binomial on the effective sample size of the sign hits.

Degenerate inputs never raise. A metric that is mathematically undefined on the data is
NaN: ic/rank_ic when either side is constant, r2 when the realized returns are
constant, kappa when truth and prediction are one and the same class,
p_value on an empty split, ic_p_value when ic is NaN or the effective sample size is
at most 2. mcc follows scikit-learn's convention and is 0.0 when its
denominator vanishes (constant predictions carry no information). A metric that does not
apply to the model (return metrics of a pure classifier) is None.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import bdtrc, betainc, stdtr

LABELS = (0, 1, 2)

LEADERBOARD_COLUMNS = [
    "symbol", "model", "horizon", "split", "fold",
    "accuracy", "macro_f1", "weighted_f1", "mcc", "kappa", "baseline_accuracy", "p_value",
    "r2", "rmse", "mae", "ic", "ic_p_value", "rank_ic", "directional_accuracy",
    "baseline_directional_accuracy", "directional_p_value",
    "train_seconds", "epochs", "best_epoch", "params", "error",
]  # fmt: skip

DIRECTION_METRICS = (
    "accuracy", "macro_f1", "weighted_f1", "mcc", "kappa", "baseline_accuracy", "p_value",
)  # fmt: skip
RETURN_METRICS = (
    "r2", "rmse", "mae", "ic", "ic_p_value", "rank_ic", "directional_accuracy",
    "baseline_directional_accuracy", "directional_p_value",
)  # fmt: skip


def majority_class(y_train: np.ndarray) -> int:
    """Most frequent class of a (n,) training label vector (ties -> lower label)."""
    counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=len(LABELS))
    return int(np.argmax(counts))


def multiclass_mcc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Matthews correlation for K classes (Gorodkin 2004); 0.0 when undefined."""
    k = len(LABELS)
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k).astype(np.float64)
    n = cm.sum()
    correct = np.trace(cm)
    t = cm.sum(axis=1)  # true counts per class
    p = cm.sum(axis=0)  # predicted counts per class
    cov = correct * n - t @ p
    denom = math.sqrt(n * n - p @ p) * math.sqrt(n * n - t @ t)
    return float(cov / denom) if denom > 0 else 0.0


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """(3, 3) counts: rows = true class, columns = predicted class."""
    k = len(LABELS)
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k).astype(np.float64)


def _f1_per_class(cm: np.ndarray) -> np.ndarray:
    """F1 of each class; 0 where precision + recall is 0 (scikit-learn's zero_division=0)."""
    tp = np.diag(cm)
    t, p = cm.sum(axis=1), cm.sum(axis=0)
    denom = t + p  # F1 = 2 tp / (t + p)
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def direction_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, y_train: np.ndarray | None = None, *,
    horizon: int = 1,
) -> dict:
    """Direction metrics of one horizon, from the confusion matrix (vectorized: a sweep
    scores thousands of unit x horizon x split combinations). `y_train` is accepted for
    callers that have it; the baseline is the evaluated split's majority share. The samples
    must be in time order and `horizon` is their labels' horizon in bars: the p-value
    allows for overlapping labels (see the module docstring)."""
    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    n = y_true.size
    if n == 0:
        return dict.fromkeys(DIRECTION_METRICS, math.nan)
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if arr.min() < 0 or arr.max() > 2:
            raise ValueError(f"{name} holds classes outside {{0, 1, 2}}: {np.unique(arr)}")
    cm = confusion(y_true, y_pred)
    correct = int(np.trace(cm))
    true_counts = cm.sum(axis=1)
    base = float(true_counts.max() / n)
    f1 = _f1_per_class(cm)
    return {
        "accuracy": correct / n,
        "macro_f1": float(f1.mean()),
        "weighted_f1": float(f1 @ true_counts / n),
        "mcc": multiclass_mcc(y_true, y_pred),
        "kappa": _kappa(cm),
        "baseline_accuracy": base,
        "p_value": effective_binomial_p(y_true == y_pred, base, horizon),
    }


def _kappa(cm: np.ndarray) -> float:
    """Cohen's kappa; NaN when chance agreement is 1 (truth and prediction one class)."""
    n = cm.sum()
    po = np.trace(cm) / n
    pe = float(cm.sum(axis=1) @ cm.sum(axis=0)) / (n * n)
    return math.nan if pe >= 1.0 else float((po - pe) / (1.0 - pe))


def binomial_p_greater(correct: int, n: int, base: float) -> float:
    """One-sided binomial test: P(X >= correct) for X ~ Binomial(n, base), what
    `scipy.stats.binomtest(correct, n, base, alternative="greater")` returns, through the
    `bdtrc` ufunc (scipy.stats costs ~1 s to import and ~0.2 ms a call; a sweep makes
    thousands of calls, and the job's driver only needs this module's column list)."""
    if base >= 1.0 or correct <= 0:
        return 1.0
    return float(bdtrc(correct - 1, n, base))


def hac_lags(n: int, horizon: int) -> int:
    """Bartlett lag for a series of n samples of h-bar labels: the h - 1 bars neighbouring
    labels share plus the Newey-West (1994) rule of thumb."""
    return max(int(horizon), 1) - 1 + int(4 * (n / 100) ** (2 / 9))


def design_effect(hits: np.ndarray, lags: int) -> float:
    """Newey-West long-run variance (Bartlett kernel) of a (n,) series over its plain
    variance, at least 1: how many samples count as one independent sample. 1 for a
    constant series (no variance to inflate)."""
    d = np.asarray(hits, dtype=np.float64)
    d = d - d.mean()
    n = d.size
    var = float(d @ d)
    if n < 2 or var <= 0:
        return 1.0
    total = var
    for j in range(1, min(lags, n - 1) + 1):
        total += 2 * (1 - j / (lags + 1)) * float(d[j:] @ d[:-j])
    return max(1.0, total / var)


def effective_binomial_p(hits: np.ndarray, base: float, horizon: int = 1) -> float:
    """One-sided binomial p-value of H0 "hit rate <= base" for a (n,) time-ordered 0/1
    series of hits, on its effective sample size n / design_effect (see the module
    docstring). With a design effect of 1 it equals `binomial_p_greater`."""
    hits = np.asarray(hits, dtype=bool).ravel()
    n = hits.size
    correct = int(hits.sum())
    if n == 0:
        return math.nan
    deff = design_effect(hits, hac_lags(n, horizon))
    if deff == 1.0:
        return binomial_p_greater(correct, n, base)
    if base >= 1.0 or correct <= 0:
        return 1.0
    n_eff = n / deff
    k_eff = correct / deff  # the same accuracy on n_eff samples
    # P(X >= k) = I_base(k, n - k + 1), the regularized incomplete beta function, which
    # extends the binomial tail to non-integer counts (bdtrc floors them).
    return float(betainc(k_eff, n_eff - k_eff + 1.0, base))


def average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (`scipy.stats.rankdata`'s default
    method), for the Spearman rank IC."""
    a = np.asarray(a).ravel()
    order = np.argsort(a, kind="mergesort")
    ordered = a[order]
    new_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(new_group)  # 1..k, per sorted position
    bounds = np.r_[np.flatnonzero(new_group), a.size]  # group g spans bounds[g-1]:bounds[g]
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = 0.5 * (bounds[group] + bounds[group - 1] + 1)
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray, centre: float | None = None) -> float:
    """Pearson correlation; with `centre`, both series are centred on that fixed value
    instead of their own means (the out-of-sample IC: `return_metrics`). NaN when either
    side is constant."""
    if centre is not None and (np.ptp(a) == 0 or np.ptp(b) == 0):
        return math.nan
    a = a - (a.mean() if centre is None else centre)
    b = b - (b.mean() if centre is None else centre)
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denom if denom > 0 else math.nan


def _acf(d: np.ndarray, lags: int) -> np.ndarray:
    """Sample autocorrelations 1..lags of a demeaned (n,) series (through the FFT)."""
    n = d.size
    spec = np.fft.rfft(d, 2 * n)
    acov = np.fft.irfft(spec * np.conj(spec), 2 * n)[: lags + 1]
    return acov[1:] / acov[0]


def correlation_design_effect(a: np.ndarray, b: np.ndarray, horizon: int = 1) -> float:
    """How many of n samples count as one for the correlation of two demeaned (n,) series,
    at least 1: 1 + 2 sum_j (1 - j / n) acf_a(j) acf_b(j), j = 1..max(n // 5, h - 1 +
    the rule of thumb), the variance of a sample correlation between two autocorrelated
    series that are unrelated (Bartlett 1935; Pyper & Peterman 1998). A kernel estimate on
    the products (`design_effect`) is too small when both series are persistent, as an
    h-bar return and a rolling-feature forecast are: it let 10% of random-walk tests at
    h = 20 through at the 5% level."""
    n = a.size
    if n < 3 or not (a @ a > 0 and b @ b > 0):
        return 1.0
    lags = min(n - 1, max(n // 5, hac_lags(n, horizon)))
    j = np.arange(1, lags + 1)
    total = 1.0 + 2.0 * float(((1 - j / n) * _acf(a, lags) * _acf(b, lags)).sum())
    return max(1.0, total)


def ic_p_value(y_true: np.ndarray, y_pred: np.ndarray, horizon: int = 1,
               centre: float | None = None) -> float:
    """One-sided p-value of H0 "IC <= 0" for time-ordered (n,) realized and predicted
    returns of one horizon: P(T >= t), T ~ Student t with n_eff - 2 degrees of freedom,
    t = ic sqrt((n_eff - 2) / (1 - ic^2)), n_eff = n / the design effect of a correlation
    for two autocorrelated series (`correlation_design_effect`). NaN when undefined. With
    `centre` the IC is the one centred on that value (`_pearson`); the design effect is
    always that of the demeaned series (it measures their persistence)."""
    a = np.asarray(y_true, dtype=np.float64).ravel()
    b = np.asarray(y_pred, dtype=np.float64).ravel()
    return _ic_test(a, b, _pearson(a, b, centre) if a.size >= 3 else math.nan, horizon)


def oos_ic(y_true: np.ndarray, y_pred: np.ndarray, train_mean: float) -> float:
    """The smaller of two ICs of (n,) realized and predicted returns: centred on their own
    test means, and centred on the training mean. Each is flattered without skill in its
    own way: the first when the forecast is made of recent returns (forecast and outcome
    share bars, so their test means co-move: +0.10 on average for a reversal forecast on a
    random walk at h = 20), the second when the forecast has an offset and the test
    period's mean drifts from the training one (one bet on the regime, counted as n
    samples: +0.18, "significant" at 1% in 68% of draws). The smaller is flattered by
    neither. NaN when either side is constant."""
    own, fixed = _pearson(y_true, y_pred), _pearson(y_true, y_pred, train_mean)
    return min(own, fixed) if math.isfinite(own) and math.isfinite(fixed) else math.nan


def _ic_test(a: np.ndarray, b: np.ndarray, ic: float, horizon: int) -> float:
    """`ic_p_value` for a given ic of the float64 series a, b."""
    if a.size < 3 or not math.isfinite(ic):
        return math.nan
    ic = min(max(ic, -1.0), 1.0)
    n_eff = a.size / correlation_design_effect(a - a.mean(), b - b.mean(), horizon)
    if n_eff <= 2:
        return math.nan
    if ic >= 1.0:
        return 0.0
    if ic <= -1.0:  # one-sided (ic > 0): a forecast exactly opposite has no edge at all
        return 1.0
    t = ic * math.sqrt((n_eff - 2) / (1.0 - ic * ic))
    return float(stdtr(n_eff - 2, -t))


def return_metrics(y_true: np.ndarray, y_pred: np.ndarray, train_mean: float, *,
                   horizon: int = 1) -> dict:
    """Return metrics of one horizon; `train_mean` is the training split's mean return.
    The samples must be in time order and `horizon` is their labels' horizon in bars:
    ic_p_value allows for overlapping labels."""
    y_true = np.asarray(y_true, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    if y_true.size == 0:
        return dict.fromkeys(RETURN_METRICS, math.nan)
    if not np.all(np.isfinite(y_pred)):
        raise ValueError("predicted returns contain NaN or inf; check the model's inputs")
    err = y_true - y_pred
    ic = oos_ic(y_true, y_pred, train_mean)
    sse = float(err @ err)
    # around the best constant; a constant truth has none (its mean's rounding left a
    # tiny positive sum, and r2 came out near -1e30, which sank every mean of r2)
    sst = 0.0 if np.ptp(y_true) == 0 else float(((y_true - y_true.mean()) ** 2).sum())
    return {
        "r2": 1.0 - sse / sst if sst > 0 else math.nan,
        "rmse": math.sqrt(sse / y_true.size),
        "mae": float(np.abs(err).mean()),
        "ic": ic,
        "ic_p_value": _ic_test(y_true, y_pred, ic, horizon)
        if np.isfinite(y_true).all() else math.nan,
        "rank_ic": _pearson(average_ranks(y_true), average_ranks(y_pred))
        if np.isfinite(y_true).all() else math.nan,
        **_directional(y_true, y_pred, horizon),
    }


def _directional(y_true: np.ndarray, y_pred: np.ndarray, horizon: int) -> dict[str, float]:
    """directional_accuracy, its baseline (the most common realized sign's share) and its
    p-value, for non-empty (n,) realized (NaN allowed) and predicted returns."""
    truth = np.sign(y_true)
    hits = np.sign(y_pred) == truth  # a NaN return is never hit
    finite = truth[np.isfinite(truth)]
    base = max(float(np.mean(finite == s)) for s in (-1.0, 0.0, 1.0)) if finite.size else math.nan
    return {
        "directional_accuracy": float(np.mean(hits)),
        "baseline_directional_accuracy": base,
        "directional_p_value": effective_binomial_p(hits, base, horizon)
        if finite.size == truth.size else math.nan,
    }


def empty_row(symbol: str, model: str, horizon: int, split: str, fold: int) -> dict[str, Any]:
    """A leaderboard row with every metric None."""
    row: dict[str, Any] = dict.fromkeys(LEADERBOARD_COLUMNS)
    row.update(symbol=symbol, model=model, horizon=int(horizon), split=split, fold=int(fold))
    return row


def error_rows(
    symbol: str,
    model: str,
    horizons: tuple[int, ...] | list[int],
    error: BaseException | str,
    *,
    split: str = "test",
    fold: int = 0,
) -> list[dict[str, Any]]:
    """Rows for a unit that failed: one per horizon, metrics None, `error` = the message."""
    if isinstance(error, BaseException):
        message = f"{type(error).__name__}: {error}"
    else:
        message = str(error)
    rows = []
    for h in horizons:
        row = empty_row(symbol, model, h, split, fold)
        row["error"] = message
        rows.append(row)
    return rows


def leaderboard_rows(
    symbol: str,
    model_name: str,
    fitted: Any,
    prepared: Any,
    splits: tuple[str, ...] = ("val", "test"),
) -> list[dict[str, Any]]:
    """One row per horizon x split for a fitted model; see `models.leaderboard`."""
    from models.leaderboard import fitted_rows

    return fitted_rows(symbol, model_name, fitted, prepared, splits)
