"""Acceptance: every registered model learns a planted signal and finds none in a random walk.

Data: `data.synthetic` generators through the real pipeline (`data.prepare`); models
through `models.api.fit` with the `fast` preset plus small overrides (narrow nets, a high
learning rate with early stopping, a 3-bar window: the planted drift depends on the last
bar only, and longer windows mostly add noise inputs for ~1,000 training samples).

Statistics, pooled over symbols (each symbol is trained and tested on its own):
- accuracy = correct / n over all symbols' test samples; baseline = the same pooling of
  each symbol's baseline_accuracy (`models.metrics`: the test split's majority share).
- p-value: one-sided binomial test of the pooled correct count against
  Binomial(n, pooled baseline). The exact null is a Poisson-binomial (each symbol has its
  own baseline), whose variance is at most the binomial's, so this is conservative. For
  h > 1 neighbouring labels share h - 1 bars, so outcomes are autocorrelated; the test
  uses the effective size n / h (and correct / h), a design effect of h, which bounds the
  variance inflation of an MA(h - 1) overlap.
- Bayes edge: the Bayes classifier (argmax of the generator's true class probabilities,
  `planted_oracle_proba`, with each symbol's prepared thresholds) scored on the SAME test
  samples and labels, minus the same baseline. Model edge = accuracy - baseline.
- A horizon is required when its Bayes edge (generator info) is at least 10 points AND
  the test has power for it: half that edge must be detectable at ALPHA with 90% power
  at the effective sample size. Otherwise the test reports the numbers and skips.
- Random walk: per (model, symbol, horizon) tests at ALPHA (effective size as above).
  Independent tests would give at most Binomial(m, ALPHA) false positives; we allow its
  99.9% quantile plus 1 (the tests share test sets across models, so they are positively
  correlated), per model and over all models.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy.stats import binom, binomtest, norm

from data.prepare import PrepareConfig, prepare_frame
from data.synthetic import (
    planted_bars,
    planted_lob,
    planted_lob_oracle_proba,
    planted_oracle_proba,
    random_walk_bars,
)
from models.api import evaluate, fit
from models.metrics import direction_metrics
from models.registry import REGISTRY

# ~80 s on an idle 2-core machine (7.5 min at load 16); `make test-learning` runs only these.
pytestmark = pytest.mark.learning

HORIZONS = (1, 5)
SEQ_LEN = 3
N_DAYS = 1500
# Linear fits take milliseconds, and the linear projection of the planted drift is weak
# (test edges of 2-6 points per symbol at this length), so linear models are scored on
# more symbols to give the same p < ALPHA criterion enough power; deep models on the first
# N_DEEP_SYMBOLS.
N_DEEP_SYMBOLS, N_LINEAR_SYMBOLS = 4, 12
N_RANDOM_WALK_SYMBOLS = 3
ALPHA = 0.01
EDGE_SHARE = 0.8  # the best deep model reaches at least 80% of the Bayes edge
QUALIFYING_EDGE = 0.10  # horizons with a Bayes edge of 10+ points must be learned
POWER = 0.9

TRAIN = {"train.epochs": 25, "train.patience": 6, "train.batch_size": 64, "train.lr": 1e-2}
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


def _overrides(name: str, seq_len: int = SEQ_LEN) -> dict | None:
    if REGISTRY[name].kind == "linear":
        return None
    return {**OVERRIDES.get(name, {}), **TRAIN, "seq_len": seq_len}


@functools.cache
def planted() -> tuple[dict, dict, dict]:
    """(prepared by symbol, generator info, {h: the Bayes classifier's pooled test stats
    on the deep models' symbols})."""
    df, info = planted_bars(n_symbols=N_LINEAR_SYMBOLS, n_days=N_DAYS, seed=0,
                            horizons=HORIZONS, n_paths=64, bayes_stride=8)
    result = prepare_frame(df, PrepareConfig(horizons=HORIZONS, seq_len=SEQ_LEN))
    assert not result.dropped, result.dropped
    prepared = result.prepared
    deep = dict(list(prepared.items())[:N_DEEP_SYMBOLS])
    # the oracle with the prepared (train-split) thresholds: the labels the models see
    taus = {s: f[0].thresholds.tolist() for s, f in deep.items()}
    oracle = planted_oracle_proba(df[df["symbol"].isin(list(deep))],
                                  {**info, "thresholds": taus}, rows_stride=1)
    rows = []
    for symbol, (p,) in deep.items():
        dates = df.loc[df["symbol"] == symbol, "date"].to_numpy()
        row_of, probs = oracle[symbol]
        pos = np.searchsorted(dates[row_of], p.sample_times[p.splits["test"]])
        bayes_pred = probs[pos].argmax(-1)  # (n_test, H)
        assert np.array_equal(dates[row_of][pos], p.sample_times[p.splits["test"]])
        rows += [_row(symbol, h, p, bayes_pred[:, j]) for j, h in enumerate(HORIZONS)]
    return prepared, info, {h: pooled(rows, deep, h) for h in HORIZONS}


def _row(symbol: str, horizon: int, p, pred: np.ndarray) -> dict:
    """A leaderboard-like test row for given predictions (baseline as in models.metrics)."""
    y_test = p.y_class[p.splits["test"], p.horizons.index(horizon)]
    m = direction_metrics(y_test, pred)
    return {"symbol": symbol, "horizon": horizon, "accuracy": m["accuracy"],
            "baseline_accuracy": m["baseline_accuracy"]}


def _test_rows(name: str, prepared_by_symbol: dict) -> list[dict]:
    rows = []
    for (prepared,) in prepared_by_symbol.values():
        model = fit(name, prepared, overrides=_overrides(name))
        rows += evaluate(model, prepared, splits=("test",), model_name=name)
    return rows


def overlap_p_value(correct: int, n: int, baseline: float, horizon: int) -> float:
    """One-sided binomial p-value with the effective sample size n / horizon."""
    k, n_eff = round(correct / horizon), max(n // horizon, 1)
    return float(binomtest(min(k, n_eff), n_eff, baseline, alternative="greater").pvalue)


def pooled(rows: list[dict], prepared_by_symbol: dict, horizon: int) -> dict[str, float]:
    """Pooled accuracy, baseline, edge and overlap-aware p-value of one horizon."""
    sizes = {s: f[0].splits["test"].size for s, f in prepared_by_symbol.items()}
    mine = [r for r in rows if r["horizon"] == horizon]
    n = sum(sizes[r["symbol"]] for r in mine)
    correct = round(sum(r["accuracy"] * sizes[r["symbol"]] for r in mine))
    base = sum(r["baseline_accuracy"] * sizes[r["symbol"]] for r in mine) / n
    return {"accuracy": correct / n, "baseline": base, "edge": correct / n - base, "n": n,
            "p": overlap_p_value(correct, n, base, horizon)}


@functools.cache
def planted_results(name: str) -> dict[int, dict[str, float]]:
    prepared, _, _ = planted()
    if REGISTRY[name].kind == "deep":
        prepared = dict(list(prepared.items())[:N_DEEP_SYMBOLS])
    rows = _test_rows(name, prepared)
    return {h: pooled(rows, prepared, h) for h in HORIZONS}


def required(horizon: int) -> tuple[bool, str]:
    """Whether `horizon` must be learned: big enough Bayes edge and enough test power."""
    _, info, bayes = planted()
    edge = info["bayes_accuracy"][horizon] - info["baseline_accuracy"][horizon]
    if edge < QUALIFYING_EDGE:
        return False, f"h={horizon}: Bayes edge {edge:.3f} < {QUALIFYING_EDGE}"
    b, n_eff = bayes[horizon]["baseline"], bayes[horizon]["n"] // horizon
    detectable = (norm.ppf(1 - ALPHA) + norm.ppf(POWER)) * np.sqrt(b * (1 - b) / n_eff)
    if edge / 2 < detectable:
        return False, (
            f"h={horizon}: Bayes edge {edge:.3f} but the test's effective size {n_eff} only"
            f" detects edges >= {detectable:.3f} (half the Bayes edge needs more test data)"
        )
    return True, ""


def test_generator_gives_a_learnable_horizon():
    assert required(1) == (True, "")


@pytest.mark.parametrize("horizon", HORIZONS)
@pytest.mark.parametrize("name", MODELS)
def test_every_model_beats_the_baseline_on_planted_signal(name, horizon):
    needed, why = required(horizon)
    if not needed:
        pytest.skip(why)
    r = planted_results(name)[horizon]
    assert r["p"] < ALPHA, (
        f"{name} h={horizon}: accuracy {r['accuracy']:.3f} vs baseline {r['baseline']:.3f}"
        f" (edge {r['edge']:.3f}), p={r['p']:.3g}"
    )


def test_best_deep_model_reaches_most_of_the_bayes_edge():
    _, _, bayes = planted()
    for h in HORIZONS:
        if not required(h)[0]:
            continue
        edges = {name: planted_results(name)[h]["edge"] for name in DEEP}
        best = max(edges, key=edges.get)
        assert edges[best] >= EDGE_SHARE * bayes[h]["edge"], (
            f"h={h}: best deep model {best} edge {edges[best]:.3f} < {EDGE_SHARE} x Bayes"
            f" edge {bayes[h]['edge']:.3f} on the same test samples; all: "
            + ", ".join(f"{k}={v:.3f}" for k, v in sorted(edges.items()))
        )


def false_positive_bound(m: int) -> int:
    """99.9% quantile of Binomial(m, ALPHA) plus one of slack."""
    return int(binom.ppf(0.999, m, ALPHA)) + 1


def test_no_model_finds_signal_in_a_random_walk():
    df, info = random_walk_bars(n_symbols=N_RANDOM_WALK_SYMBOLS, n_days=N_DAYS, seed=1,
                                horizons=HORIZONS)
    assert info["bayes_accuracy"] == info["baseline_accuracy"]
    prepared = prepare_frame(df, PrepareConfig(horizons=HORIZONS, seq_len=SEQ_LEN)).prepared
    assert len(prepared) == N_RANDOM_WALK_SYMBOLS
    hits: dict[str, list[tuple[str, int, float]]] = {}
    per_model = false_positive_bound(N_RANDOM_WALK_SYMBOLS * len(HORIZONS))
    for name in MODELS:
        hits[name] = []
        for r in _test_rows(name, prepared):
            n = prepared[r["symbol"]][0].splits["test"].size
            p = overlap_p_value(round(r["accuracy"] * n), n, r["baseline_accuracy"],
                                r["horizon"])
            if p < ALPHA:
                hits[name].append((r["symbol"], r["horizon"], round(p, 5)))
        assert len(hits[name]) <= per_model, (name, hits[name])
    total = sum(len(v) for v in hits.values())
    assert total <= false_positive_bound(N_RANDOM_WALK_SYMBOLS * len(HORIZONS) * len(MODELS))


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
    bayes = _row(symbol, 1, p, probs[pos, 0].argmax(-1))
    bayes_edge = bayes["accuracy"] - bayes["baseline_accuracy"]
    assert bayes["baseline_accuracy"] == pytest.approx(row["baseline_accuracy"])
    assert row["accuracy"] - row["baseline_accuracy"] >= 0.5 * bayes_edge, (row, bayes)
