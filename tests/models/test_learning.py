"""Acceptance: every registered model learns a planted signal and finds none in a random walk.

Data: `data.synthetic` generators through the real pipeline (`data.prepare`), one split for
every model and generator: N_DAYS bars per symbol, 37.5% train (~2,980 samples), 5% val
(~390, early stopping) and 57.5% test (~4,580). The long test tail costs one forward pass
and gives the tests their power; ~3,000 training samples let the models learn the 5-bar
signal (with ~1,000, the best deep model reached only ~75% of the Bayes edge at h = 5).
Models through `models.api.fit` with the `fast` preset plus small overrides (narrow nets,
a high learning rate with early stopping, batches of 256: ~3x faster than 64 on a CPU at
the same accuracy; a 3-bar window: the planted drift depends on the last bar only, and
windows of 10 or 20 bars did not help).

Statistics, pooled over symbols (each symbol is trained and tested on its own):
- accuracy = correct / n over all symbols' test samples; baseline = the same pooling of
  each symbol's baseline_accuracy (`models.metrics`: the test split's majority share);
  edge = accuracy - baseline.
- p-value: a one-sided Diebold-Mariano style z-test of H0 "edge <= 0" on the per-sample
  series d_t = correct_t - baseline (each symbol's test samples in time order). For h > 1
  neighbouring labels share h - 1 bars, and the planted state (the volume z-score)
  persists, so d_t is autocorrelated: the variance of its mean sums each symbol's
  Newey-West long-run variance (Bartlett kernel, lag h - 1 + floor(4 (n / 100)^(2/9)):
  the label overlap plus the Newey-West (1994) rule of thumb; symbols are independent).
  The baseline is held fixed: given the test labels, predictions that carry no
  information about them score at most the best constant guess in expectation.
  Calibration: `test_edge_test_is_calibrated_on_overlapping_labels` (a no-skill predictor
  on overlapping labels) and the random walk below. On the planted data, circular shifts
  of the fitted deep models' test predictions against the labels (no information, both
  series' autocorrelation kept) gave z-scores with variance 1.04 (h = 1) and 1.01 (h = 5)
  and 1.04% / 0.94% of them above the one-sided 1% critical value (an iid variance:
  1.18 / 1.53 and 1.42% / 2.93%). The former test, a binomial on n / h samples (a design
  effect of h), is valid but had no power at h = 5; the measured design effect is ~1.6.
- Bayes edge: the Bayes classifier (argmax of the generator's true class probabilities,
  `planted_oracle_proba`, with each symbol's prepared thresholds) scored on the SAME test
  samples and labels, minus the same baseline.
- A horizon is required when its Bayes edge (generator info) is at least 10 points AND
  the test has power for it: half that edge must be detectable at ALPHA with 90% power,
  given the standard error of the Bayes classifier's edge on the deep models' test
  samples. Otherwise the test reports the numbers and skips.
- Random walk: per (model, symbol, horizon) tests at ALPHA. Independent tests would give
  at most Binomial(m, ALPHA) false positives; we allow its 99.9% quantile plus 1 (the
  tests share test sets across models, so they are positively correlated), per model and
  over all models.
A permuted-target fit is NOT a valid negative control on the planted data: it is a random
function of the features, which predict the labels there, and can have a real edge by
luck (one had an expected accuracy of 0.385 against an expected baseline of 0.340 under
the generator's true probabilities); the random walk is the control for fitted models.
`pytest -rP tests/models/test_learning.py` prints the per-horizon results tables.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy.stats import binom, norm

from data.prepare import PrepareConfig, prepare_frame
from data.synthetic import (
    planted_bars,
    planted_lob,
    planted_lob_oracle_proba,
    planted_oracle_proba,
    random_walk_bars,
    random_walk_lob,
)
from models.api import evaluate, fit
from models.leaderboard import model_inputs
from models.metrics import direction_metrics
from models.registry import REGISTRY

# `make test-learning` runs only these.
pytestmark = pytest.mark.learning

HORIZONS = (1, 5)
SEQ_LEN = 3
N_DAYS = 8000
CONFIG = PrepareConfig(horizons=HORIZONS, seq_len=SEQ_LEN, train=0.375, val=0.05, test=0.575)
# Linear fits take milliseconds, and the linear projection of the planted drift is weak
# (h = 5 test edges of ~2 points), so linear models are scored on more symbols to give the
# same p < ALPHA criterion enough power; deep models on the first N_DEEP_SYMBOLS.
N_DEEP_SYMBOLS, N_LINEAR_SYMBOLS = 4, 24
N_RANDOM_WALK_SYMBOLS = 3
ALPHA = 0.01
EDGE_SHARE = 0.8  # the best deep model reaches at least 80% of the Bayes edge
QUALIFYING_EDGE = 0.10  # horizons with a Bayes edge of 10+ points must be learned
POWER = 0.9

TRAIN = {"train.epochs": 25, "train.patience": 6, "train.batch_size": 256, "train.lr": 1e-2}
OVERRIDES: dict[str, dict] = {  # narrower than the fast preset, same architectures
    "mlp": {"hidden_size": 32},
    "lstm": {"hidden_size": 16},
    "gru": {"hidden_size": 16},
    "cnn": {"channels": 16},
    "tcn": {"channels": 16, "num_levels": 2},
    "deeplob": {"conv_channels": 8, "inception_channels": 8, "hidden_size": 16},
    "seq2seq": {"hidden_size": 16, "attention_size": 8},
    # mean pooling over time dilutes a last-bar signal; the zoo offers "last"
    "transformer": {"d_model": 16, "n_heads": 2, "ff_dim": 32, "pooling": "last"},
    "temporal_attention": {"channels": 8, "d_model": 16},
    "cnn_gru": {"conv_channels": 8, "hidden_size": 16},
    "cnn_bilstm": {"conv_channels": 8, "hidden_size": 16},
}
MODELS = list(REGISTRY)
DEEP = [m for m in MODELS if REGISTRY[m].kind == "deep"]

Series = list[tuple[np.ndarray, float]]  # per symbol: (correct (n,) in time order, baseline)


def _overrides(name: str, seq_len: int = SEQ_LEN) -> dict | None:
    if REGISTRY[name].kind == "linear":
        return None
    return {**OVERRIDES.get(name, {}), **TRAIN, "seq_len": seq_len}


# ---- the test statistic -------------------------------------------------------------------
def hac_lags(n: int, horizon: int) -> int:
    """Bartlett lag: the h - 1 shared bars plus the Newey-West (1994) rule of thumb."""
    return horizon - 1 + int(4 * (n / 100) ** (2 / 9))


def long_run_variance(d: np.ndarray, lags: int) -> float:
    """Newey-West long-run variance (Bartlett kernel) of a (n,) series."""
    d = np.asarray(d, dtype=np.float64) - np.mean(d)
    n = d.size
    total = d @ d / n
    for j in range(1, min(lags, n - 1) + 1):
        total += 2 * (1 - j / (lags + 1)) * (d[j:] @ d[:-j]) / n
    return float(total)


def edge_test(series: Series, horizon: int) -> dict[str, float]:
    """Pooled accuracy, baseline, edge and the one-sided HAC p-value of H0 "edge <= 0"."""
    n = sum(c.size for c, _ in series)
    accuracy = sum(float(np.sum(c)) for c, _ in series) / n
    base = sum(b * c.size for c, b in series) / n
    var = sum(c.size * long_run_variance(c, hac_lags(c.size, horizon)) for c, _ in series)
    se = math.sqrt(var) / n
    edge = accuracy - base
    p = float(norm.sf(edge / se)) if se > 0 else float(edge <= 0)
    return {"accuracy": accuracy, "baseline": base, "edge": edge, "n": n, "se": se, "p": p}


# ---- data and fits ------------------------------------------------------------------------
def _scored(p, horizon: int, pred: np.ndarray) -> tuple[np.ndarray, float]:
    """(correct (n_test,) in time order, baseline_accuracy as in models.metrics)."""
    test = p.splits["test"]
    assert np.all(np.diff(test) > 0)
    y = p.y_class[test, p.horizons.index(horizon)]
    return pred == y, direction_metrics(y, pred)["baseline_accuracy"]


@functools.cache
def planted() -> tuple[dict, dict, dict]:
    """(prepared by symbol, generator info, {h: the Bayes classifier's pooled test stats
    on the deep models' symbols})."""
    df, info = planted_bars(n_symbols=N_LINEAR_SYMBOLS, n_days=N_DAYS, seed=0,
                            horizons=HORIZONS, n_paths=64, bayes_stride=8)
    result = prepare_frame(df, CONFIG)
    assert not result.dropped, result.dropped
    prepared = result.prepared
    deep = dict(list(prepared.items())[:N_DEEP_SYMBOLS])
    # the oracle with the prepared (train-split) thresholds: the labels the models see
    taus = {s: f[0].thresholds.tolist() for s, f in deep.items()}
    oracle = planted_oracle_proba(df[df["symbol"].isin(list(deep))],
                                  {**info, "thresholds": taus}, rows_stride=1)
    series: dict[int, Series] = {h: [] for h in HORIZONS}
    for symbol, (p,) in deep.items():
        dates = df.loc[df["symbol"] == symbol, "date"].to_numpy()
        row_of, probs = oracle[symbol]
        pos = np.searchsorted(dates[row_of], p.sample_times[p.splits["test"]])
        bayes_pred = probs[pos].argmax(-1)  # (n_test, H)
        assert np.array_equal(dates[row_of][pos], p.sample_times[p.splits["test"]])
        for j, h in enumerate(HORIZONS):
            series[h].append(_scored(p, h, bayes_pred[:, j]))
    return prepared, info, {h: edge_test(series[h], h) for h in HORIZONS}


def _test_series(name: str, prepared_by_symbol: dict) -> dict[int, Series]:
    """Fit `name` on each symbol; {h: per-symbol (correct, baseline)} on the test split."""
    out: dict[int, Series] = {h: [] for h in HORIZONS}
    for (p,) in prepared_by_symbol.values():
        model = fit(name, p, overrides=_overrides(name))
        pred = np.asarray(model.predict(model_inputs(model, p, "test")))
        rows = evaluate(model, p, splits=("test",), model_name=name)
        for j, (h, row) in enumerate(zip(HORIZONS, rows, strict=True)):
            correct, base = _scored(p, h, pred[:, j])
            assert row["horizon"] == h and row["accuracy"] == pytest.approx(correct.mean())
            assert row["baseline_accuracy"] == pytest.approx(base)
            out[h].append((correct, base))
    return out


def _symbols_of(name: str, prepared: dict) -> dict:
    return prepared if REGISTRY[name].kind == "linear" else dict(
        list(prepared.items())[:N_DEEP_SYMBOLS])


@functools.cache
def planted_results(name: str) -> dict[int, dict[str, float]]:
    prepared, _, _ = planted()
    series = _test_series(name, _symbols_of(name, prepared))
    return {h: edge_test(series[h], h) for h in HORIZONS}


def required(horizon: int) -> tuple[bool, str]:
    """Whether `horizon` must be learned: big enough Bayes edge and enough test power."""
    _, info, bayes = planted()
    edge = info["bayes_accuracy"][horizon] - info["baseline_accuracy"][horizon]
    if edge < QUALIFYING_EDGE:
        return False, f"h={horizon}: Bayes edge {edge:.3f} < {QUALIFYING_EDGE}"
    detectable = (norm.ppf(1 - ALPHA) + norm.ppf(POWER)) * bayes[horizon]["se"]
    if edge / 2 < detectable:
        return False, (
            f"h={horizon}: Bayes edge {edge:.3f} but the test (standard error"
            f" {bayes[horizon]['se']:.4f}) only detects edges >= {detectable:.3f} (half the"
            " Bayes edge needs more test data)"
        )
    return True, ""


# ---- tests --------------------------------------------------------------------------------
def test_generator_gives_a_learnable_horizon():
    assert required(1) == (True, "")


def test_edge_test_is_calibrated_on_overlapping_labels():
    """A predictor without skill on overlapping h-bar labels: iid N(0, 1) returns, labels
    from the next h bars with the flat band at the 1/3 quantile of |h-bar return| (each
    class has probability exactly 1/3), predictions from the PREVIOUS h bars (persistent,
    independent of the label). Scored against the exact chance level 1/3, its z-scores
    have unit variance and fall below ALPHA no more often than the random-walk bound
    allows (measured: 3 and 4 of 300). With an iid variance instead (the overlap ignored)
    the z-scores at h = 5 have variance ~1.8 (16 of 300 below ALPHA)."""
    rng = np.random.default_rng(0)
    reps, n = 300, 4500
    for h in HORIZONS:
        tau = math.sqrt(h) * norm.ppf(2 / 3)
        r = rng.standard_normal((reps, n + 2 * h))
        csum = np.concatenate([np.zeros((reps, 1)), np.cumsum(r, axis=1)], axis=1)
        window = csum[:, h:] - csum[:, :-h]  # (reps, n + h + 1): sum of r[t : t + h]
        cls = np.where(window > tau, 2, np.where(window < -tau, 0, 1))
        correct = cls[:, :n] == cls[:, h : n + h]  # bars [t, t + h) predict [t + h, t + 2h)
        stats = [edge_test([(c, 1 / 3)], h) for c in correct]
        z = np.array([s["edge"] / s["se"] for s in stats])
        assert 0.8 < z.var() < 1.25, (h, z.var())
        hits = sum(s["p"] < ALPHA for s in stats)
        assert hits <= false_positive_bound(reps), (h, hits)
        if h > 1:  # the test of the test: ignoring the overlap is visibly miscalibrated
            iid = (correct.mean(1) - 1 / 3) / np.sqrt(correct.var(1) / n)
            assert iid.var() > 1.5, iid.var()


@pytest.mark.parametrize("horizon", HORIZONS)
@pytest.mark.parametrize("name", MODELS)
def test_every_model_beats_the_baseline_on_planted_signal(name, horizon):
    needed, why = required(horizon)
    if not needed:
        pytest.skip(why)
    r = planted_results(name)[horizon]
    assert r["p"] < ALPHA, (
        f"{name} h={horizon}: accuracy {r['accuracy']:.3f} vs baseline {r['baseline']:.3f}"
        f" (edge {r['edge']:.3f}, se {r['se']:.4f}), p={r['p']:.3g}"
    )


def results_table(horizon: int) -> str:
    """Every model's pooled test stats at `horizon`, and the Bayes classifier's."""
    _, info, bayes = planted()
    lines = [f"h={horizon}: generator Bayes edge"
             f" {info['bayes_accuracy'][horizon] - info['baseline_accuracy'][horizon]:.3f}",
             f"{'model':20s} {'n':>6s} {'accuracy':>8s} {'baseline':>8s} {'edge':>7s}"
             f" {'se':>7s} {'edge/Bayes':>10s} {'p':>9s}"]
    for name, r in [*((m, planted_results(m)[horizon]) for m in MODELS),
                    ("Bayes (deep symbols)", bayes[horizon])]:
        lines.append(f"{name:20s} {r['n']:6d} {r['accuracy']:8.3f} {r['baseline']:8.3f}"
                     f" {r['edge']:+7.3f} {r['se']:7.4f}"
                     f" {r['edge'] / bayes[horizon]['edge']:10.2f} {r['p']:9.2g}")
    return "\n".join(lines)


@pytest.mark.parametrize("horizon", HORIZONS)
def test_best_deep_model_reaches_most_of_the_bayes_edge(horizon):
    needed, why = required(horizon)
    if not needed:
        pytest.skip(why)
    _, _, bayes = planted()
    print(results_table(horizon))
    edges = {name: planted_results(name)[horizon]["edge"] for name in DEEP}
    best = max(edges, key=edges.get)
    assert edges[best] >= EDGE_SHARE * bayes[horizon]["edge"], (
        f"h={horizon}: best deep model {best} edge {edges[best]:.3f} < {EDGE_SHARE} x Bayes"
        f" edge {bayes[horizon]['edge']:.3f} on the same test samples; all: "
        + ", ".join(f"{k}={v:.3f}" for k, v in sorted(edges.items()))
    )


def false_positive_bound(m: int) -> int:
    """99.9% quantile of Binomial(m, ALPHA) plus one of slack."""
    return int(binom.ppf(0.999, m, ALPHA)) + 1


def test_no_model_finds_signal_in_a_random_walk():
    df, info = random_walk_bars(n_symbols=N_RANDOM_WALK_SYMBOLS, n_days=N_DAYS, seed=1,
                                horizons=HORIZONS)
    assert info["bayes_accuracy"] == info["baseline_accuracy"]
    prepared = prepare_frame(df, CONFIG).prepared
    assert len(prepared) == N_RANDOM_WALK_SYMBOLS
    hits: dict[str, list[tuple[str, int, float]]] = {}
    per_model = false_positive_bound(N_RANDOM_WALK_SYMBOLS * len(HORIZONS))
    for name in MODELS:
        hits[name] = []
        series = _test_series(name, prepared)
        for h in HORIZONS:
            for symbol, one in zip(prepared, series[h], strict=True):
                p = edge_test([one], h)["p"]
                if p < ALPHA:
                    hits[name].append((symbol, h, round(p, 5)))
        assert len(hits[name]) <= per_model, (name, hits[name])
    total = sum(len(v) for v in hits.values())
    assert total <= false_positive_bound(N_RANDOM_WALK_SYMBOLS * len(HORIZONS) * len(MODELS))


def test_linear_models_find_no_signal_in_a_random_walk_book():
    """Order books whose levels sit a tick apart around a random-walk mid: the linear
    models' return forecasts show no test IC on average, at any horizon. With the levels'
    distances in basis points (tick / mid: the price level), OLS's mean test IC over these
    20 symbols was 0.12 at h = 10 and 0.31 at h = 50 (standard errors 0.03 and 0.07), and
    15-20% of its IC tests were "significant" at 1%."""
    horizons = (1, 10, 50)
    df = random_walk_lob(n_symbols=20, n_snapshots=2000, levels=3, seed=4)
    prepared = prepare_frame(df, PrepareConfig(kind="lob", horizons=horizons, seq_len=10)
                             ).prepared
    assert len(prepared) == 20
    for name in ("ols", "ridge"):
        ics: dict[int, list[float]] = {h: [] for h in horizons}
        for (p,) in prepared.values():
            for row in evaluate(fit(name, p), p, splits=("test",)):
                ics[row["horizon"]].append(row["ic"])
        means = {h: float(np.mean(v)) for h, v in ics.items()}
        assert all(m < 0.06 for m in means.values()), (name, means)


def test_deeplob_learns_the_lob_signal():
    df, info = planted_lob(n_symbols=1, n_snapshots=4000, levels=5, seed=0)
    prepared = prepare_frame(df, PrepareConfig(kind="lob", horizons=(1,), seq_len=10)).prepared
    ((symbol, (p,)),) = prepared.items()
    model = fit("deeplob", p, overrides=_overrides("deeplob", seq_len=10))
    (row,) = evaluate(model, p, splits=("test",))
    assert row["p_value"] < ALPHA, row  # h = 1: no label overlap
    # the Bayes classifier on the same test samples, with the prepared thresholds
    row_of, probs = planted_lob_oracle_proba(df, {**info, "thresholds": {
        symbol: p.thresholds.tolist()}})[symbol]
    times = df["ts"].to_numpy()[row_of]
    pos = np.searchsorted(times, p.sample_times[p.splits["test"]])
    bayes = _scored(p, 1, probs[pos, 0].argmax(-1))
    bayes_edge = bayes[0].mean() - bayes[1]
    assert bayes[1] == pytest.approx(row["baseline_accuracy"])
    assert row["accuracy"] - row["baseline_accuracy"] >= 0.5 * bayes_edge, (row, bayes_edge)
