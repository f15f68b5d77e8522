"""Linear models: OLS/HAC inference, validation-only alpha selection, class mapping, storage."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.special import ndtr

from data.prepared import PreparedSymbol
from models.linear import LINEAR_SPECS, fit_linear, load_linear, resolve_linear
from models.linear.lasso import LassoConfig
from models.linear.ridge import RidgeConfig
from models.metrics import leaderboard_rows
from models.spec import PRESETS

HORIZONS = (1, 5)


def make_prepared(n: int = 1000, n_feat: int = 6, signal: float = 0.4, seed: int = 0,
                  val_signal: bool = True) -> PreparedSymbol:
    """Returns linear in features 0 and 1 plus noise; the 5-bar target overlaps (MA(4)).

    Feature 0 is persistent (AR(1), phi 0.9) like a rolling indicator, so with the
    overlapping target its score x_t e_t is autocorrelated and HAC matters.
    """
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n + 4, n_feat))
    for t in range(1, n + 4):
        feats[t, 0] = 0.9 * feats[t - 1, 0] + np.sqrt(1 - 0.81) * feats[t, 0]
    feats = feats.astype(np.float32)
    eps = rng.standard_normal(n + 4)
    r1 = 0.01 * (signal * feats[:, 0] - 0.5 * signal * feats[:, 1] + eps)
    r5 = np.convolve(r1, np.ones(5), "valid")[:n]  # sum of the next 5 one-bar returns
    y = np.stack([r1[:n], r5], 1).astype(np.float32)
    feats = feats[:n]
    splits = {"train": np.arange(0, 600), "val": np.arange(610, 800), "test": np.arange(810, n)}
    if not val_signal:  # validation targets without any relation to the features
        y[splits["val"]] = rng.permutation(y[splits["val"]])
    tau = np.quantile(np.abs(y[splits["train"]]), 1 / 3, axis=0).astype(np.float32)
    y_cls = np.where(y > tau, 2, np.where(y < -tau, 0, 1)).astype(np.int64)
    return PreparedSymbol(
        "SYN", feats, tuple(f"f{i}" for i in range(n_feat)),
        np.arange(n).astype("datetime64[D]").astype("datetime64[ns]"), y, y_cls, HORIZONS, 1,
        splits, tau, np.zeros(n_feat, np.float32), np.ones(n_feat, np.float32),
    )  # fmt: skip


def test_specs_registered_and_presets_resolve():
    assert set(LINEAR_SPECS) == {"ols", "ridge", "lasso"}
    for name, spec in LINEAR_SPECS.items():
        assert spec.kind == "linear" and spec.input == "tabular" and spec.module_cls is None
        for preset in PRESETS:
            assert isinstance(resolve_linear(name, preset), spec.config_cls)
        for key in spec.search_space:  # every search key is a config field
            assert key in spec.config_cls.__dataclass_fields__


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="n_alphas"):
        RidgeConfig(n_alphas=0)
    with pytest.raises(ValueError, match="min_ratio"):
        LassoConfig(min_ratio=2.0)
    with pytest.raises(ValueError, match="predictive"):
        RidgeConfig(predictive="laplace")
    with pytest.raises(ValueError, match="alpha_typo"):
        resolve_linear("ridge", "fast", {"alpha_typo": 1.0})
    with pytest.raises(ValueError, match="known"):
        fit_linear("elastic", make_prepared())


def test_ols_matches_statsmodels_hac_directly():
    p = make_prepared()
    model = fit_linear("ols", p)
    x, _, y = p.split_arrays("train", sequence=False)
    design = sm.add_constant(x.astype(np.float64))
    for j, h in enumerate(HORIZONS):
        ref = sm.OLS(y[:, j].astype(np.float64), design).fit(
            cov_type="HAC", cov_kwds={"maxlags": h, "use_correction": True}
        )
        np.testing.assert_allclose(model.intercept[j], ref.params[0], rtol=1e-8)
        np.testing.assert_allclose(model.coef[j], ref.params[1:], rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(model.arrays["bse"][j], ref.bse, rtol=1e-8)
        np.testing.assert_allclose(model.arrays["pvalues"][j], ref.pvalues, rtol=1e-8)
        np.testing.assert_allclose(model.arrays["tvalues"][j], ref.tvalues, rtol=1e-8)
    # the overlapping 5-bar target: HAC must widen the plain OLS standard errors
    plain = sm.OLS(y[:, 1].astype(np.float64), design).fit()
    assert model.arrays["bse"][1][1] > 1.1 * plain.bse[1]
    # planted features are significant, the noise features mostly not
    assert model.arrays["pvalues"][0][1] < 1e-6 and model.arrays["pvalues"][0][2] < 1e-3


@pytest.mark.filterwarnings("ignore:The design matrix is rank-deficient")
def test_ols_matches_statsmodels_on_a_collinear_design():
    """A feature that is the difference of two others (as a MACD histogram is): the same
    minimum-norm coefficients and forecasts as statsmodels' pinv fit, and the same
    standard errors wherever they are defined."""
    from models.linear.ols import OLSConfig, fit_ols

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 3))
    x = np.column_stack([x, x[:, 0] - x[:, 1]])
    y = np.column_stack([0.5 * x[:, 0] + rng.normal(size=400), rng.normal(size=400)])
    fit = fit_ols(x, y, x[:0], y[:0], (1, 5), OLSConfig(hac_maxlags=3, hac_correction=False))
    design = sm.add_constant(x)
    for j in range(2):
        ref = sm.OLS(y[:, j], design).fit(cov_type="HAC", cov_kwds={"maxlags": 3})
        ours = np.r_[fit.intercept[j], fit.coef[j]]
        np.testing.assert_allclose(ours, ref.params, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(design @ ours, ref.fittedvalues, rtol=1e-7, atol=1e-10)
        identified = np.r_[True, False, False, True, False]  # const, x0, x1, x2, x0 - x1
        np.testing.assert_allclose(fit.arrays["bse"][j][identified], ref.bse[identified],
                                   rtol=1e-6)
        assert np.isnan(fit.arrays["pvalues"][j][~identified]).all()  # not identified
    assert fit.summary["condition_number"] > 1e12
    assert fit.summary["aliased"] == [0, 1, 3] and fit.summary["rank"] == 4


def test_ols_leaves_out_a_float32_identity():
    """Features are float32: an identity such as MACD histogram = line - signal holds only
    to ~1e-8, which the 1e-15 pinv cutoff fitted as real, giving coefficients in the
    hundreds that cancel and noise for p-values. The dependence is left out: the same
    forecasts as OLS without the redundant column, moderate coefficients, and NaN p-values
    for the three columns that are not identified."""
    from models.linear.ols import OLSConfig, fit_ols

    rng = np.random.default_rng(4)
    line = rng.normal(size=600).cumsum() / 20
    signal = np.convolve(line, np.ones(9) / 9, "same")
    x = np.column_stack([rng.normal(size=600), line, signal, line - signal]).astype(np.float32)
    x = (x - x.mean(0)) / x.std(0)  # scaled as the features are
    y = (0.3 * x[:, :1] + rng.normal(size=(600, 1))).astype(np.float64)
    fit = fit_ols(x, y, x[:0], y[:0], (1,), OLSConfig())
    assert fit.summary["aliased"] == [1, 2, 3] and fit.summary["rank"] == 4
    assert np.abs(fit.coef).max() < 5
    assert np.isnan(fit.arrays["pvalues"][0][2:]).all() and fit.arrays["pvalues"][0][1] < 1e-6
    reduced = fit_ols(x[:, :3], y, x[:0], y[:0], (1,), OLSConfig())
    assert reduced.summary["aliased"] == []
    np.testing.assert_allclose(x @ fit.coef[0] + fit.intercept[0],
                               x[:, :3] @ reduced.coef[0] + reduced.intercept[0], atol=1e-5)


@pytest.mark.parametrize("name", ["ridge", "lasso"])
def test_penalised_fits_match_scikit_learn_per_alpha(name):
    """The closed-form ridge path (one SVD) and the Gram-matrix lasso path give, for every
    grid alpha and horizon, the fit of scikit-learn's estimator at that alpha."""
    from sklearn.linear_model import Lasso, Ridge

    p = make_prepared(n_feat=12)
    model = fit_linear(name, p, preset="balanced")
    x, _, y = p.split_arrays("train", sequence=False)
    xv, _, yv = p.split_arrays("val", sequence=False)
    x, y, xv, yv = (a.astype(np.float64) for a in (x, y, xv, yv))
    alphas = np.asarray(model.summary["alphas"]).reshape(-1, model.config.n_alphas)
    for j in range(len(HORIZONS)):
        grid = alphas[0] if name == "ridge" else alphas[j]
        mse, checked = [], 0
        for alpha in grid:
            est = (Ridge(alpha=alpha) if name == "ridge"
                   else Lasso(alpha=alpha, tol=model.config.tol, max_iter=model.config.max_iter))
            est.fit(x, y[:, j])
            mse.append(float(((est.predict(xv) - yv[:, j]) ** 2).mean()))
            if alpha == model.summary["alpha"][j]:  # the chosen fit is the model's
                np.testing.assert_allclose(model.coef[j], est.coef_, rtol=1e-4, atol=1e-9)
                np.testing.assert_allclose(model.intercept[j], est.intercept_, atol=1e-9)
                checked += 1
        assert checked == 1
        np.testing.assert_allclose(model.summary["val_mse"][j], mse, rtol=1e-5)
        assert model.summary["alpha"][j] == grid[int(np.argmin(mse))]


@pytest.mark.parametrize("name", ["ridge", "lasso"])
def test_alpha_selection_never_touches_test(name):
    p = make_prepared()
    base = fit_linear(name, p)
    test = p.splits["test"]
    rng = np.random.default_rng(9)
    perturbed = make_prepared()
    perturbed.features[test] = rng.standard_normal(perturbed.features[test].shape) * 5
    perturbed.y_return[test] = rng.standard_normal(perturbed.y_return[test].shape)
    other = fit_linear(name, perturbed)
    assert other.summary["alpha"] == base.summary["alpha"]
    np.testing.assert_array_equal(other.coef, base.coef)
    assert other.summary["val_mse"] == base.summary["val_mse"]


@pytest.mark.parametrize("name", ["ridge", "lasso"])
def test_alpha_is_chosen_on_validation(name):
    signal = fit_linear(name, make_prepared(), preset="balanced")
    noise = fit_linear(name, make_prepared(val_signal=False), preset="balanced")
    scores = np.asarray(signal.summary["val_mse"])  # [H][A]
    assert scores.shape == (len(HORIZONS), signal.config.n_alphas)
    alphas = np.asarray(signal.summary["alphas"]).reshape(-1, scores.shape[1])[0]
    assert signal.summary["alpha"][0] == pytest.approx(alphas[np.argmin(scores[0])])
    # with signal-free validation targets the strongest shrinkage should win
    assert noise.summary["alpha"][0] > signal.summary["alpha"][0]
    assert np.abs(noise.coef[0]).sum() < 0.5 * np.abs(signal.coef[0]).sum()


@pytest.mark.parametrize("scale", ["conditional", "constant"])
def test_predict_proba_is_the_gaussian_band_mapping(scale):
    p = make_prepared()
    model = fit_linear("ridge", p, overrides={"scale": scale})
    x = p.X[p.splits["test"]]
    proba = model.predict_proba(x)
    assert proba.shape == (x.shape[0], 2, 3)
    np.testing.assert_allclose(proba.sum(-1), 1.0, rtol=1e-5)
    mu = model.predict_return(x).astype(np.float64)
    np.testing.assert_allclose(mu, x @ model.coef.T + model.intercept, rtol=1e-5, atol=1e-7)
    sigma = model.predictive_scale(x)[:, 1]
    if scale == "constant":
        np.testing.assert_allclose(sigma, model.resid_std[1])
    else:  # log s(x)^2 linear in x, within its training range
        log_s2 = x @ model.scale.coef[1] + model.scale.intercept[1]
        np.testing.assert_allclose(np.log(sigma**2), np.clip(log_s2, model.scale.low[1],
                                                             model.scale.high[1]), rtol=1e-9)
    expected_up = 1 - ndtr((p.thresholds[1] - mu[:, 1]) / sigma)
    np.testing.assert_allclose(proba[:, 1, 2], expected_up, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(model.predict(x), proba.argmax(-1))


def make_heteroscedastic(n: int = 2500, seed: int = 0) -> PreparedSymbol:
    """Returns with no predictable sign whose size follows feature 0 (a volatility-like
    input, persistent as rolling volatility is): r = exp(0.7 f0) * 0.01 * eps."""
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n, 4))
    for t in range(1, n):
        feats[t, 0] = 0.95 * feats[t - 1, 0] + np.sqrt(1 - 0.95**2) * feats[t, 0]
    r = np.exp(0.7 * feats[:, 0]) * 0.01 * rng.standard_normal(n)
    y = np.stack([r, r], 1).astype(np.float32)
    splits = {"train": np.arange(0, 1500), "val": np.arange(1510, 1900),
              "test": np.arange(1910, n)}
    tau = np.quantile(np.abs(y[splits["train"]]), 1 / 3, axis=0).astype(np.float32)
    y_cls = np.where(y > tau, 2, np.where(y < -tau, 0, 1)).astype(np.int64)
    return PreparedSymbol(
        "HET", feats.astype(np.float32), tuple(f"f{i}" for i in range(4)),
        np.arange(n).astype("datetime64[D]").astype("datetime64[ns]"), y, y_cls, HORIZONS, 1,
        splits, tau, np.zeros(4, np.float32), np.ones(4, np.float32),
    )  # fmt: skip


@pytest.mark.parametrize("predictive", ["gaussian", "empirical"])
def test_conditional_scale_predicts_flat_on_calm_bars(predictive):
    """Volatility that an input reveals: the conditional scale puts calm bars in the flat
    band and beats the majority baseline; the constant scale never predicts flat."""
    p = make_heteroscedastic()
    test = p.splits["test"]
    conditional = fit_linear("ridge", p, overrides={"predictive": predictive})
    constant = fit_linear("ridge", p, overrides={"predictive": predictive, "scale": "constant"})
    pred = conditional.predict(p.X[test])[:, 0]
    calm = p.X[test, 0] < np.quantile(p.X[p.splits["train"], 0], 0.25)
    assert (pred[calm] == 1).mean() > 0.9 and (pred[~calm] == 1).mean() < 0.7
    assert not (constant.predict(p.X[test])[:, 0] == 1).any()
    rows = leaderboard_rows("HET", "ridge", conditional, p, splits=("test",))
    assert rows[0]["p_value"] < 0.01 and rows[0]["accuracy"] > rows[0]["baseline_accuracy"]
    # the fitted log-variance slope on feature 0 is near the planted 2 x 0.7
    assert conditional.scale.coef[0, 0] == pytest.approx(1.4, abs=0.3)
    # the stored training residuals are in units of the scale the model predicts with
    x_tr = p.X[p.splits["train"]].astype(np.float64)
    resid = p.y_return[p.splits["train"]] - conditional.predict_return(x_tr)
    u = np.sort(resid / conditional.scale(x_tr), axis=0).T
    np.testing.assert_allclose(conditional.scaled_residuals, u, rtol=1e-5, atol=1e-6)


def test_empirical_predictive_probabilities_are_valid():
    p = make_prepared()
    model = fit_linear("ols", p, overrides={"predictive": "empirical"})
    proba = model.predict_proba(p.X[p.splits["test"]])
    assert np.all(proba >= 0) and np.allclose(proba.sum(-1), 1.0, atol=1e-6)
    # on the training inputs the empirical bands reproduce the training class shares
    proba_train = model.predict_proba(p.X[p.splits["train"]])
    train_share = np.bincount(p.y_class[p.splits["train"], 0], minlength=3) / 600
    proba_share = proba_train[:, 0].mean(0)
    np.testing.assert_allclose(proba_share, train_share, atol=0.08)


@pytest.mark.parametrize("name", ["ols", "ridge", "lasso"])
def test_learns_a_planted_linear_signal(name):
    p = make_prepared()
    rows = leaderboard_rows("SYN", name, fit_linear(name, p), p, splits=("test",))
    h1 = rows[0]
    assert h1["horizon"] == 1 and h1["p_value"] < 0.01
    assert h1["accuracy"] > h1["baseline_accuracy"] + 0.05 and h1["ic"] > 0.2


def test_params_are_each_horizons_own_regression():
    """A lasso that shrinks a horizon without signal to its intercept: that horizon's rows
    say 1 parameter, not the model's total over horizons (the README's count per row)."""
    p = make_prepared(seed=1)
    noise = np.random.default_rng(101).standard_normal(p.y_return.shape[0])
    p.y_return[:, 1] = (0.01 * noise).astype(np.float32)  # h=5: no relation to the inputs
    model = fit_linear("lasso", p)
    rows = leaderboard_rows("SYN", "lasso", model, p, splits=("val", "test"))
    by_h = {r["horizon"]: r["params"] for r in rows}
    assert by_h == {1: np.count_nonzero(model.coef[0]) + 1, 5: 1}
    assert by_h[1] > 1 and sum(by_h.values()) == model.n_params


@pytest.mark.parametrize("name", ["ols", "ridge", "lasso"])
def test_save_load_round_trip_without_pickle(name, tmp_path):
    p = make_prepared()
    model = fit_linear(name, p)
    model.save(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["arrays.npz", "metadata.json", "stats.json"]
    with np.load(tmp_path / "arrays.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(z["coef"], model.coef)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["kind"] == "linear" and meta["model"] == name and meta["horizons"] == [1, 5]
    assert meta["data_window"]["test"]["n"] == p.splits["test"].size
    # as the README says of both kinds: a readable copy of the class thresholds
    assert meta["thresholds"] == pytest.approx([float(t) for t in p.thresholds])
    loaded = load_linear(str(tmp_path))
    x = p.X[p.splits["test"]]
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    np.testing.assert_array_equal(loaded.predict_return(x), model.predict_return(x))
    assert loaded.config == model.config and loaded.summary == model.summary
    table = json.loads((tmp_path / "stats.json").read_text())
    assert set(table) == {"h1", "h5"} and set(table["h1"]) == {"const", *p.feature_names}
    if name == "ols":
        assert table["h1"]["f0"]["pvalues"] < 1e-6


def test_wrong_input_width_is_a_clear_error():
    model = fit_linear("ridge", make_prepared())
    with pytest.raises(ValueError, match=r"\(n, 6\)"):
        model.predict(np.zeros((3, 5), dtype=np.float32))


@pytest.mark.parametrize("name", ["ols", "ridge", "lasso"])
def test_single_horizon(name):
    p = make_prepared()
    one = PreparedSymbol(
        p.symbol, p.features, p.feature_names, p.timestamps, p.y_return[:, :1],
        p.y_class[:, :1], (1,), 1, p.splits, p.thresholds[:1], p.scaler_mean, p.scaler_std,
    )  # fmt: skip
    model = fit_linear(name, one)
    assert model.coef.shape == (1, 6)
    np.testing.assert_allclose(model.coef[0], fit_linear(name, p).coef[0], rtol=1e-6)
    assert model.predict(one.X[one.splits["test"]]).shape == (one.splits["test"].size, 1)
