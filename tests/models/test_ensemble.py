"""Soft-voting ensembles: the vote, the weights, and their leaderboard rows."""

from __future__ import annotations

import numpy as np
import pytest

from data.prepared import PreparedSymbol
from models.ensemble import ensemble_rows, ensemble_weights, member_outputs, soft_vote
from models.leaderboard import fitted_rows
from models.linear import fit_linear
from models.metrics import LEADERBOARD_COLUMNS


def make_prepared(n: int = 900, seed: int = 0) -> PreparedSymbol:
    """Two horizons; feature 0 drives both returns, the rest is noise."""
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n, 5)).astype(np.float32)
    noise = rng.standard_normal((n, 2))
    y = (0.01 * (0.5 * feats[:, :1] + noise)).astype(np.float32)
    splits = {"train": np.arange(0, 500), "val": np.arange(510, 700), "test": np.arange(710, n)}
    tau = np.quantile(np.abs(y[:500]), 1 / 3, axis=0).astype(np.float32)
    y_cls = np.where(y > tau, 2, np.where(y < -tau, 0, 1)).astype(np.int64)
    return PreparedSymbol(
        "ENS", feats, tuple("abcde"), np.arange(n).astype("datetime64[ns]"), y, y_cls, (1, 3),
        1, splits, tau, np.zeros(5, np.float32), np.ones(5, np.float32),
    )  # fmt: skip


class Constant:
    """Always the same class probabilities (no return forecast)."""

    input_kind = "tabular"
    history: list = []
    train_seconds = 0.0
    n_params = 0

    def __init__(self, name: str, cls: int) -> None:
        self.name, self.cls = name, cls

    def predict_proba(self, x):
        p = np.full((x.shape[0], 2, 3), 0.1)
        p[..., self.cls] = 0.8
        return p

    def predict(self, x):
        return self.predict_proba(x).argmax(-1)

    def predict_return(self, x):
        return None


def test_soft_vote_is_the_weighted_mean():
    rng = np.random.default_rng(0)
    probas = rng.dirichlet(np.ones(3), size=(3, 10, 2))  # (M, n, H, 3)
    equal = soft_vote(probas, np.full((3, 2), 1 / 3))
    np.testing.assert_allclose(equal, probas.mean(0))
    w = np.array([[1.0, 0.0], [0.0, 0.5], [0.0, 0.5]])
    out = soft_vote(probas, w)
    np.testing.assert_allclose(out[:, 0], probas[0, :, 0])
    np.testing.assert_allclose(out[:, 1], 0.5 * (probas[1, :, 1] + probas[2, :, 1]))
    np.testing.assert_allclose(out.sum(-1), 1.0)
    with pytest.raises(ValueError, match="do not match"):
        soft_vote(probas, np.ones((2, 2)))


def test_f1_weights_favour_the_member_that_scores_on_validation():
    p = make_prepared()
    members = {"ridge": fit_linear("ridge", p), "flat": Constant("flat", 1)}
    w = ensemble_weights(members, p, "f1")
    assert w.shape == (2, 2)
    np.testing.assert_allclose(w.sum(0), 1.0)
    assert np.all(w[0] > w[1])  # a skilled ridge beats an always-flat voter (macro-F1 ~ 1/6)
    np.testing.assert_allclose(ensemble_weights(members, p, "equal"), 0.5)
    with pytest.raises(ValueError, match="weighting"):
        ensemble_weights(members, p, "median")


def test_f1_weights_are_equal_when_nobody_scores():
    p = make_prepared()
    absent = int(np.argmin(np.bincount(p.y_class[p.splits["val"], 0], minlength=3)))
    p.y_class[p.splits["val"]] = (absent + 1) % 3  # validation holds one class only
    members = {"a": Constant("a", absent), "b": Constant("b", absent)}
    np.testing.assert_allclose(ensemble_weights(members, p, "f1"), 0.5)


def test_ensemble_of_identical_members_equals_the_member():
    p = make_prepared()
    ridge = fit_linear("ridge", p)
    rows = ensemble_rows("ENS", {"r1": ridge, "r2": ridge}, p)
    single = {(r["split"], r["horizon"]): r for r in fitted_rows("ENS", "ridge", ridge, p)}
    assert {r["model"] for r in rows} == {"ensemble_equal", "ensemble_f1"}
    assert len(rows) == 2 * 2 * 2  # weightings x splits x horizons
    for r in rows:
        assert list(r) == LEADERBOARD_COLUMNS
        ref = single[(r["split"], r["horizon"])]
        assert r["accuracy"] == ref["accuracy"] and r["macro_f1"] == ref["macro_f1"]
        assert r["ic"] == pytest.approx(ref["ic"])  # both members forecast returns
        assert r["params"] == 2 * ridge.params_by_horizon[p.horizons.index(r["horizon"])]


def test_ensemble_mixing_a_classifier_has_no_return_metrics():
    p = make_prepared()
    members = {"ridge": fit_linear("ridge", p), "up": Constant("up", 2)}
    probas, returns = member_outputs(members, p, "test")
    assert probas.shape == (2, p.splits["test"].size, 2, 3) and returns is None
    rows = ensemble_rows("ENS", members, p, splits=("test",))
    assert all(r["r2"] is None and r["accuracy"] is not None for r in rows)
    with pytest.raises(ValueError, match="at least 2"):
        ensemble_rows("ENS", {"up": members["up"]}, p)


def test_f1_weights_are_validation_macro_f1_and_never_read_test():
    """The weights are the members' validation macro-F1 per horizon, normalized; labels of
    the test split (here rewritten so the flat voter is perfect there) change nothing."""
    from models.metrics import direction_metrics

    p = make_prepared()
    members = {"ridge": fit_linear("ridge", p), "flat": Constant("flat", 1)}
    val = p.splits["val"]
    scores = np.array([[direction_metrics(p.y_class[val, j], m.predict(p.X[val])[:, j])["macro_f1"]
                        for j in range(2)] for m in members.values()])
    w = ensemble_weights(members, p, "f1")
    np.testing.assert_allclose(w, scores / scores.sum(0), rtol=1e-12)
    p.y_class[p.splits["test"]] = 1  # every test label flat
    np.testing.assert_array_equal(ensemble_weights(members, p, "f1"), w)
