"""The one training loop: learning, schedules, clipping, class weights, seeding, callbacks,
early stopping and batch gathering, on tiny synthetic data (CPU, seconds)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from data.prepared import PreparedSymbol
from models.config import TrainConfig
from models.training import (
    EPOCH_METRICS,
    LrSchedule,
    StopAfter,
    TrainData,
    class_weights,
    compute_loss,
    train,
)
from models.training import loop as loop_module
from tests.models._planted import planted as _planted


def planted(n: int = 600, f: int = 5, seq_len: int = 6, seed: int = 0) -> PreparedSymbol:
    return _planted(n, f, seq_len, (1, 2), seed)


class TinyMLP(nn.Module):
    def __init__(self, f: int, h: int, task: str = "direction", dropout: float = 0.0) -> None:
        super().__init__()
        self.h, self.k = h, 3 if task == "direction" else 1
        self.net = nn.Sequential(
            nn.Linear(f, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, h * self.k)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)  # [B, F] -> [B, H*K]
        return out.reshape(-1, self.h, 3) if self.k == 3 else out


def fit(cfg: TrainConfig, prepared=None, seed: int = 0, task: str = "direction", **kw):
    prepared = prepared or planted()
    torch.manual_seed(seed)
    module = TinyMLP(prepared.n_features, len(prepared.horizons), task, dropout=0.1)
    data = TrainData.from_prepared(prepared, "tabular", task)
    return module, train(module, data, cfg, task=task, **kw)


FAST = TrainConfig(epochs=8, batch_size=64, lr=1e-2, patience=8)


def test_learns_a_planted_signal():
    prepared = planted()
    module, result = fit(FAST, prepared)
    x, y, _ = prepared.split_arrays("test", sequence=False)
    with torch.no_grad():
        pred = module.eval()(torch.from_numpy(x)).argmax(-1).numpy()
    majority = max(np.mean(y == c) for c in range(3))
    assert np.mean(pred == y) > majority + 0.25
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[result.best_epoch]["val_loss"] == result.best_metric


def test_return_task_reduces_scaled_mse():
    _, result = fit(FAST, task="return")
    first, best = result.history[0]["val_mse"], result.best_metric
    assert result.monitor == "val_mse" and best < 0.5 * first


def test_metrics_have_every_field_and_time_split():
    _, result = fit(TrainConfig(epochs=2, batch_size=64))
    for row in result.history:
        assert set(EPOCH_METRICS) <= set(row) and {"val_f1", "val_accuracy"} <= set(row)
        parts = row["compute_seconds"] + row["eval_seconds"] + row["other_seconds"]
        assert math.isclose(parts, row["epoch_seconds"], rel_tol=1e-6)
        assert 0 <= row["overhead_fraction"] < 1 and row["samples_per_sec"] > 0
    assert 0 <= result.overhead_fraction < 1 and result.samples_per_sec > 0


def test_seeded_runs_are_identical_and_seed_matters():
    m1, r1 = fit(FAST)
    m2, r2 = fit(FAST)
    m3, r3 = fit(dataclasses.replace(FAST, seed=7))
    assert [h["train_loss"] for h in r1.history] == [h["train_loss"] for h in r2.history]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [h["train_loss"] for h in r1.history] != [h["train_loss"] for h in r3.history]


class Recorder:
    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.rows: list[dict] = []

    def on_epoch_end(self, epoch, metrics, trainer_state):
        self.epochs.append(epoch)
        self.rows.append(metrics)
        self.last_state = trainer_state()
        return False


def test_callbacks_see_every_epoch_and_can_stop():
    rec = Recorder()
    _, result = fit(TrainConfig(epochs=4, batch_size=64, patience=10), callbacks=[rec])
    assert rec.epochs == [0, 1, 2, 3] and result.stop_reason == "epochs"
    assert [r["train_loss"] for r in rec.rows] == [h["train_loss"] for h in result.history]
    rec2 = Recorder()
    _, stopped = fit(TrainConfig(epochs=10, batch_size=64), callbacks=[rec2, StopAfter(2)])
    assert rec2.epochs == [0, 1] and stopped.epochs_run == 2 and stopped.stop_reason == "callback"


def test_early_stopping_restores_best_weights(monkeypatch):
    sequence = iter([1.0, 0.7, 0.8, 0.9, 0.75, 0.6, 0.5])  # best at epoch 1, then 3 worse

    def fake_evaluate(module, data, split, **kw):
        value = next(sequence)
        return {"loss": value, "metric": value, "f1": 0.0, "accuracy": 0.0, "forward_seconds": 0}

    monkeypatch.setattr(loop_module, "evaluate", fake_evaluate)
    rec = Recorder()
    snapshots = []

    class Snap:
        def on_epoch_end(self, epoch, metrics, trainer_state):
            snapshots.append(trainer_state()["model"])

    cfg = TrainConfig(epochs=7, batch_size=64, lr=1e-2, patience=3, min_delta=0.0)
    module, result = fit(cfg, callbacks=[rec, Snap()])
    assert result.stop_reason == "early_stopping" and result.epochs_run == 5
    assert result.best_epoch == 1 and result.best_metric == 0.7
    for name, value in module.state_dict().items():
        assert torch.equal(value, snapshots[1][name])
        assert not torch.equal(value, snapshots[-1][name])


def test_restore_best_false_keeps_the_last_epochs_weights(monkeypatch):
    """A refit on train+val: its val samples are in-sample, so no epoch is chosen on them."""
    sequence = iter([1.0, 0.7, 0.8, 0.9])  # the best val epoch would be 1

    def fake_evaluate(module, data, split, **kw):
        value = next(sequence)
        return {"loss": value, "metric": value, "f1": 0.0, "accuracy": 0.0, "forward_seconds": 0}

    monkeypatch.setattr(loop_module, "evaluate", fake_evaluate)
    snapshots = []

    class Snap:
        def on_epoch_end(self, epoch, metrics, trainer_state):
            snapshots.append(trainer_state()["model"])

    cfg = TrainConfig(epochs=4, batch_size=64, lr=1e-2, patience=10, restore_best=False)
    module, result = fit(cfg, callbacks=[Snap()])
    assert result.epochs_run == 4 and result.best_epoch == 3 and result.best_metric == 0.9
    for name, value in module.state_dict().items():
        assert torch.equal(value, snapshots[-1][name])
    assert any(not torch.equal(v, snapshots[1][n]) for n, v in module.state_dict().items())


def test_restore_best_false_on_resume_ignores_the_checkpoints_best_snapshot(monkeypatch):
    """A refit resumed from a checkpoint that holds a best-val snapshot (written before
    restore_best existed, or with it on) still ends with its last epoch's weights."""
    sequence = iter([1.0, 0.5, 0.9, 0.95, 0.97, 0.99])  # best at epoch 1

    def fake_evaluate(module, data, split, **kw):
        value = next(sequence)
        return {"loss": value, "metric": value, "f1": 0.0, "accuracy": 0.0, "forward_seconds": 0}

    monkeypatch.setattr(loop_module, "evaluate", fake_evaluate)
    states, snapshots = [], []

    class KilledAfterEpoch2:
        def on_epoch_end(self, epoch, metrics, trainer_state):
            states.append(trainer_state())
            return epoch == 2

    class Snap:
        def on_epoch_end(self, epoch, metrics, trainer_state):
            snapshots.append(trainer_state()["model"])

    cfg = TrainConfig(epochs=6, batch_size=64, lr=1e-2, patience=100)
    fit(cfg, callbacks=[KilledAfterEpoch2()])
    assert states[-1]["best_weights"] is not None
    module, result = fit(dataclasses.replace(cfg, restore_best=False),
                         resume_state=states[-1], callbacks=[Snap()])
    assert result.best_epoch == 5 and len(snapshots) == 3
    for name, value in module.state_dict().items():
        assert torch.equal(value, snapshots[-1][name])


def test_min_delta_counts_small_gains_as_no_improvement(monkeypatch):
    values = iter([1.0, 0.99, 0.98, 0.97, 0.96])
    monkeypatch.setattr(
        loop_module, "evaluate",
        lambda *a, **k: {"loss": (v := next(values)), "metric": v, "forward_seconds": 0.0},
    )  # fmt: skip
    cfg = TrainConfig(epochs=5, batch_size=64, patience=2, min_delta=0.05, scheduler="none")
    _, result = fit(cfg)
    assert result.best_epoch == 0 and result.epochs_run == 3


def test_cosine_schedule_warms_up_then_decays():
    s = LrSchedule("cosine", steps_per_epoch=5, total_steps=50, warmup_steps=10, step_size=1,
                   gamma=0.5)  # fmt: skip
    lrs = [s(i) for i in range(50)]
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[10] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[30] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 40)))
    assert lrs[-1] < 0.01


@pytest.mark.parametrize(
    "scheduler, expected",
    [
        ("step", [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]),
        ("exponential", [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125]),
        ("none", [1.0] * 6),
    ],
)
def test_epoch_schedules_seen_by_the_loop(scheduler, expected):
    cfg = TrainConfig(epochs=6, batch_size=64, lr=0.1, scheduler=scheduler, warmup_epochs=0,
                      step_size=2, gamma=0.5, patience=10)  # fmt: skip
    rec = Recorder()
    fit(cfg, callbacks=[rec])
    assert [r["lr"] for r in rec.rows] == pytest.approx([0.1 * e for e in expected])


def test_loop_lr_follows_cosine_with_warmup():
    cfg = TrainConfig(epochs=6, batch_size=64, lr=0.1, warmup_epochs=2, patience=10)
    rec = Recorder()
    fit(cfg, callbacks=[rec])
    lrs = [r["lr"] for r in rec.rows]  # lr of each epoch's last step
    steps = 7  # 420 training samples / 64
    expected = LrSchedule("cosine", steps, 6 * steps, 2 * steps, 10, 0.5)
    assert lrs == pytest.approx([0.1 * expected((e + 1) * steps - 1) for e in range(6)])
    assert lrs[1] == pytest.approx(0.1) and lrs[2] < lrs[1] and lrs[5] < 0.01


def test_plateau_lowers_lr_when_metric_stalls(monkeypatch):
    values = iter([1.0] * 6)
    monkeypatch.setattr(
        loop_module, "evaluate",
        lambda *a, **k: {"loss": (v := next(values)), "metric": v, "forward_seconds": 0.0},
    )  # fmt: skip
    # early-stopping patience 4 -> plateau patience 2: the lr halves after the 3rd bad epoch
    cfg = TrainConfig(epochs=6, batch_size=64, lr=0.1, scheduler="plateau", patience=4)
    rec = Recorder()
    fit(cfg, callbacks=[rec])
    assert [r["lr"] for r in rec.rows] == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05])


def test_grad_clipping_bounds_the_update():
    # One SGD step, no momentum history yet, no weight decay: update = -lr * clipped grad.
    prepared = planted(n=200)
    prepared.features[:] *= 100.0  # huge inputs -> huge gradients

    def update_norm(clip: float) -> float:
        cfg = TrainConfig(epochs=1, batch_size=1000, lr=1.0, optimizer="sgd", weight_decay=0.0,
                          scheduler="none", grad_clip=clip)  # fmt: skip
        torch.manual_seed(0)
        module = TinyMLP(prepared.n_features, 2)
        before = torch.cat([p.detach().flatten().clone() for p in module.parameters()])
        train(module, TrainData.from_prepared(prepared, "tabular", "direction"), cfg,
              task="direction")  # fmt: skip
        after = torch.cat([p.detach().flatten() for p in module.parameters()])
        return float((after - before).norm())

    assert update_norm(0.5) == pytest.approx(0.5, rel=1e-4)
    assert update_norm(0.0) > 5.0


def test_class_weights_are_inverse_frequency_and_change_the_loss():
    y = torch.tensor([[0, 1], [0, 1], [0, 2], [1, 2]])  # (N=4, H=2)
    w = class_weights(y)
    assert w[0].tolist() == pytest.approx([4 / (3 * 3), 4 / 3, 0.0])
    assert w[1].tolist() == pytest.approx([0.0, 4 / 6, 4 / 6])
    logits = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0))
    plain, weighted = compute_loss(logits, y, "direction"), compute_loss(logits, y, "direction", w)
    assert not math.isclose(float(plain), float(weighted))
    balanced = torch.tensor([[0], [1], [2]])
    lb = torch.randn(3, 1, 3)
    assert float(compute_loss(lb, balanced, "direction", class_weights(balanced))) == (
        pytest.approx(float(compute_loss(lb, balanced, "direction")))
    )
    _, r_plain = fit(TrainConfig(epochs=1, batch_size=64))
    _, r_weighted = fit(TrainConfig(epochs=1, batch_size=64, class_weights=True))
    assert r_plain.history[0]["train_loss"] != r_weighted.history[0]["train_loss"]


def test_sequence_batches_gather_the_prepared_windows():
    prepared = planted(n=50, seq_len=6)
    idx = prepared.splits["val"]
    full = TrainData.from_prepared(prepared, "sequence", "direction")
    x, y = full.batch("val", torch.arange(len(idx)))
    assert torch.equal(x, torch.from_numpy(prepared.X_seq[idx].copy()))
    assert torch.equal(y, torch.from_numpy(prepared.y_class[idx]))
    short = TrainData.from_prepared(prepared, "sequence", "direction", seq_len=3)
    xs, _ = short.batch("val", torch.arange(len(idx)))
    assert torch.equal(xs, torch.from_numpy(prepared.X_seq[idx][:, -3:].copy()))
    tab = TrainData.from_prepared(prepared, "tabular", "direction")
    xt, _ = tab.batch("val", torch.arange(len(idx)))
    assert torch.equal(xt, torch.from_numpy(prepared.X[idx]))
    assert full.features.shape == prepared.features.shape  # one (T, F) tensor, no windows
    with pytest.raises(ValueError, match="seq_len"):
        TrainData.from_prepared(prepared, "sequence", "direction", seq_len=7)


def test_contract_errors_name_the_fix():
    prepared = planted(n=100)
    data = TrainData.from_prepared(prepared, "tabular", "direction")
    with pytest.raises(ValueError, match="TrainData was built"):
        train(TinyMLP(5, 2), data, TrainConfig(epochs=1), task="return")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        train(TinyMLP(5, 2), data, TrainConfig(epochs=1, amp="bf16", device="cpu"),
              task="direction")  # fmt: skip
    with pytest.raises(ValueError, match=r"\(B, H, 3\)"):
        train(TinyMLP(5, 2, task="return"), data, TrainConfig(epochs=1), task="direction")


def test_precision_choice_per_device(monkeypatch):
    from models.training import resolve_precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("auto", cpu).name == "fp32"
    assert resolve_precision("off", cuda).name == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    auto = resolve_precision("auto", cuda)
    assert auto.name == "bf16" and not auto.use_scaler
    assert resolve_precision("fp16", cuda).use_scaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", cuda).name == "fp16"
    with pytest.raises(ValueError, match="no bf16"):
        resolve_precision("bf16", cuda)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        # checked only when the step/exponential/plateau scheduler was built: on the cluster
        ({"scheduler": "step", "gamma": 2.0}, r"TrainConfig.gamma=2.0: use a decay factor"),
        ({"scheduler": "exponential", "gamma": 0.0}, r"TrainConfig.gamma=0.0"),
        ({"gamma": -1.0}, r"TrainConfig.gamma=-1.0"),
        ({"scheduler": "step", "step_size": 0}, "TrainConfig.step_size=0: use at least 1"),
        ({"min_delta": -0.5}, r"TrainConfig.min_delta=-0.5: use 0 or a small positive"),
        ({"device": "abc"}, "TrainConfig.device='abc': choose auto, cpu, cuda or cuda:N"),
        ({"device": ""}, "TrainConfig.device='': choose auto"),
        ({"device": "cuda:x"}, "TrainConfig.device='cuda:x'"),
        ({"seed": 10**300}, r"TrainConfig.seed=1000.*: use an integer in \[0, 4294967295\]"),
        ({"seed": -1}, r"TrainConfig.seed=-1"),
    ],
)
def test_train_config_refuses_what_the_loop_cannot_use(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**values)
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


def test_train_config_keeps_the_values_the_loop_uses():
    for device in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert TrainConfig(device=device).device == device
    cfg = TrainConfig(scheduler="step", gamma=0.9, step_size=1, min_delta=0.0, seed=2**32 - 1)
    assert (cfg.gamma, cfg.step_size, cfg.min_delta, cfg.seed) == (0.9, 1, 0.0, 2**32 - 1)


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("gamma", r"train.gamma: expected a number, got None \(null\)"),
        ("min_delta", r"train.min_delta: expected a number, got None"),
        ("step_size", r"train.step_size: expected an integer, got None"),
        ("restore_best", r"train.restore_best: expected true or false, got None"),
        ("device", r"train.device: expected a string, got None"),
    ],
)
def test_null_is_not_a_value_of_a_typed_field(field, message):
    """JSON null passed straight through: {restore_best: null} silently meant False, and
    {gamma: null} or an LSTM's {bidirectional: null} failed the run on the cluster."""
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict({field: None})


def test_optional_scalar_fields_keep_their_type():
    """`int | None` takes None or an integer; 3.5 was truncated to 3 and -0.1 to 0."""
    from models.config import config_from_dict
    from models.linear.ols import OLSConfig

    assert config_from_dict(OLSConfig, {"hac_maxlags": None}).hac_maxlags is None
    assert config_from_dict(OLSConfig, {"hac_maxlags": 4.0}).hac_maxlags == 4
    for bad in (3.5, -0.1, "4", True):
        with pytest.raises(ValueError, match=r"OLSConfig.hac_maxlags: expected an integer"):
            config_from_dict(OLSConfig, {"hac_maxlags": bad})


def test_read_only_features_from_the_object_store_are_shared_without_a_warning():
    """Ray's object store gives read-only arrays; torch warned about them in every deep
    run's log. The tensor shares the array (no copy) and nothing writes to it."""
    import warnings

    prepared = planted(n=50, seq_len=6)
    features = prepared.features.copy()
    features.flags.writeable = False
    prepared = dataclasses.replace(prepared, features=features)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = TrainData.from_prepared(prepared, "sequence", "direction")
    assert data.features.data_ptr() == features.ctypes.data  # shared, not copied
