"""Targets (forward returns, thresholds, classes) and purged/embargoed splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data.splits import (
    SplitError,
    check_fractions,
    holdout_split,
    min_samples,
    walk_forward_splits,
)
from data.targets import fit_thresholds, forward_log_returns, to_classes


# ---- targets ----------------------------------------------------------------------------
def test_forward_log_returns_known_values() -> None:
    close = np.array([100.0, 110.0, 99.0, 99.0, 121.0])
    r = forward_log_returns(close, (1, 3))
    assert r.shape == (5, 2)
    np.testing.assert_allclose(r[:, 0][:4], np.log([1.1, 0.9, 1.0, 121 / 99]))
    np.testing.assert_allclose(r[:2, 1], np.log([99 / 100, 121 / 110]))
    assert np.isnan(r[4, 0]) and np.isnan(r[2:, 1]).all()  # window passes the end


def test_forward_log_returns_rejects_bad_horizons() -> None:
    with pytest.raises(ValueError, match="horizons"):
        forward_log_returns(np.ones(5), (0,))


def test_fit_thresholds_modes() -> None:
    rng = np.random.default_rng(0)
    r = rng.standard_normal((3000, 2)) * np.array([0.01, 0.05])
    tau = fit_thresholds(r, "auto")
    assert tau.dtype == np.float32 and tau.shape == (2,)
    np.testing.assert_allclose(tau, np.quantile(np.abs(r), 1 / 3, axis=0), rtol=1e-6)
    # auto roughly balances the three classes on the rows it was fitted on
    counts = np.bincount(to_classes(r[:, 0], tau[:1]).ravel(), minlength=3) / len(r)
    np.testing.assert_allclose(counts, 1 / 3, atol=0.03)
    np.testing.assert_array_equal(fit_thresholds(r, 0.02), np.float32([0.02, 0.02]))
    np.testing.assert_array_equal(fit_thresholds(r, [0.01, 0.03]), np.float32([0.01, 0.03]))
    with pytest.raises(ValueError, match="one each"):
        fit_thresholds(r, [0.01])
    with pytest.raises(ValueError, match="auto"):
        fit_thresholds(r, "median")
    with pytest.raises(ValueError, match=">= 0"):
        fit_thresholds(r, -0.1)


def test_fit_thresholds_uses_only_the_rows_given() -> None:
    rng = np.random.default_rng(1)
    r = rng.standard_normal((500, 1)) * 0.01
    later = np.concatenate([r, 100 * rng.standard_normal((500, 1))])  # wild future rows
    assert fit_thresholds(r, "auto")[0] != fit_thresholds(later, "auto")[0]
    assert fit_thresholds(later[:500], "auto")[0] == fit_thresholds(r, "auto")[0]


def test_auto_threshold_of_tick_prices_keeps_the_classes_and_gets_a_width() -> None:
    """Prices on a 1-cent grid near $3 (1-minute bars): 60% of 1-bar returns are exactly 0,
    so the 1/3 quantile of |r| is 0. The band becomes half the smallest move: the training
    classes are those of the zero-width band (flat = unchanged), and the band has a width
    a continuous forecast can put probability on."""
    rng = np.random.default_rng(3)
    close = np.round(3.0 + np.cumsum(rng.choice([-0.01, 0, 0, 0, 0.01], 2000)), 2)
    r = forward_log_returns(close, (1, 5))[:-5]
    assert (r[:, 0] == 0).mean() > 0.5 and np.quantile(np.abs(r[:, 0]), 1 / 3) == 0
    tau = fit_thresholds(r, "auto")
    smallest = np.abs(r[:, 0])[r[:, 0] != 0].min()
    assert tau[0] == np.float32(smallest / 2)
    np.testing.assert_array_equal(to_classes(r, tau)[:, 0], to_classes(r[:, :1], [0.0])[:, 0])
    # h=5: the 1/3 quantile (> 0) falls inside the level of one-cent moves (1 cent / price,
    # from $2.6 to $3.4): the band moves to the gap below that level, so every one-cent
    # move has one class whatever the price
    quantile, moved = np.quantile(np.abs(r[:, 1]), 1 / 3), np.abs(r[:, 1])[r[:, 1] != 0]
    level = moved[moved < moved.min() * 1.5]
    assert level.min() < quantile < level.max()
    assert tau[1] == np.float32(moved.min() / 2)
    assert fit_thresholds(np.zeros((10, 1)), "auto")[0] == 0  # no move at all: 0


def test_auto_threshold_does_not_split_a_tick_level_by_the_price() -> None:
    """Order-book mid prices on a 1-cent tick near $100 move one tick at a time (95%):
    every one-tick |r| is 1 cent / price, a tight cluster. The 1/3 quantile fell inside
    it, so a test period at a price 1% higher labelled 91% of its samples flat (33% in
    training) and hid a strong signal. The band now lies in the gap next to the level:
    the test's class shares are the training's."""
    rng = np.random.default_rng(7)
    steps = rng.choice([-0.01, 0.0, 0.01], 6000, p=[0.475, 0.05, 0.475])
    mid = np.round(99.3 + np.cumsum(steps), 2)
    mid[4000:] += 1.0  # the test period trades a dollar higher
    r = forward_log_returns(mid, (1,))[:-1]
    train, test = r[:4000], r[4001:]
    plain = np.quantile(np.abs(train), 1 / 3)
    tau = fit_thresholds(train, "auto")
    flat_share = [(to_classes(part, tau)[:, 0] == 1).mean() for part in (train, test)]
    assert abs(flat_share[1] - flat_share[0]) < 0.03, flat_share
    shares = [(to_classes(part, [plain])[:, 0] == 1).mean() for part in (train, test)]
    assert shares[1] - shares[0] > 0.1, shares  # what the plain quantile did
    moves = np.abs(train[train != 0])
    assert not (np.abs(moves - tau[0]) < 0.05 * tau[0]).any()  # in a gap, off every level
    # returns with no ticks keep the plain quantile
    smooth = rng.standard_normal((4000, 1)) * 0.01
    assert fit_thresholds(smooth, "auto")[0] == np.float32(np.quantile(np.abs(smooth), 1 / 3))


def test_linear_model_calls_flat_on_tick_prices() -> None:
    """The user-visible effect: with a zero-width band OLS never predicted "flat" where
    62% of the test labels were (accuracy 0.17); with the band it does."""
    from data.prepare import PrepareConfig, prepare_symbol
    from models import api

    rng = np.random.default_rng(3)
    n = 1950
    close = np.round(3.0 + np.cumsum(rng.choice([-0.01, 0, 0, 0, 0.01], n)), 2)
    open_ = np.concatenate([[close[0]], close[:-1]])
    df = pd.DataFrame({"symbol": "TICK", "date": pd.date_range("2021-03-08 14:30", periods=n,
                                                               freq="min"),
                       "open": open_, "high": np.maximum(open_, close),
                       "low": np.minimum(open_, close), "close": close,
                       "volume": rng.integers(0, 3, n) * 100.0})
    (prep,) = prepare_symbol(df, PrepareConfig(horizons=(1,)))
    model = api.fit("ols", prep, preset="fast")
    x, y, _ = prep.split_arrays("test", sequence=False)
    pred = model.predict(x)[:, 0]
    assert (y[:, 0] == 1).mean() > 0.5
    assert (pred == 1).mean() > 0.3 and (pred == y[:, 0]).mean() > 0.4


def test_to_classes_boundaries() -> None:
    r = np.array([[-0.02, -0.01, 0.0, 0.01, 0.02]]).T
    np.testing.assert_array_equal(to_classes(r, np.array([0.01])).ravel(), [0, 1, 1, 1, 2])
    assert to_classes(r, np.array([0.01])).dtype == np.int64
    with pytest.raises(ValueError, match="NaN"):
        to_classes(np.array([[np.nan]]), np.array([0.01]))


# ---- splits -----------------------------------------------------------------------------
def assert_purged(splits: dict[str, np.ndarray], max_h: int, purge: int, embargo: int) -> None:
    """Chronological, contiguous, label windows never reach a later split, exact gaps."""
    order = ["train", "val", "test"]
    for name in order:
        idx = splits[name]
        assert idx.dtype == np.int64 and len(idx) > 0
        np.testing.assert_array_equal(idx, np.arange(idx[0], idx[-1] + 1))  # contiguous
    for i, early in enumerate(order):
        for late in order[i + 1 :]:
            # every sample t of the earlier split: t + max_h < first sample of the later one
            assert splits[early][-1] + max_h < splits[late][0], (early, late)
    for early, late in zip(order, order[1:], strict=False):
        gap = splits[late][0] - splits[early][-1] - 1
        assert gap == purge + embargo, (early, late, gap)


@pytest.mark.parametrize("n,purge,embargo", [(1000, 20, 5), (400, 5, 0), (777, 10, 13)])
def test_holdout_purge_and_embargo(n: int, purge: int, embargo: int) -> None:
    s = holdout_split(n, 0.7, 0.15, 0.15, purge, embargo)
    assert_purged(s, max_h=purge, purge=purge, embargo=embargo)
    assert s["train"][0] == 0 and s["test"][-1] == n - 1
    assert len(s["test"]) == n - int(n * 0.85 + 1e-9)  # the test block is never shortened
    assert abs(len(s["train"]) - (0.7 * n - purge)) <= 1


def test_holdout_without_purge_is_a_plain_partition() -> None:
    s = holdout_split(100, 0.6, 0.2, 0.2, 0, 0)
    np.testing.assert_array_equal(np.concatenate([s["train"], s["val"], s["test"]]),
                                  np.arange(100))


@pytest.mark.parametrize("n_folds,purge,embargo", [(3, 20, 5), (5, 10, 0), (1, 3, 2)])
def test_walk_forward_folds(n_folds: int, purge: int, embargo: int) -> None:
    n = 1200
    folds = walk_forward_splits(n, n_folds, 0.6, 0.15, purge, embargo)
    assert len(folds) == n_folds
    for fold in folds:
        assert_purged(fold, max_h=purge, purge=purge, embargo=embargo)
        assert fold["train"][0] == 0
    tests = [f["test"] for f in folds]
    # consecutive, non-overlapping test blocks that tile the tail exactly
    np.testing.assert_array_equal(np.concatenate(tests), np.arange(tests[0][0], n))
    assert tests[0][0] == int(0.6 * n) + int(0.15 * n)
    # expanding training window, fixed-size validation block
    train_ends = [f["train"][-1] for f in folds]
    assert train_ends == sorted(train_ends) and len(set(train_ends)) == n_folds
    assert len({len(f["val"]) for f in folds}) == 1


def test_fraction_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        check_fractions(0.7, 0.2, 0.2)
    with pytest.raises(ValueError, match="val"):
        holdout_split(100, 0.7, 0.0, 0.3, 0, 0)
    with pytest.raises(ValueError, match="train"):
        walk_forward_splits(100, 2, 1.5, 0.1, 0, 0)
    with pytest.raises(ValueError, match="purge"):
        holdout_split(100, 0.7, 0.15, 0.15, -1, 0)
    with pytest.raises(ValueError, match="n_folds"):
        walk_forward_splits(100, 0, 0.7, 0.15, 0, 0)


@pytest.mark.parametrize("method", ["holdout", "walk_forward"])
@pytest.mark.parametrize("min_size", [1, 30])
def test_min_samples_is_the_exact_edge(method: str, min_size: int) -> None:
    kw = {"train": 0.7, "val": 0.15, "test": 0.15, "purge": 20, "embargo": 5}
    n = min_samples(method, n_folds=3, min_size=min_size, **kw)

    def make(m: int) -> list[dict[str, np.ndarray]]:
        if method == "holdout":
            return [holdout_split(m, 0.7, 0.15, 0.15, 20, 5, min_size=min_size)]
        return walk_forward_splits(m, 3, 0.7, 0.15, 20, 5, min_size=min_size)

    assert min(len(v) for f in make(n) for v in f.values()) >= min_size
    with pytest.raises(SplitError, match=f"need at least {n}") as err:
        make(n - 1)
    assert err.value.needed == n


def _ticks(shares: tuple[float, float, float], n: int, rng: np.random.Generator) -> np.ndarray:
    """|r| of 1, 2 and 3 tick moves (each level +-2% wide by the price), random signs."""
    level = rng.choice([1, 2, 3], size=n, p=shares)
    return 0.001 * level * rng.uniform(0.98, 1.02, n) * rng.choice([-1, 1], n)


def test_auto_band_leaves_a_multi_tick_level_for_the_nearer_gap() -> None:
    rng = np.random.default_rng(11)
    n = 3000
    r = np.column_stack([
        _ticks((0.25, 0.50, 0.25), n, rng),  # gap below the 2-tick level: 25% flat
        _ticks((0.10, 0.40, 0.50), n, rng),  # gap above it: 50% flat (nearer a third than 10%)
    ])
    tau = fit_thresholds(r, "auto")
    a = np.abs(r)
    # h0: between the largest 1-tick and the smallest 2-tick move
    lo0, hi0 = a[a[:, 0] < 0.0015, 0].max(), a[a[:, 0] > 0.0015, 0].min()
    assert lo0 < tau[0] < hi0 and abs(tau[0] - (lo0 + hi0) / 2) < 1e-9
    # h1: between the largest 2-tick and the smallest 3-tick move
    lo1, hi1 = a[a[:, 1] < 0.0025, 1].max(), a[a[:, 1] > 0.0025, 1].min()
    assert lo1 < tau[1] < hi1 and abs(tau[1] - (lo1 + hi1) / 2) < 1e-9
    flat = (to_classes(r, tau) == 1).mean(axis=0)
    np.testing.assert_allclose(flat, [(a[:, 0] < 0.0015).mean(), (a[:, 1] < 0.0025).mean()])


def test_split_sizes_are_exact_where_the_fractions_products_round_down() -> None:
    """n * fraction is floored, and some products land a hair under a whole number
    (100 * (0.7 + 0.2) = 89.99999999999999, 350 * 0.7 = 244.99999999999997): a plain
    floor would move a sample from one split to the next. The sizes are those of exact
    arithmetic."""
    sizes = {name: idx.size for name, idx in holdout_split(100, 0.7, 0.2, 0.1, 0, 0).items()}
    assert sizes == {"train": 70, "val": 20, "test": 10}
    sizes = {name: idx.size for name, idx in holdout_split(1000, 0.7, 0.1, 0.2, 0, 0).items()}
    assert sizes == {"train": 700, "val": 100, "test": 200}
    (fold,) = walk_forward_splits(350, 1, 0.7, 0.15, 0, 0)
    assert fold["train"][-1] == 244 and fold["val"][0] == 245  # 245 train samples
    assert {name: idx.size for name, idx in fold.items()} == {"train": 245, "val": 52,
                                                              "test": 53}
