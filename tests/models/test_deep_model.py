"""fit_deep + DeepModel with real zoo models: predictions, save/load round trip,
return task, interpret hooks, resume through fit_deep."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data.prepared import PreparedSymbol
from models.deep import DeepModel, fit_deep
from models.training import CheckpointEvery, StopAfter
from tests.models._planted import planted as _planted


def planted(n: int = 500, f: int = 5, seq_len: int = 10, seed: int = 2) -> PreparedSymbol:
    return _planted(n, f, seq_len, (1, 5), seed, return_scales=(1.0, 2.0))


PREPARED = planted()
FAST = {"seq_len": 8, "train.epochs": 4, "train.lr": 1e-2}


def inputs(model: DeepModel, split: str = "test") -> np.ndarray:
    return PREPARED.split_arrays(split, sequence=model.input_kind == "sequence")[0]


@pytest.fixture(scope="module")
def mlp() -> DeepModel:
    with torch.random.fork_rng():
        return fit_deep("mlp", PREPARED, overrides={**FAST, "train.epochs": 8})


@pytest.fixture(scope="module")
def lstm() -> DeepModel:
    with torch.random.fork_rng():
        return fit_deep("lstm", PREPARED, overrides=FAST)


def test_mlp_learns_and_predicts_consistently(mlp):
    x = inputs(mlp)
    proba = mlp.predict_proba(x)
    y = PREPARED.y_class[PREPARED.splits["test"]]
    assert proba.shape == (len(x), 2, 3) and np.allclose(proba.sum(-1), 1, atol=1e-5)
    assert np.array_equal(mlp.predict(x), proba.argmax(-1))
    majority = max(np.mean(y == c) for c in range(3))
    assert np.mean(mlp.predict(x) == y) > majority + 0.2
    assert mlp.predict_return(x) is None
    assert mlp.result.epochs_run >= 1 and mlp.history == mlp.result.history
    assert mlp.result.history[mlp.result.best_epoch]["val_loss"] == mlp.result.best_metric


def test_leaderboard_rows_report_the_training_run(mlp):
    """Each row carries the run's own figures: epochs run (a count) and the best epoch (a
    0-based index, so always below it), train seconds and the module's parameter count."""
    from models.metrics import leaderboard_rows

    rows = leaderboard_rows("PLT", "mlp", mlp, PREPARED)
    assert len(rows) == 2 * 2  # val/test x horizons
    n_params = sum(p.numel() for p in mlp.module.parameters())
    for r in rows:
        assert r["epochs"] == mlp.result.epochs_run
        assert r["best_epoch"] == mlp.result.best_epoch + 1  # counted from 1, as epochs
        assert 1 <= r["best_epoch"] <= r["epochs"]
        assert r["train_seconds"] == pytest.approx(mlp.result.train_seconds)
        assert r["params"] == n_params > 0


def test_batched_inference_matches_one_batch(lstm):
    x = inputs(lstm)
    assert np.allclose(lstm.outputs(x, batch_size=7), lstm.outputs(x), atol=1e-6)


def test_sequence_model_takes_the_last_steps_of_longer_windows(lstm):
    x = inputs(lstm)  # prepared windows have 10 steps, the model uses 8
    assert x.shape[1] == 10 and lstm.seq_len == 8
    assert np.array_equal(lstm.predict_proba(x), lstm.predict_proba(x[:, -8:]))
    with pytest.raises(ValueError, match="expected windows"):
        lstm.predict_proba(x[:, -5:])
    with pytest.raises(ValueError, match="expected windows"):
        lstm.predict(PREPARED.X[PREPARED.splits["test"]])  # tabular rows to a sequence model


def test_leaderboard_scores_a_shorter_model_on_the_most_recent_steps(lstm):
    """The leaderboard feeds a model trained on 8 steps the last 8 of the prepared 10-step
    windows (the same decision time), not the first 8 (two bars stale)."""
    from models.metrics import direction_metrics, leaderboard_rows

    x = inputs(lstm)
    pred = lstm.predict(x[:, -8:])
    assert not np.array_equal(lstm.predict(x[:, :8]), pred)  # the choice shows here
    y = PREPARED.y_class[PREPARED.splits["test"]]
    rows = leaderboard_rows("PLT", "lstm", lstm, PREPARED, splits=("test",))
    for j, r in enumerate(rows):
        expected = direction_metrics(y[:, j], pred[:, j], horizon=r["horizon"])
        assert r["accuracy"] == expected["accuracy"] and r["macro_f1"] == expected["macro_f1"]


def test_tabular_model_refuses_windows(mlp):
    with pytest.raises(ValueError, match="expected tabular inputs"):
        mlp.predict(PREPARED.split_arrays("test", sequence=True)[0])


@pytest.mark.parametrize("fixture", ["mlp", "lstm"])
def test_save_load_round_trip(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    model.save(str(tmp_path))
    loaded = DeepModel.load(str(tmp_path))
    x = inputs(model)
    assert np.array_equal(model.predict_proba(x), loaded.predict_proba(x))
    assert loaded.result.best_epoch == model.result.best_epoch
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert state.keys() == model.module.state_dict().keys()
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["model"] == fixture and meta["kind"] == "deep" and meta["preset"] == "fast"
    assert meta["feature_names"] == list(PREPARED.feature_names)
    assert meta["thresholds"] == pytest.approx(PREPARED.thresholds.tolist())
    assert meta["data_window"]["train"]["n"] == 350 and meta["data_meta"] == {"source": "synthetic"}
    assert set(meta["versions"]) == {"torch", "numpy", "quantray"}
    assert len(meta["history"]) == model.result.epochs_run
    assert meta["train_config"]["lr"] == 1e-2 and meta["dims"]["n_horizons"] == 2


def test_interpret_hooks(lstm, mlp):
    x = inputs(lstm)[:4]
    hidden = lstm.interpret(x)["hidden_states"]
    assert hidden.shape[:2] == (4, 8) and np.isfinite(hidden).all()
    with pytest.raises(ValueError, match="no interpret hook"):
        mlp.interpret(inputs(mlp)[:4])


def test_return_task_predicts_returns_and_band_probabilities(tmp_path):
    model = fit_deep("mlp", PREPARED, overrides={**FAST, "train.epochs": 8}, task="return")
    x = inputs(model)
    r = model.predict_return(x)
    truth = PREPARED.y_return[PREPARED.splits["test"]]
    assert r.shape == truth.shape
    assert np.corrcoef(r[:, 1], truth[:, 1])[0, 1] > 0.8  # learned the planted signal
    assert np.allclose(model.target_scale, PREPARED.y_return[PREPARED.splits["train"]].std(0))
    proba = model.predict_proba(x)
    assert np.allclose(proba.sum(-1), 1, atol=1e-5) and model.result.monitor == "val_mse"
    up = r[:, 0] > 3 * PREPARED.thresholds[0]
    assert up.any() and (model.predict(x)[up, 0] == 2).all()
    model.save(str(tmp_path))
    assert np.array_equal(DeepModel.load(str(tmp_path)).predict_return(x), r)


def _calm_and_wild(n: int = 1500, f: int = 4, seq_len: int = 8, seed: int = 5
                   ) -> PreparedSymbol:
    """Returns whose size feature 1 sets (volatility: calm bars move little, wild ones
    a lot) around a small mean from feature 0; thresholds at the 1/3 quantile of |r|, as
    the data layer fits them, so a third of the bars are flat."""
    rng = np.random.default_rng(seed)
    t = n + seq_len - 1
    features = rng.standard_normal((t, f)).astype(np.float32)
    now = features[seq_len - 1:]
    r = 0.001 * now[:, 0] + 0.01 * np.exp(now[:, 1]) * rng.standard_normal(n)
    cut1, cut2, idx = round(n * 0.7), round(n * 0.85), np.arange(n)
    tau = np.quantile(np.abs(r[:cut1]), 1 / 3)
    y = np.where(r > tau, 2, np.where(r < -tau, 0, 1))
    return PreparedSymbol(
        symbol="VOL", features=features, feature_names=tuple(f"f{i}" for i in range(f)),
        timestamps=np.datetime64("2015-01-01", "ns") + np.arange(t) * np.timedelta64(1, "D"),
        y_return=r[:, None].astype(np.float32), y_class=y[:, None].astype(np.int64),
        horizons=(1,), seq_len=seq_len,
        splits={"train": idx[:cut1], "val": idx[cut1:cut2], "test": idx[cut2:]},
        thresholds=np.array([tau], dtype=np.float32), scaler_mean=np.zeros(f, np.float32),
        scaler_std=np.ones(f, np.float32), meta={"source": "synthetic"})


@pytest.mark.parametrize("name", ["mlp", "gru"])
def test_a_return_model_calls_calm_bars_flat(tmp_path, name):
    """The predictive scale is conditional, as a linear model's: with the residual std on
    every bar, P(flat) never won and a deep return model never predicted flat (accuracy
    and macro-F1 far below the baseline's). Calm bars (feature 1 low) are called flat now,
    wild ones not, and the scale survives a save and load."""
    data = _calm_and_wild()
    with torch.random.fork_rng():
        model = fit_deep(name, data, overrides={**FAST, "train.epochs": 3}, task="return")
    x = data.split_arrays("test", sequence=model.input_kind == "sequence")[0]
    calls = model.predict(x)[:, 0]
    vol = data.features[data.seq_len - 1:][data.splits["test"], 1]
    flat = calls == 1
    assert 0.1 < flat.mean() < 0.9, np.bincount(calls, minlength=3)
    assert vol[flat].mean() < vol[~flat].mean() - 0.5  # the calm bars
    truth = data.y_class[data.splits["test"], 0]
    assert (calls[flat] == truth[flat]).mean() > 0.5  # and mostly right there
    model.save(str(tmp_path))
    loaded = DeepModel.load(str(tmp_path))
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x), atol=1e-6)


def test_fit_deep_resumes_from_a_checkpoint_dir(tmp_path):
    full = fit_deep("lstm", PREPARED, overrides=FAST)
    fit_deep("lstm", PREPARED, overrides=FAST,
             callbacks=[CheckpointEvery(tmp_path), StopAfter(2)])  # fmt: skip
    resumed = fit_deep("lstm", PREPARED, overrides=FAST, resume_from=str(tmp_path))
    assert resumed.result.epochs_run == full.result.epochs_run
    got = [h["val_loss"] for h in resumed.history]
    assert got == pytest.approx([h["val_loss"] for h in full.history], rel=1e-5)


def test_fit_deep_rejects_linear_models():
    with pytest.raises(ValueError, match="linear model"):
        fit_deep("ridge", PREPARED)
