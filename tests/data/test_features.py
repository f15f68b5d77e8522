"""Bar and LOB features: causality, warm-up, known values, scale-freeness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.features import (
    BAR_FEATURE_NAMES,
    BAR_WARMUP,
    bar_features,
    ewm,
    rolling_zscore,
)
from data.lob_features import LOB_WARMUP, lob_feature_names, lob_features, lob_levels

SP500 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sp500_daily.parquet"


def random_bars(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(0.015 * rng.standard_normal(n)))
    open_ = close * np.exp(0.005 * rng.standard_normal(n))
    high = np.maximum(open_, close) * np.exp(np.abs(0.01 * rng.standard_normal(n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(0.01 * rng.standard_normal(n)))
    volume = rng.integers(0, 5_000_000, n)
    volume[::37] = 0  # zero volume is legal
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                         "volume": volume})


def random_lob(n: int, levels: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    mid = 100 * np.exp(np.cumsum(2e-4 * rng.standard_normal(n)))
    cols = {}
    for i in range(1, levels + 1):
        off = (0.5 + i + rng.random(n)) * 1e-4
        cols[f"ask_price_{i}"] = mid * (1 + off)
        cols[f"bid_price_{i}"] = mid * (1 - off)
        cols[f"ask_size_{i}"] = rng.integers(1, 1000, n)
        cols[f"bid_size_{i}"] = rng.integers(1, 1000, n)
    return pd.DataFrame(cols)


def perturb_after(df: pd.DataFrame, t: int, rng: np.random.Generator) -> pd.DataFrame:
    """Copy of df with every numeric value in rows > t changed (positive values stay so)."""
    out = df.copy()
    for col in out.columns:
        values = out[col].to_numpy().copy()
        k = len(values) - t - 1
        if np.issubdtype(values.dtype, np.integer):
            values[t + 1 :] = rng.integers(0, 10_000_000, k)
        else:
            values[t + 1 :] = values[t + 1 :] * np.exp(rng.normal(0, 0.3, k))
        out[col] = values
    return out


# ---- bars -------------------------------------------------------------------------------
def test_bar_features_shape_dtype_and_warmup() -> None:
    df = random_bars(400, seed=0)
    x, names = bar_features(df)
    assert x.shape == (400, len(BAR_FEATURE_NAMES)) and x.dtype == np.float32
    assert names == list(BAR_FEATURE_NAMES) and len(set(names)) == len(names)
    assert np.isnan(x[BAR_WARMUP - 1]).any(), "BAR_WARMUP is larger than needed"
    assert np.isfinite(x[BAR_WARMUP:]).all(), "NaN after the warm-up"


def test_bar_features_real_symbol_finite_after_warmup() -> None:
    if not SP500.exists():
        pytest.skip("shared S&P 500 data not present")
    df = pd.read_parquet(SP500, filters=[("symbol", "==", "MSFT")])
    x, _ = bar_features(df)
    assert np.isfinite(x[BAR_WARMUP:]).all()


@pytest.mark.parametrize("seed", range(6))
def test_bar_features_are_causal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    df = random_bars(300, seed)
    base, _ = bar_features(df)
    t = int(rng.integers(0, 298))
    changed, _ = bar_features(perturb_after(df, t, rng))
    assert base[: t + 1].tobytes() == changed[: t + 1].tobytes(), f"row <= {t} changed"
    assert not np.array_equal(base[t + 1 :], changed[t + 1 :], equal_nan=True)


def test_bar_feature_known_values() -> None:
    n = 80
    close = 10.0 * 1.01 ** np.arange(n)  # steady 1% rise
    df = pd.DataFrame({"open": close / 1.01, "high": close * 1.02, "low": close / 1.03,
                       "close": close, "volume": np.full(n, 1000)})
    x, names = bar_features(df)
    col = {name: x[:, i] for i, name in enumerate(names)}
    t = BAR_WARMUP + 5
    for k in (1, 2, 5, 10, 20):
        assert col[f"logret_{k}"][t] == pytest.approx(k * np.log(1.01), rel=1e-6)
    assert col["vol_5"][t] == pytest.approx(0.0, abs=1e-7)
    assert col["rsi_14"][t] == pytest.approx(1.0)  # only gains
    assert col["range_ratio"][t] == pytest.approx(1.02 - 1 / 1.03, rel=1e-6)
    # body (close - open) / (high - low)
    assert col["body_ratio"][t] == pytest.approx((1 - 1 / 1.01) / (1.02 - 1 / 1.03), rel=1e-5)
    assert col["volume_z_20"][t] == 0.0  # flat volume window -> 0, not NaN
    assert col["macd"][t] > 0  # fast EMA above slow EMA in an uptrend


def test_bar_feature_guards_for_flat_prices() -> None:
    n = 60
    df = pd.DataFrame({"open": 5.0, "high": 5.0, "low": 5.0, "close": np.full(n, 5.0),
                       "volume": np.zeros(n, dtype=np.int64)})
    x, names = bar_features(df)
    col = {name: x[BAR_WARMUP:, i] for i, name in enumerate(names)}
    assert np.isfinite(x[BAR_WARMUP:]).all()
    assert (col["bb_pctb_20"] == 0.5).all()  # flat window: middle of the bands
    assert (col["body_ratio"] == 0.0).all()  # high == low
    assert (col["rsi_14"] == 0.5).all()
    np.testing.assert_allclose(col["macd_hist"], 0.0, atol=1e-12)  # EMA round-off only


def test_bar_features_are_scale_free() -> None:
    df = random_bars(200, seed=3)
    scaled = df.assign(**{c: df[c] * 37.0 for c in ("open", "high", "low", "close")})
    a, _ = bar_features(df)
    b, _ = bar_features(scaled)
    np.testing.assert_allclose(a[BAR_WARMUP:], b[BAR_WARMUP:], rtol=1e-4, atol=1e-5)


def test_bar_features_missing_column_is_named() -> None:
    with pytest.raises(ValueError, match="volume"):
        bar_features(random_bars(50, 0).drop(columns="volume"))


def test_ewm_matches_pandas_and_rolling_zscore_matches_definition() -> None:
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.standard_normal(700)) + 50
    x[:3] = np.nan
    for alpha in (1 / 14, 2 / 27, 0.2, 0.9):
        ref = pd.Series(x).ewm(alpha=alpha, adjust=False, min_periods=5).mean().to_numpy()
        np.testing.assert_allclose(ewm(x, alpha, 5), ref, rtol=1e-12, equal_nan=True)
    y = rng.standard_normal(100)
    roll = pd.Series(y).rolling(20)
    ref = (y - roll.mean()) / roll.std(ddof=0)
    np.testing.assert_allclose(rolling_zscore(y, 20), ref, rtol=1e-10, equal_nan=True)


# ---- LOB --------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [1, 3])
def test_lob_features_shape_and_warmup(levels: int) -> None:
    x, names = lob_features(random_lob(200, levels, seed=levels))
    assert x.shape == (200, 2 + 6 * levels) and x.dtype == np.float32
    assert names == lob_feature_names(levels)
    assert np.isnan(x[LOB_WARMUP - 1]).any() and np.isfinite(x[LOB_WARMUP:]).all()


@pytest.mark.parametrize("seed", range(4))
def test_lob_features_are_causal(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    df = random_lob(150, 3, seed)
    base, _ = lob_features(df)
    t = int(rng.integers(0, 148))
    changed, _ = lob_features(perturb_after(df, t, rng))
    assert base[: t + 1].tobytes() == changed[: t + 1].tobytes(), f"row <= {t} changed"


def test_lob_feature_known_values() -> None:
    df = pd.DataFrame({
        "ask_price_1": [100.02, 100.04], "ask_price_2": [100.05, 100.06],
        "bid_price_1": [99.98, 100.00], "bid_price_2": [99.95, 99.96],
        "ask_size_1": [100, 0], "ask_size_2": [300, 50],
        "bid_size_1": [300, 0], "bid_size_2": [100, 50],
    })
    x, names = lob_features(df)
    col = {name: x[:, i] for i, name in enumerate(names)}
    assert col["imbalance_1"][0] == pytest.approx(0.5)  # (300 - 100) / 400
    assert col["imbalance_1"][1] == 0.0  # empty level -> balanced
    assert col["cum_imbalance_2"][0] == pytest.approx(0.0)  # 400 vs 400
    assert col["mid_logret"][1] == pytest.approx(np.log(100.02 / 100.0), rel=1e-5)
    assert np.isnan(col["spread_rel"]).all()  # its trailing window is not full yet


def test_lob_distances_are_relative_to_their_recent_mean() -> None:
    """The spread and each level's distance from the mid, over their trailing mean - 1: a
    spread twice its usual width reads about 1, a locked book's zero spread 0."""
    n = LOB_WARMUP + 3
    mid = np.full(n, 100.0)
    half = np.full(n, 0.02)
    half[-2] = 0.04  # the spread doubles for one snapshot
    df = pd.DataFrame({
        "ask_price_1": mid + half, "ask_price_2": mid + half + 0.01,
        "bid_price_1": mid - half, "bid_price_2": mid - half - 0.01,
        "ask_size_1": 100, "ask_size_2": 100, "bid_size_1": 100, "bid_size_2": 100,
    })
    x, names = lob_features(df)
    col = {name: x[:, i].astype(np.float64) for i, name in enumerate(names)}
    window_mean = (0.04 * (LOB_WARMUP) + 0.08) / (LOB_WARMUP + 1)
    assert col["spread_rel"][-2] == pytest.approx(0.08 / window_mean - 1, rel=1e-5)
    assert col["spread_rel"][LOB_WARMUP] == 0.0  # a steady spread
    assert col["ask_offset_rel_2"][-2] == pytest.approx(
        0.05 / ((0.03 * LOB_WARMUP + 0.05) / (LOB_WARMUP + 1)) - 1, rel=1e-5)
    assert col["bid_offset_rel_1"][-2] == pytest.approx(col["ask_offset_rel_1"][-2])
    locked = df.assign(ask_price_1=mid, bid_price_1=mid)  # ask == bid: zero spread
    x, _ = lob_features(locked)
    assert (x[LOB_WARMUP:, names.index("spread_rel")] == 0).all()


def test_lob_features_do_not_carry_the_price_level() -> None:
    """A random-walk mid whose book levels sit a fixed number of cents apart (as real books'
    ticks do): no linear combination of the features follows the price level. A tick in
    basis points (two levels' bps offsets apart, as the features were) is tick / mid,
    correlated -1 with it, and OLS turned that into test ICs that looked significant on
    random walks."""
    rng = np.random.default_rng(3)
    n = 3000
    mid = 100 * np.exp(np.cumsum(rng.normal(0, 2e-4, n)))
    spread = 0.01 + np.abs(rng.normal(0, 0.005, n))
    cols: dict[str, np.ndarray] = {}
    for k in (1, 2, 3):
        cols[f"ask_price_{k}"] = mid + spread / 2 + 0.01 * (k - 1)
        cols[f"bid_price_{k}"] = mid - spread / 2 - 0.01 * (k - 1)
        cols[f"ask_size_{k}"] = rng.integers(1, 500, n)
        cols[f"bid_size_{k}"] = rng.integers(1, 500, n)
    x, names = lob_features(pd.DataFrame(cols))
    rows = slice(LOB_WARMUP, None)
    level = np.log(mid[rows])
    assert abs(np.corrcoef(level, 0.01 / mid[rows])[0, 1]) > 0.99  # the old bps tick
    design = np.c_[np.ones(level.size), x[rows].astype(np.float64)]
    fitted = design @ np.linalg.lstsq(design, level, rcond=None)[0]
    r2 = 1 - ((level - fitted) ** 2).sum() / ((level - level.mean()) ** 2).sum()
    assert r2 < 0.2, r2  # the bps offsets gave 1.0
    scaled, _ = lob_features(pd.DataFrame(cols).pipe(
        lambda d: d.assign(**{c: d[c] * 10 for c in d if "price" in c})))
    np.testing.assert_allclose(scaled[rows], x[rows], rtol=1e-4, atol=1e-5)  # scale-free


def test_lob_levels_must_be_complete() -> None:
    df = random_lob(10, 2, seed=0).drop(columns="bid_size_2")
    with pytest.raises(ValueError, match="bid_size"):
        lob_levels(df.columns)
