"""prepare_symbol / prepare_frame: the PreparedSymbol contract, train-only fitting, drops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.features import BAR_WARMUP
from data.lob_features import LOB_WARMUP
from data.prepare import PrepareConfig, label_imbalance, prepare_frame, prepare_symbol
from data.prepared import PreparedSymbol
from data.splits import holdout_split, min_samples, walk_forward_splits
from data.synthetic import planted_lob
from data.targets import fit_thresholds, forward_log_returns
from data.validation import DataValidationError

SP500 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sp500_daily.parquet"
CFG = PrepareConfig(seq_len=20, horizons=(1, 5))


def bars(n: int, seed: int = 0, symbol: str = "AAA") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 40 * np.exp(np.cumsum(0.02 * rng.standard_normal(n)))
    open_ = close * np.exp(0.005 * rng.standard_normal(n))
    return pd.DataFrame({
        "symbol": symbol,
        "date": pd.bdate_range("2015-01-01", periods=n),
        "open": open_,
        "high": np.maximum(open_, close) * 1.01,
        "low": np.minimum(open_, close) * 0.99,
        "close": close,
        "volume": rng.integers(1000, 100_000, n),
    })


# ---- config -----------------------------------------------------------------------------
def test_config_validates_with_field_names() -> None:
    for bad, field in [({"kind": "tick"}, "kind"), ({"horizons": (5, 1)}, "horizons"),
                       ({"seq_len": 0}, "seq_len"), ({"threshold": "median"}, "threshold"),
                       ({"threshold": (0.1,)}, "threshold"), ({"split": "kfold"}, "split"),
                       ({"purge": -2}, "purge"), ({"embargo": -1}, "embargo"),
                       ({"test": 0.3}, "sum to 1"), ({"n_folds": 0}, "n_folds"),
                       ({"horizons": (1, 20), "purge": 5}, "labels would overlap the next split"
                        r"; use purge: auto \(= the longest horizon\) or a purge of at least 15")]:
        with pytest.raises(ValueError, match=field):
            PrepareConfig(**bad)


def test_config_dict_round_trip() -> None:
    cfg = PrepareConfig.from_dict({"horizons": [1, 3], "threshold": [0.01, 0.02], "purge": 4})
    assert cfg.horizons == (1, 3) and cfg.threshold == (0.01, 0.02)
    assert PrepareConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown field"):
        PrepareConfig.from_dict({"horizon": [1]})


def test_min_rows_is_the_exact_edge() -> None:
    need = CFG.min_rows()
    # warm-up + window rows + unlabeled tail + samples for val >= 30 after 5 + 2 * 5 gaps
    assert need == BAR_WARMUP + CFG.seq_len - 1 + 5 + min_samples(
        "holdout", train=0.7, val=0.15, test=0.15, n_folds=1, purge=5, embargo=5, min_size=30
    )
    assert len(prepare_symbol(bars(need), CFG)) == 1
    with pytest.raises(ValueError, match=f"'AAA': {need - 1} rows, at least {need}"):
        prepare_symbol(bars(need - 1), CFG)


# ---- the prepared contract ----------------------------------------------------------------
def test_prepared_symbol_contract() -> None:
    df = bars(600)
    (p,) = prepare_symbol(df, CFG)
    n = len(df) - BAR_WARMUP - (CFG.seq_len - 1) - 5
    assert p.n_samples == n and p.features.shape == (n + CFG.seq_len - 1, 16)
    assert p.features.dtype == np.float32 and p.features.flags.c_contiguous
    assert np.isfinite(p.features).all()
    assert p.y_return.dtype == np.float32 and p.y_class.dtype == np.int64
    # labels: forward log return of the raw close at each sample's decision row
    raw = forward_log_returns(df["close"].to_numpy(), (1, 5))
    first = BAR_WARMUP + CFG.seq_len - 1
    np.testing.assert_allclose(p.y_return, raw[first : first + n], rtol=1e-6)
    np.testing.assert_array_equal(p.y_class, p.classify(p.y_return))
    assert p.sample_times[0] == df["date"].to_numpy()[first]
    # windows: zero-copy views, sample i's window ends at its decision row
    assert np.shares_memory(p.X_seq, p.features) and np.shares_memory(p.X, p.features)
    np.testing.assert_array_equal(p.X_seq[7], p.features[7 : 7 + CFG.seq_len])
    np.testing.assert_array_equal(p.X_seq[:, -1], p.X)
    for split in ("train", "val", "test"):
        for seq in (False, True):
            x, yc, yr = p.split_arrays(split, sequence=seq)
            assert x.flags.c_contiguous and x.dtype == np.float32
            assert len(x) == len(yc) == len(yr) == len(p.splits[split])
    assert p.meta["window"]["test"]["end"].startswith(str(p.sample_times[-1])[:10])
    assert p.meta["kind"] == "bars" and p.meta["config"]["seq_len"] == CFG.seq_len
    # purge "auto" = the longest horizon: no training label reaches the validation block
    assert p.meta["purge"] == 5
    assert p.splits["train"][-1] + 5 < p.splits["val"][0]
    assert p.splits["val"][0] - p.splits["train"][-1] - 1 == 5 + CFG.embargo


def change_after(df: pd.DataFrame, cut: int) -> pd.DataFrame:
    """Copy of df with prices and volumes of rows >= cut replaced by a different path."""
    out = df.copy()
    out.loc[cut:, "close"] *= np.exp(np.linspace(0, 1, len(df) - cut))
    close = out.loc[cut:, ["close"]].to_numpy()
    out.loc[cut:, ["open", "high", "low"]] = close * [1, 1.01, 0.99]
    out.loc[cut:, "volume"] = 5
    return out


def test_scaler_and_thresholds_fit_on_train_only() -> None:
    df = bars(700, seed=4)
    (p,) = prepare_symbol(df, CFG)
    last_train_row = BAR_WARMUP + p.row0 + int(p.splits["train"][-1])  # raw row index
    # scaler: fitted on feature rows up to the last training decision row
    (q,) = prepare_symbol(change_after(df, last_train_row + 1), CFG)
    np.testing.assert_array_equal(p.scaler_mean, q.scaler_mean)
    np.testing.assert_array_equal(p.scaler_std, q.scaler_std)
    assert not np.array_equal(p.features, q.features)  # the later rows did change
    # thresholds: fitted on training labels, which reach max_h rows past the decision row
    (r,) = prepare_symbol(change_after(df, last_train_row + max(CFG.horizons) + 1), CFG)
    np.testing.assert_array_equal(p.thresholds, r.thresholds)
    np.testing.assert_array_equal(p.scaler_mean, r.scaler_mean)
    # and both fits are sensitive to the training rows (the checks above can fail)
    earlier = df.copy()
    earlier.loc[BAR_WARMUP + 50, "close"] *= 1.3
    (e,) = prepare_symbol(earlier, CFG)
    assert not np.array_equal(p.scaler_mean, e.scaler_mean)
    assert not np.array_equal(p.thresholds, e.thresholds)
    # the scaler really standardizes the rows it was fitted on
    fit_rows = p.features[: p.meta["scaler_fit_rows"]].astype(np.float64)
    np.testing.assert_allclose(fit_rows.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(fit_rows.std(0), 1, atol=1e-3)


def test_walk_forward_gives_one_prepared_per_fold() -> None:
    cfg = PrepareConfig(seq_len=10, horizons=(1, 3), split="walk_forward", n_folds=3)
    folds = prepare_symbol(bars(900, seed=2), cfg)
    assert [p.fold for p in folds] == [0, 1, 2]
    tests = np.concatenate([p.splits["test"] for p in folds])
    np.testing.assert_array_equal(tests, np.arange(tests[0], folds[0].n_samples))
    assert not np.array_equal(folds[0].scaler_mean, folds[2].scaler_mean)  # per-fold fit
    assert all(p.meta["n_folds"] == 3 for p in folds)


def test_dict_and_npz_round_trip(tmp_path: Path) -> None:
    (p,) = prepare_symbol(bars(500), CFG)
    q = PreparedSymbol.from_dict(p.to_dict())
    path = str(tmp_path / "p.npz")
    p.save_npz(path)
    r = PreparedSymbol.load_npz(path)
    for other in (q, r):
        assert other.symbol == p.symbol and other.horizons == p.horizons
        for name in ("features", "timestamps", "y_return", "y_class", "thresholds",
                     "scaler_mean", "scaler_std"):
            np.testing.assert_array_equal(getattr(other, name), getattr(p, name))
        for split in p.splits:
            np.testing.assert_array_equal(other.splits[split], p.splits[split])
    assert r.meta["window"] == p.meta["window"] and r.feature_names == p.feature_names


# ---- frames -----------------------------------------------------------------------------
def test_prepare_frame_drops_with_reasons_or_raises() -> None:
    good, short = bars(500, 1, "GOOD"), bars(200, 2, "SHORT")
    broken = bars(500, 3, "BROKEN")
    broken.loc[300, "close"] = np.nan
    df = pd.concat([broken, good, short], ignore_index=True)
    res = prepare_frame(df, CFG)
    assert list(res.prepared) == ["GOOD"]
    assert set(res.dropped) == {"SHORT", "BROKEN"}
    assert "200 rows" in res.dropped["SHORT"] and "NaN close" in res.dropped["BROKEN"]
    with pytest.raises(DataValidationError):
        prepare_frame(df, CFG, on_error="raise")


def test_prepare_frame_unsorted_input_is_sorted_by_validation() -> None:
    df = bars(500, 5, "ZZZ").sample(frac=1.0, random_state=0)
    (p,) = prepare_frame(df, CFG).prepared["ZZZ"]
    (q,) = prepare_symbol(bars(500, 5, "ZZZ"), CFG)
    np.testing.assert_array_equal(p.features, q.features)
    with pytest.raises(ValueError, match="strictly increasing"):
        prepare_symbol(df, CFG)


def test_prepare_lob_end_to_end() -> None:
    df, _ = planted_lob(n_symbols=2, n_snapshots=1500, levels=3, seed=0)
    cfg = PrepareConfig(kind="lob", horizons=(1, 2), seq_len=16)
    res = prepare_frame(df, cfg, on_error="raise")
    (p,) = res.prepared["LOB00"]
    assert p.n_features == 2 + 6 * 3 and p.meta["kind"] == "lob"
    assert p.n_samples == 1500 - LOB_WARMUP - 15 - 2
    assert np.isfinite(p.features).all()


def test_prepare_real_symbols() -> None:
    if not SP500.exists():
        pytest.skip("shared S&P 500 data not present")
    wanted = ["AAPL", "APTV", "XOM"]
    df = pd.read_parquet(SP500, filters=[("symbol", "in", wanted)])
    res = prepare_frame(df, PrepareConfig())
    assert sorted(res.prepared) == ["AAPL", "XOM"] and "APTV" in res.dropped
    (p,) = res.prepared["AAPL"]
    assert p.X_seq.shape[1:] == (60, 16) and np.isfinite(p.features).all()
    counts = np.bincount(p.y_class[p.splits["train"], 0], minlength=3) / len(p.splits["train"])
    assert counts.min() > 0.25  # auto thresholds roughly balance the training classes


# ---- label balance ----------------------------------------------------------------------
def test_a_threshold_that_empties_a_training_class_is_warned_about() -> None:
    """A fixed threshold wider than nearly every move puts (nearly) every training label in
    "flat" (and 0 leaves "flat" empty): the symbol is kept, with a warning naming the
    horizon and its class mix; "auto" and a sensible threshold give none."""
    df = bars(400)  # daily moves of about 2%
    wide = prepare_frame(df, PrepareConfig(seq_len=20, horizons=(1, 5), threshold=(0.2, 0.01)))
    assert list(wide.prepared) == ["AAA"]
    warning = wide.warnings["AAA"]
    assert "threshold [0.2, 0.01] leaves a class under 5% of the training labels" in warning
    assert "h=1 (tau 0.2): 0.0% down / 100.0% flat / 0.0% up" in warning
    assert "h=5" not in warning  # a 1% band at h=5 leaves every class well filled
    assert wide.prepared["AAA"][0].meta["label_imbalance"] in warning

    zero = prepare_frame(df, PrepareConfig(seq_len=20, horizons=(1, 5), threshold=0.0))
    assert "0.0% flat" in zero.warnings["AAA"] and "h=5" in zero.warnings["AAA"]

    for threshold in ("auto", 0.005):
        ok = prepare_frame(df, PrepareConfig(seq_len=20, horizons=(1, 5), threshold=threshold))
        assert ok.warnings == {} and ok.prepared["AAA"][0].meta["label_imbalance"] is None


def test_label_warnings_join_the_validation_warnings_per_symbol_and_fold() -> None:
    df = bars(600)
    df = df[(df.index < 300) | (df.index >= 310)].copy()
    df.loc[df.index >= 310, "date"] += pd.Timedelta(days=60)  # one long gap
    cfg = PrepareConfig(seq_len=20, horizons=(1,), threshold=0.3, split="walk_forward",
                        n_folds=2)
    result = prepare_frame(df, cfg)
    warning = result.warnings["AAA"]
    assert warning.startswith(result.report.warnings["AAA"] + "; threshold 0.3 leaves a class")
    assert "training labels: fold 0: h=1 (tau 0.3): 0.0% down / 100.0% flat" in warning
    assert "; fold 1: h=1 (tau 0.3)" in warning and warning.count("Models can hardly") == 1


def test_data_window_gives_iso_times_and_counts_per_split() -> None:
    """What a saved model records about its data: each split's first and last decision
    time as plain ISO 8601 (no nanosecond padding) and its sample count."""
    (p,) = prepare_symbol(bars(600), CFG)
    window = p.data_window()
    assert set(window) == {"train", "val", "test"}
    for split, idx in p.splits.items():
        times = p.sample_times[idx]
        assert window[split]["n"] == idx.size
        assert window[split]["start"] == pd.Timestamp(times[0]).isoformat()
        assert window[split]["end"] == pd.Timestamp(times[-1]).isoformat()
        assert len(window[split]["start"]) == 19  # 2015-06-01T00:00:00
    intraday = bars(600).assign(date=pd.date_range("2021-01-04 09:30:00.5", periods=600,
                                                   freq="1min"))
    (q,) = prepare_symbol(intraday, CFG)
    assert q.data_window()["train"]["start"].endswith(".5")


@pytest.mark.parametrize("split", ["holdout", "walk_forward"])
def test_prepared_splits_are_the_purged_and_embargoed_splits_of_the_config(split: str) -> None:
    """purge ("auto" = 8) != embargo (3), so swapping them or dropping either shows."""
    cfg = PrepareConfig(seq_len=10, horizons=(1, 8), split=split, n_folds=3, embargo=3)
    folds = prepare_symbol(bars(900, seed=6), cfg)
    n = folds[0].n_samples
    expected = ([holdout_split(n, 0.7, 0.15, 0.15, 8, 3)] if split == "holdout"
                else walk_forward_splits(n, 3, 0.7, 0.15, 8, 3))
    assert len(folds) == len(expected)
    for p, want in zip(folds, expected, strict=True):
        for name in ("train", "val", "test"):
            np.testing.assert_array_equal(p.splits[name], want[name], err_msg=name)
        for early, late in (("train", "val"), ("val", "test")):
            assert p.splits[late][0] - p.splits[early][-1] - 1 == 8 + 3  # exact gap
            assert p.splits[early][-1] + 8 < p.splits[late][0]  # no label reaches `late`


def test_each_walk_forward_fold_fits_its_thresholds_on_its_own_training_labels() -> None:
    """A later fold's training window holds the earlier folds' test blocks: fold 0 must
    not take its class thresholds from there."""
    cfg = PrepareConfig(seq_len=10, horizons=(1, 3), split="walk_forward", n_folds=3)
    df = bars(900, seed=2)
    folds = prepare_symbol(df, cfg)
    for p in folds:
        np.testing.assert_array_equal(
            p.thresholds, fit_thresholds(p.y_return[p.splits["train"]], "auto"))
        np.testing.assert_array_equal(p.y_class, p.classify(p.y_return))
    assert not np.array_equal(folds[0].thresholds, folds[-1].thresholds)
    # prices after fold 0's last training label change nothing in fold 0's labels
    p0 = folds[0]
    cut = BAR_WARMUP + p0.row0 + int(p0.splits["train"][-1]) + max(cfg.horizons) + 1
    q0 = prepare_symbol(change_after(df, cut), cfg)[0]
    np.testing.assert_array_equal(p0.thresholds, q0.thresholds)


def test_the_recorded_window_holds_each_splits_decision_times(tmp_path: Path) -> None:
    """meta["window"], which a saved model keeps as its data_meta, records each split's
    first and last decision time: bar warm-up + seq_len - 1 + the sample index, as
    data_window() does, not the bar seq_len - 1 rows earlier where the sample's input
    window begins (train would seem to start 19 bars early here)."""
    from models.linear import fit_linear

    df = bars(600)
    (p,) = prepare_symbol(df, CFG)
    dates = df["date"].to_numpy()
    window = p.data_window()
    for split, idx in p.splits.items():
        first, last = (pd.Timestamp(dates[BAR_WARMUP + p.row0 + int(i)]).isoformat()
                       for i in (idx[0], idx[-1]))
        assert p.meta["window"][split] == {"start": first, "end": last,
                                           "n_samples": idx.size}, split
        assert (window[split]["start"], window[split]["end"]) == (first, last), split
    fit_linear("ols", p).save(str(tmp_path))
    saved = json.loads((tmp_path / "metadata.json").read_text())
    assert saved["data_meta"]["window"]["train"]["start"] == pd.Timestamp(
        dates[BAR_WARMUP + p.row0]).isoformat()


def test_the_label_warning_judges_the_training_labels_alone() -> None:
    """The warning says "of the training labels", and it is those a model learns from:
    prices that barely move through the last training label and swing after it leave
    training with 100% "flat" at a 1% threshold, while val and test (and all labels
    together) have every class well filled."""
    cfg = PrepareConfig(seq_len=20, horizons=(1,), threshold=0.01)
    df = bars(600)
    (p,) = prepare_symbol(df, cfg)
    last_label_bar = BAR_WARMUP + p.row0 + int(p.splits["train"][-1]) + 1
    rng = np.random.default_rng(1)
    steps = np.where(np.arange(600) <= last_label_bar, 0.002, 0.03) * rng.standard_normal(600)
    close = 40 * np.exp(np.cumsum(steps))
    result = prepare_frame(df.assign(close=close, open=close, high=close * 1.01,
                                     low=close * 0.99), cfg)
    (q,) = result.prepared["AAA"]
    np.testing.assert_array_equal(q.splits["train"], p.splits["train"])
    assert "training labels: h=1 (tau 0.01): 0.0% down / 100.0% flat / 0.0% up" in (
        result.warnings.get("AAA", ""))
    assert label_imbalance(q.y_class, q.horizons, q.thresholds) is None  # all labels: fine
    later = np.concatenate([q.splits["val"], q.splits["test"]])
    assert np.bincount(q.y_class[later, 0], minlength=3).min() / later.size > 0.2
