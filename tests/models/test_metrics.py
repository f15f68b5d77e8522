"""Metrics against scikit-learn / scipy, degenerate inputs, and leaderboard rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from data.prepared import PreparedSymbol
from models.metrics import (
    LEADERBOARD_COLUMNS,
    average_ranks,
    binomial_p_greater,
    correlation_design_effect,
    design_effect,
    direction_metrics,
    effective_binomial_p,
    error_rows,
    hac_lags,
    ic_p_value,
    leaderboard_rows,
    majority_class,
    multiclass_mcc,
    return_metrics,
)


def test_leaderboard_columns_are_the_contract():
    assert LEADERBOARD_COLUMNS == [
        "symbol", "model", "horizon", "split", "fold", "accuracy", "macro_f1", "weighted_f1",
        "mcc", "kappa", "baseline_accuracy", "p_value", "r2", "rmse", "mae", "ic", "ic_p_value",
        "rank_ic", "directional_accuracy", "baseline_directional_accuracy",
        "directional_p_value", "train_seconds", "epochs", "best_epoch", "params", "error",
    ]  # fmt: skip


def test_baseline_is_the_evaluated_splits_best_constant_guess():
    # Training dominated by class 2; the evaluated split is mostly "flat" (a calm period).
    y_train = np.r_[np.full(70, 2), np.full(30, 0)]
    y_true = np.r_[np.full(60, 1), np.full(25, 2), np.full(15, 0)]
    always_flat = np.ones_like(y_true)
    m = direction_metrics(y_true, always_flat, y_train)
    assert majority_class(y_train) == 2
    assert m["baseline_accuracy"] == pytest.approx(0.60)  # not 0.25 (train's class 2)
    assert m["accuracy"] == pytest.approx(0.60) and m["p_value"] > 0.5  # no edge claimed


def test_direction_metrics_match_sklearn_and_scipy():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 500)
    y_pred = np.where(rng.random(500) < 0.4, y_true, rng.integers(0, 3, 500))
    y_train = np.r_[np.full(60, 2), np.full(40, 0)]
    m = direction_metrics(y_true, y_pred, y_train)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="weighted"))
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y_true, y_pred))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(y_true, y_pred))
    assert m["baseline_accuracy"] == pytest.approx(np.bincount(y_true).max() / y_true.size)
    k = int((y_true == y_pred).sum())  # independent hits here: the exact binomial test
    assert design_effect(y_true == y_pred, hac_lags(y_true.size, 1)) == 1.0
    expected_p = stats.binom.sf(k - 1, y_true.size, m["baseline_accuracy"])  # P(X >= k)
    assert m["p_value"] == pytest.approx(expected_p, rel=1e-9)
    assert m["p_value"] < 1e-6  # 60% accuracy vs a ~1/3 baseline over 500 samples


def test_macro_f1_keeps_a_class_that_is_absent():
    """Labels are fixed to {0, 1, 2}: a class missing from the truth (a split without
    "flat" labels), from the predictions, or from both scores F1 0 and still counts in
    the macro mean, as scikit-learn's f1_score(labels=[0, 1, 2], zero_division=0) does;
    dropping it would lift a two-class split's macro-F1 from 2/3 to 1."""
    rng = np.random.default_rng(8)
    y_two = rng.choice([0, 2], 300)
    guess = np.where(rng.random(300) < 0.7, y_two, rng.integers(0, 3, 300))
    cases = [
        (y_two, guess),  # "flat" absent from the truth only
        (y_two, np.where(guess == 1, 0, guess)),  # "flat" absent from both
        (rng.integers(0, 3, 300), rng.integers(0, 2, 300)),  # "up" never predicted
    ]
    for y_true, y_pred in cases:
        m = direction_metrics(y_true, y_pred)
        for avg in ("macro", "weighted"):
            ref = skm.f1_score(y_true, y_pred, average=avg, labels=[0, 1, 2], zero_division=0)
            assert m[f"{avg}_f1"] == pytest.approx(ref, rel=1e-12), avg
    perfect = direction_metrics(y_two, y_two)
    assert perfect["macro_f1"] == pytest.approx(2 / 3) and perfect["weighted_f1"] == 1.0


def _overlapping_labels_and_persistent_guesses(rng, n: int, h: int) -> tuple:
    """Up/down labels of overlapping h-bar random-walk returns, and an up/down guess that
    follows its own persistent AR(1) state, independent of the labels: no skill, but hits
    that come in runs, as a model's do when it tracks a slow state."""
    steps = rng.standard_normal(n + h)
    y = (np.convolve(steps, np.ones(h), "valid")[1:n + 1] > 0).astype(int) * 2  # 0 or 2
    state = np.zeros(n)
    noise = rng.standard_normal(n) * math.sqrt(1 - 0.98**2)
    for t in range(1, n):
        state[t] = 0.98 * state[t - 1] + noise[t]
    return y, (state > 0).astype(int) * 2


def test_p_value_allows_for_overlapping_labels():
    """On overlapping labels with no skill, the p-value is calibrated: at most the 1%
    false positives that 400 tests may show by chance (the binomial's 99.9% quantile),
    where the plain binomial test on n samples flags about 5% (it treats 250 overlapping
    20-bar labels as 250 independent ones)."""
    rng = np.random.default_rng(0)
    reps, n, h = 400, 250, 20
    plain, corrected = [], []
    for _ in range(reps):
        y, guess = _overlapping_labels_and_persistent_guesses(rng, n, h)
        m = direction_metrics(y, guess, horizon=h)
        corrected.append(m["p_value"])
        plain.append(binomial_p_greater(int((y == guess).sum()), n, m["baseline_accuracy"]))
    allowed = stats.binom.ppf(0.999, reps, 0.01) / reps
    assert np.mean(np.array(plain) < 0.01) > allowed  # the problem is real on this data
    assert np.mean(np.array(corrected) < 0.01) <= allowed


def test_p_value_counts_the_bars_an_h_bar_label_shares():
    """Hits in blocks of h (one overlapping h-bar label's worth of bars, each block a coin
    flip): with no skill the test stays near its 5% level (about 6% here). The rule of
    thumb alone (4 lags at n = 250) leaves out the h - 1 bars neighbouring labels share,
    makes the design effect ~4.5 instead of ~13 and flags ~19%."""
    rng = np.random.default_rng(0)
    h, n, reps = 20, 250, 400
    ps, deffs = [], []
    for _ in range(reps):
        hits = np.repeat(rng.random(n // h + 1) < 0.5, h)[:n]
        deffs.append(design_effect(hits, hac_lags(n, h)))
        ps.append(effective_binomial_p(hits, 0.5, horizon=h))
    assert hac_lags(n, h) >= h - 1
    assert np.median(deffs) > 10
    assert np.mean(np.array(ps) < 0.05) < 0.1


def test_design_effect_is_statsmodels_newey_west():
    """The design effect is the Bartlett-kernel (Newey-West) long-run variance of the hits
    over their plain variance: n * statsmodels' HAC variance of the mean (no small-sample
    correction) / the population variance, for several lags."""
    import statsmodels.api as sm

    rng = np.random.default_rng(1)
    hits = np.repeat(rng.random(60) < 0.6, 5)
    d = hits - hits.mean()
    n = hits.size
    for lags in (3, 7, 12):
        fit = sm.OLS(hits.astype(float), np.ones(n)).fit(
            cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": False})
        expected = fit.bse[0] ** 2 * n / (d @ d / n)
        assert design_effect(hits, lags) == pytest.approx(expected, rel=1e-9), lags


def test_effective_p_is_the_exact_binomial_for_independent_hits():
    hits = np.tile([True, False, True], 100)  # negatively autocorrelated: design effect 1
    assert design_effect(hits, hac_lags(hits.size, 5)) == 1.0
    expected = stats.binomtest(200, 300, 0.5, alternative="greater").pvalue
    assert effective_binomial_p(hits, 0.5, horizon=5) == pytest.approx(expected, rel=1e-9)
    runs = np.repeat(np.random.default_rng(3).random(30) < 2 / 3, 10)  # hits in runs of 10
    k = int(runs.sum())
    plain = stats.binomtest(k, runs.size, 0.5, alternative="greater").pvalue
    assert design_effect(runs, hac_lags(runs.size, 5)) > 3
    assert effective_binomial_p(runs, 0.5, horizon=5) > 10 * plain  # less evidence
    assert math.isnan(effective_binomial_p(np.array([], dtype=bool), 0.5))


def test_p_value_is_large_without_skill():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, 400)
    m = direction_metrics(y_true, rng.integers(0, 3, 400), y_true)
    assert m["p_value"] > 0.05


def test_majority_tie_takes_lower_label():
    assert majority_class(np.array([2, 2, 0, 0, 1])) == 0


def test_return_metrics_match_references():
    rng = np.random.default_rng(2)
    y = rng.normal(0.001, 0.02, 300)
    pred = 0.3 * y + rng.normal(0, 0.01, 300)
    train_mean = 0.004  # differs from the evaluated mean; r2 does not depend on it
    m = return_metrics(y, pred, train_mean)
    assert m["r2"] == pytest.approx(skm.r2_score(y, pred))  # against the test mean
    assert m["r2"] == pytest.approx(return_metrics(y, pred, -0.01)["r2"])
    assert m["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, pred)))
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    # the IC: the smaller of the test-mean-centred (Pearson) and training-mean-centred ones
    a, b = y - train_mean, pred - train_mean
    fixed = float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))
    assert fixed != pytest.approx(stats.pearsonr(y, pred)[0], rel=1e-3)
    assert m["ic"] == pytest.approx(min(fixed, stats.pearsonr(y, pred)[0]))
    assert m["rank_ic"] == pytest.approx(stats.spearmanr(y, pred)[0])
    assert m["directional_accuracy"] == pytest.approx(np.mean(np.sign(y) == np.sign(pred)))
    # an unchanged close (a realized return of exactly 0) is a hit only for a 0 forecast
    flat = return_metrics(np.array([0.01, 0.0, -0.02, 0.0]), np.array([0.5, 0.3, -0.1, 0.0]),
                          0.0)
    assert flat["directional_accuracy"] == 0.75


def test_directional_baseline_is_the_best_constant_sign_in_hindsight():
    """In a trending test period (70% up moves) a constant "up" forecast scores 0.7
    directional accuracy: that is the bar, and the test claims no edge for it; a forecast
    with real skill clears it."""
    rng = np.random.default_rng(5)
    y = np.abs(rng.normal(0, 0.01, 400)) * np.where(rng.random(400) < 0.7, 1, -1)
    always_up = return_metrics(y, np.full(400, 0.002), 0.0)
    expected = max(np.mean(np.sign(y) == s) for s in (-1, 0, 1))
    assert always_up["baseline_directional_accuracy"] == pytest.approx(expected)
    assert always_up["directional_accuracy"] == pytest.approx(expected)
    assert always_up["directional_p_value"] > 0.4
    for constant in (-0.002, 0.0):  # no constant forecast beats the baseline
        m = return_metrics(y, np.full(400, constant), 0.0)
        assert m["directional_accuracy"] <= m["baseline_directional_accuracy"]
    skilled = np.where(rng.random(400) < 0.9, y, -y)  # the right sign 90% of the time
    m = return_metrics(y, skilled, 0.0)
    assert m["directional_accuracy"] > 0.85 and m["directional_p_value"] < 1e-6
    # exact-0 returns (an unchanged close) are their own sign: mostly 0 -> a 0 forecast
    flat = return_metrics(np.array([0.0, 0.0, 0.0, 0.01]), np.array([0.1, 0.2, 0.0, 0.3]), 0.0)
    assert flat["baseline_directional_accuracy"] == 0.75 and flat["directional_accuracy"] == 0.5


def test_directional_p_value_has_its_size_on_random_walks():
    """Random-walk h-bar returns against a persistent forecast (a rolling mean of past
    returns, the shape of a momentum model): the test flags at most its level, as
    overlapping returns and runs of hits are allowed for (a plain binomial test flagged
    3.3% at the 1% level at h = 20)."""
    rng = np.random.default_rng(21)
    for h in (1, 5, 20):
        ps = []
        for _ in range(300):
            r = rng.normal(0.0003, 0.01, 520)
            future = np.convolve(r, np.ones(h), "valid")[1:]  # r[t+1..t+h]
            past = np.convolve(r, np.ones(20) / 20, "valid")  # mean of r[t-19..t]
            n = min(future.size - 19, 400)
            ps.append(return_metrics(future[19:19 + n], past[:n], 0.0,
                                     horizon=h)["directional_p_value"])
        ps = np.asarray(ps)
        assert np.isfinite(ps).all()
        assert np.mean(ps < 0.05) < 0.06 and np.mean(ps < 0.01) < 0.02, (h, ps.min())


def test_ic_p_value_is_the_pearson_t_test_on_independent_samples():
    """With independent samples (design effect 1) the IC test is scipy's one-sided
    Pearson test; a planted linear forecast is found, a constant one gives NaN."""
    rng = np.random.default_rng(11)
    y = rng.normal(0, 0.02, 400)
    pred = 0.1 * y + rng.normal(0, 0.02, 400)  # IC about 0.1
    p = ic_p_value(y, pred, horizon=1)
    deff = correlation_design_effect(y - y.mean(), pred - pred.mean(), 1)
    assert 1.0 <= deff < 1.2  # white noise: about n independent samples
    expected = stats.pearsonr(y, pred, alternative="greater").pvalue
    if deff == 1.0:
        assert p == pytest.approx(expected, rel=1e-6)
    else:  # the same t test on n / deff samples
        r = stats.pearsonr(y, pred)[0]
        n_eff = 400 / deff
        t = r * math.sqrt((n_eff - 2) / (1 - r * r))
        assert p == pytest.approx(stats.t.sf(t, n_eff - 2), rel=1e-6) and p >= expected
    assert p < 0.05
    assert return_metrics(y, pred, 0.0)["ic_p_value"] == ic_p_value(y, pred, 1, 0.0)
    assert ic_p_value(y, 0.5 * y + rng.normal(0, 0.005, 400)) < 1e-10
    assert ic_p_value(y, -y + rng.normal(0, 0.005, 400)) > 0.999  # skill the wrong way
    assert math.isnan(return_metrics(y, np.zeros(400), 0.0)["ic_p_value"])
    assert math.isnan(ic_p_value(y[:2], pred[:2]))


def _pearson_at(a: np.ndarray, b: np.ndarray, centre: float) -> float:
    a, b = a - centre, b - centre
    return float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))


def test_the_ic_is_flattered_neither_by_shared_bars_nor_by_a_drifting_mean():
    """Two no-skill forecasts. (1) A reversal forecast (minus the past 20-bar return) of
    20-bar returns on a random walk, over 225 test samples: centred on their own test
    means, forecast and outcome share bars, and the IC was biased upwards (+0.10 on
    average, 1.7% of tests at 1%). (2) Noise plus an offset, in a test period whose mean
    return is above the training mean: centred on the training mean, that one bet on the
    regime counted as n samples (IC +0.18, 68% of tests at 1%). The IC is the smaller of
    the two centrings, which neither flatters."""
    rng = np.random.default_rng(1)
    ics, ps = [], []
    for _ in range(300):
        y = rng.normal(0.004, 0.02, 250)
        m = return_metrics(y, 0.001 + rng.normal(0, 0.01, 250), 0.0, horizon=1)
        ics.append(m["ic"])
        ps.append(m["ic_p_value"])
    assert abs(np.mean(ics)) < 0.03 and np.mean(np.asarray(ps) < 0.01) <= 0.03
    ics, ps, demeaned = [], [], []
    for _ in range(300):
        c = np.r_[0.0, np.cumsum(rng.normal(0, 0.015, 545))]
        t = np.arange(250, 475)
        y, forecast = c[t + 20] - c[t], -(c[t] - c[t - 20])
        m = return_metrics(y, forecast, 0.0, horizon=20)
        ics.append(m["ic"])
        ps.append(m["ic_p_value"])
        demeaned.append(stats.pearsonr(y, forecast)[0])
    assert np.mean(demeaned) > 0.07  # the bias the test-mean centring had
    assert abs(np.mean(ics)) < 0.05 and np.mean(np.asarray(ps) < 0.01) <= 0.01


def test_correlation_design_effect_is_bartletts_formula():
    """1 + 2 sum_j (1 - j / n) acf_a(j) acf_b(j) over j = 1..max(n // 5, hac_lags), with
    statsmodels' autocorrelations, for a 20-bar overlapping return against an AR(1)
    forecast: dropping the (1 - j / n) taper or cutting the lags to the rule of thumb
    moves it by 7% and 45%."""
    from statsmodels.tsa.stattools import acf

    rng = np.random.default_rng(2)
    n = 300
    walk = np.cumsum(rng.normal(size=n + 20))
    a = walk[20:] - walk[:-20]
    b = np.zeros(n)
    for t in range(1, n):
        b[t] = 0.9 * b[t - 1] + rng.normal()
    for h in (1, 20):
        lags = max(n // 5, hac_lags(n, h))
        j = np.arange(1, lags + 1)
        rho = acf(a, nlags=lags, fft=True)[1:] * acf(b, nlags=lags, fft=True)[1:]
        expected = max(1.0, 1 + 2 * float(np.sum((1 - j / n) * rho)))
        got = correlation_design_effect(a - a.mean(), b - b.mean(), h)
        assert got == pytest.approx(expected, rel=1e-9), h
        assert got > 2  # both persistent: far fewer than n independent samples


def test_ic_p_value_holds_its_size_on_random_walks_with_overlap():
    """A random walk's h-bar returns against a persistent forecast that knows nothing
    (an AR(1) like a rolling feature): the plain t test would reject far too often at
    h = 20; the test on the effective sample size keeps near its level."""
    rng = np.random.default_rng(7)
    h, n, trials = 20, 250, 400
    ps, plain = [], []
    for _ in range(trials):
        steps = rng.normal(0, 0.01, n + h)
        logp = np.cumsum(steps)
        y = logp[h:] - logp[:-h]  # overlapping h-bar returns
        x = np.empty(n)
        x[0] = rng.normal()
        for t in range(1, n):
            x[t] = 0.95 * x[t - 1] + rng.normal(0, 0.3)
        ps.append(ic_p_value(y, x, horizon=h))
        plain.append(stats.pearsonr(y, x, alternative="greater").pvalue)
    assert np.mean(np.array(plain) < 0.05) > 0.2  # overlap + persistence: the naive test lies
    assert np.mean(np.array(ps) < 0.05) < 0.075


def test_binomial_p_and_ranks_match_scipy():
    rng = np.random.default_rng(5)
    for _ in range(300):
        n = int(rng.integers(1, 600))
        correct, base = int(rng.integers(0, n + 1)), float(rng.uniform(0.2, 0.999))
        expected = stats.binomtest(correct, n, base, alternative="greater").pvalue
        assert binomial_p_greater(correct, n, base) == pytest.approx(expected, rel=1e-9,
                                                                     abs=1e-300)
    assert binomial_p_greater(3, 3, 1.0) == 1.0  # one class only: no edge to claim
    for values in (rng.normal(size=200), rng.integers(0, 5, 200).astype(float),
                   np.r_[np.zeros(7), np.ones(3)], np.array([2.0]), np.array([])):
        assert np.array_equal(average_ranks(values), stats.rankdata(values))
    y = rng.normal(size=100)
    y[3] = np.nan  # a missing truth gives no rank IC, as scipy's propagating ranks do
    assert math.isnan(return_metrics(y, np.ones(100), 0.0)["rank_ic"])


def test_degenerate_inputs_do_not_crash():
    one = np.ones(50, dtype=np.int64)
    m = direction_metrics(one, one, one)  # one class everywhere, perfect and constant
    assert m["accuracy"] == 1.0 and m["baseline_accuracy"] == 1.0
    assert m["mcc"] == 0.0 and math.isnan(m["kappa"])
    assert m["p_value"] == pytest.approx(1.0)
    mixed = np.r_[np.zeros(25), np.full(25, 2)].astype(np.int64)
    m = direction_metrics(mixed, one, mixed)  # constant predictions of an absent class
    assert m["accuracy"] == 0.0 and m["mcc"] == 0.0 and m["kappa"] == pytest.approx(0.0)
    assert m["macro_f1"] == 0.0
    empty = np.array([], dtype=np.int64)
    assert all(math.isnan(v) for v in direction_metrics(empty, empty, one).values())
    r = return_metrics(np.linspace(-1, 1, 20), np.zeros(20), 0.0)  # constant forecast
    assert math.isnan(r["ic"]) and math.isnan(r["rank_ic"]) and r["r2"] == pytest.approx(0.0)
    r = return_metrics(np.zeros(20), np.linspace(-1, 1, 20), 0.0)  # constant truth
    assert math.isnan(r["r2"]) and math.isnan(r["ic"])
    # a constant that its mean does not reproduce exactly (0.1 * 7 / 7 != 0.1)
    r = return_metrics(np.full(7, 0.1), np.linspace(-1, 1, 7), 0.0)
    assert math.isnan(r["r2"])


def test_mcc_matches_sklearn_on_many_random_cases():
    rng = np.random.default_rng(3)
    for _ in range(20):
        a, b = rng.integers(0, 3, 60), rng.integers(0, 3, 60)
        assert multiclass_mcc(a, b) == pytest.approx(skm.matthews_corrcoef(a, b), abs=1e-12)


def test_bad_classes_and_shapes_raise():
    with pytest.raises(ValueError, match="outside"):
        direction_metrics(np.array([0, 3]), np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="shape"):
        return_metrics(np.zeros(3), np.zeros(4), 0.0)


def test_error_rows_have_every_column():
    rows = error_rows("AAPL", "lstm", (1, 5), RuntimeError("boom"), fold=2)
    assert [r["horizon"] for r in rows] == [1, 5]
    for r in rows:
        assert list(r) == LEADERBOARD_COLUMNS
        assert r["error"] == "RuntimeError: boom" and r["fold"] == 2 and r["accuracy"] is None


def _oracle_prepared(n: int = 300) -> PreparedSymbol:
    """Feature 0 carries the horizon-0 class and feature 1 the horizon-0 return."""
    rng = np.random.default_rng(4)
    y_ret = rng.normal(0, 0.01, (n, 2)).astype(np.float32)
    tau = np.full(2, 0.004, dtype=np.float32)
    y_cls = np.where(y_ret > tau, 2, np.where(y_ret < -tau, 0, 1)).astype(np.int64)
    feats = np.stack([y_cls[:, 0], y_ret[:, 0], rng.normal(size=n)], 1).astype(np.float32)
    splits = {"train": np.arange(0, 200), "val": np.arange(205, 250), "test": np.arange(255, n)}
    return PreparedSymbol(
        "ORCL", feats, ("c", "r", "z"), np.arange(n).astype("datetime64[ns]"), y_ret, y_cls,
        (1, 5), 1, splits, tau, np.zeros(3, np.float32), np.ones(3, np.float32), fold=1,
    )  # fmt: skip


class _Oracle:
    name = "oracle"
    input_kind = "tabular"
    history: list = []
    train_seconds = 1.5
    n_params = 7

    def predict(self, x):
        return np.repeat(x[:, :1].astype(np.int64), 2, axis=1)

    def predict_return(self, x):
        return np.repeat(x[:, 1:2], 2, axis=1)

    def predict_proba(self, x):
        return np.eye(3)[self.predict(x)]


def test_leaderboard_rows_score_the_right_samples():
    p = _oracle_prepared()
    rows = leaderboard_rows("ORCL", "oracle", _Oracle(), p, splits=("val", "test"))
    assert [(r["split"], r["horizon"]) for r in rows] == [
        ("val", 1), ("val", 5), ("test", 1), ("test", 5)
    ]
    for r in rows:
        assert list(r) == LEADERBOARD_COLUMNS
        assert r["fold"] == 1 and r["train_seconds"] == 1.5 and r["params"] == 7
        assert r["epochs"] is None and r["error"] is None
    h1 = [r for r in rows if r["horizon"] == 1]
    # misaligned split indices would break these exact values
    assert all(r["accuracy"] == 1.0 and r["ic"] == pytest.approx(1.0) for r in h1)
    assert all(r["rmse"] == pytest.approx(0.0, abs=1e-9) for r in h1)
    h5 = [r for r in rows if r["horizon"] == 5]
    assert all(r["accuracy"] < 0.8 for r in h5)




def _persistent_prepared(n: int = 600) -> PreparedSymbol:
    """Horizons (1, 40) on a random walk: overlapping 40-bar returns and labels; feature 0
    is a persistent AR(1) state plus the coming 40-bar return (a planted, noisy signal),
    feature 1 the coming 1-bar return."""
    rng = np.random.default_rng(12)
    steps = rng.normal(0, 0.01, n + 40)
    logp = np.cumsum(steps)
    y_ret = np.stack([logp[1:n + 1] - logp[:n], logp[40:n + 40] - logp[:n]], 1)
    state = np.zeros(n)
    for t in range(1, n):
        state[t] = 0.97 * state[t - 1] + rng.normal(0, 0.25)
    tau = np.quantile(np.abs(y_ret[:300]), 1 / 3, axis=0).astype(np.float32)
    y_cls = np.where(y_ret > tau, 2, np.where(y_ret < -tau, 0, 1)).astype(np.int64)
    feats = np.stack([state + 25 * y_ret[:, 1], y_ret[:, 0]], 1).astype(np.float32)
    splits = {"train": np.arange(0, 300), "val": np.arange(320, 440), "test": np.arange(460, n)}
    return PreparedSymbol(
        "PERS", feats, ("state", "peek"), np.arange(n).astype("datetime64[ns]"),
        y_ret.astype(np.float32), y_cls, (1, 40), 1, splits, tau, np.zeros(2, np.float32),
        np.ones(2, np.float32),
    )  # fmt: skip


class _StateFollower:
    """Up when feature 0 is positive, down otherwise, at every horizon; its return forecast
    is feature 0 scaled. Hits come in runs, as a real model's do."""

    name = "follower"
    input_kind = "tabular"
    history: list = []
    train_seconds = 0.5
    n_params = 2

    def predict(self, x):
        return np.repeat(np.where(x[:, :1] > 0, 2, 0).astype(np.int64), 2, axis=1)

    def predict_return(self, x):
        return np.repeat(0.002 * x[:, :1].astype(np.float64), 2, axis=1)

    def predict_proba(self, x):
        return np.eye(3)[self.predict(x)]


def test_leaderboard_rows_test_each_horizon_on_its_own_overlap():
    """Each row's p_value and ic_p_value allow for its own horizon's overlapping labels,
    and ic against the training mean: the same numbers as the metric functions called
    with that horizon and train mean, which differ here from the horizon-1 tests; r2 is
    measured against the test split's mean (the best constant), not the training one."""
    p = _persistent_prepared()
    rows = leaderboard_rows("PERS", "follower", _StateFollower(), p, splits=("val", "test"))
    assert [(r["split"], r["horizon"]) for r in rows] == [
        ("val", 1), ("val", 40), ("test", 1), ("test", 40)
    ]
    model = _StateFollower()
    train = p.splits["train"]
    for r in rows:
        idx = p.splits[r["split"]]
        j = p.horizons.index(r["horizon"])
        y_cls, y_ret = p.y_class[idx, j], p.y_return[idx, j].astype(np.float64)
        cls, ret = model.predict(p.X[idx])[:, j], model.predict_return(p.X[idx])[:, j]
        h = r["horizon"]
        expected = direction_metrics(y_cls, cls, horizon=h)
        assert r["p_value"] == pytest.approx(expected["p_value"], rel=1e-9)
        train_mean = float(np.mean(p.y_return[train, j]))
        centre = train_mean if r["ic"] == pytest.approx(
            _pearson_at(y_ret, ret, train_mean)) else None  # the smaller IC's centring
        assert r["ic_p_value"] == pytest.approx(ic_p_value(y_ret, ret, h, centre), rel=1e-9)
        sst = float(((y_ret - y_ret.mean()) ** 2).sum())  # around the best constant
        assert r["r2"] == pytest.approx(1 - float(((y_ret - ret) ** 2).sum()) / sst, rel=1e-6)
        if h == 40:  # the horizon matters on this data, so a row tested as h = 1 is caught
            assert r["p_value"] != pytest.approx(
                direction_metrics(y_cls, cls, horizon=1)["p_value"], rel=1e-3)
            assert r["ic_p_value"] != pytest.approx(ic_p_value(y_ret, ret, 1, centre),
                                                    rel=1e-3)
            sst_train_mean = float(((y_ret - train_mean) ** 2).sum())  # a drifting walk
            assert r["r2"] != pytest.approx(
                1 - float(((y_ret - ret) ** 2).sum()) / sst_train_mean, abs=0.01)


def test_r2_gives_no_constant_forecast_skill():
    """A forecast near a constant (a deep return model shrunk towards 0) scored well above
    0 against a training mean far from the test block's, on a random walk: the probe's
    walk-forward folds showed +0.5. Against the test split's mean no constant forecast,
    and no near-constant one without skill, scores above 0."""
    rng = np.random.default_rng(7)
    y = np.cumsum(rng.normal(0, 0.01, 400))  # a random walk's overlapping 20-bar returns
    y = (y[20:] - y[:-20])[:74]
    shrunk = 0.0005 + rng.normal(0, 0.0002, y.size)
    far_train_mean = y.mean() + 2 * y.std()
    old = 1 - ((y - shrunk) ** 2).sum() / ((y - far_train_mean) ** 2).sum()
    assert old > 0.5  # what the training-mean benchmark said
    for forecast in (shrunk, np.zeros_like(y), np.full_like(y, far_train_mean)):
        assert return_metrics(y, forecast, far_train_mean, horizon=20)["r2"] <= 1e-2
    assert return_metrics(y, np.full_like(y, y.mean()), 0.0)["r2"] == pytest.approx(0.0)
    skilled = y + rng.normal(0, y.std() / 2, y.size)  # a forecast with skill still scores
    assert return_metrics(y, skilled, far_train_mean, horizon=20)["r2"] > 0.5


def test_a_model_right_on_every_sample_gets_the_exact_binomial_p():
    """Every sample right: the hit series is constant, its design effect is 1 (the
    docstring: no variance to inflate), and the p-value is the plain binomial's,
    base ** n, not one on fewer effective samples."""
    y = np.tile([0, 1, 2, 1, 0], 6)  # 30 samples, baseline 12 / 30
    hits = np.ones(30, dtype=bool)
    assert design_effect(hits, hac_lags(30, 5)) == 1.0
    m = direction_metrics(y, y, y, horizon=5)
    assert m["accuracy"] == 1.0 and m["baseline_accuracy"] == pytest.approx(0.4)
    assert m["p_value"] == pytest.approx(0.4**30, rel=1e-9)
    assert effective_binomial_p(hits, 0.4, horizon=5) == binomial_p_greater(30, 30, 0.4)


def test_a_perfect_ic_has_p_value_zero():
    """ic = 1 (the forecast is the realized return, or a positive multiple of it) is
    defined, not among the module's undefined cases: t is infinite and p is 0, not NaN."""
    y = np.random.default_rng(4).normal(0, 0.02, 200)
    assert ic_p_value(y, y) == 0.0 and ic_p_value(y, 2 * y) == 0.0
    assert return_metrics(y, y, 0.0)["ic_p_value"] == 0.0


def test_an_exactly_opposite_forecast_has_p_value_one_and_does_not_raise():
    """ic = -1 (the forecast is the realized return negated) divided by zero in the t
    statistic, though degenerate inputs never raise: the test is one-sided (ic > 0), so
    p is 1."""
    y = np.array([0.01, -0.01, 0.01, -0.02, 0.03])
    assert ic_p_value(y, -y) == 1.0
    metrics = return_metrics(y, -y, 0.0)
    assert metrics["ic"] == pytest.approx(-1.0) and metrics["ic_p_value"] == 1.0
