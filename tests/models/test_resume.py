"""Checkpoints: an interrupted run resumed from its checkpoint continues the same curve,
and checkpoint files load with weights_only=True."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from data.prepared import PreparedSymbol
from models.config import TrainConfig
from models.training import (
    CheckpointEvery,
    StopAfter,
    TrainData,
    load_checkpoint,
    save_checkpoint,
    train,
)
from tests.models._planted import planted as _planted


def planted(n: int = 300, f: int = 4, seq_len: int = 5, seed: int = 1) -> PreparedSymbol:
    return _planted(n, f, seq_len, (1,), seed, lag_weight=0.5, cuts=(2 / 3, 5 / 6))


class TinyGRU(nn.Module):
    """Sequence model with dropout, so the resumed run also needs the restored RNG."""

    def __init__(self, f: int) -> None:
        super().__init__()
        self.rnn = nn.GRU(f, 8, batch_first=True)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states, _ = self.rnn(x)  # [B, L, F] -> [B, L, 8]
        return self.head(self.drop(states[:, -1])).unsqueeze(1)  # [B, 1, 3]


def run(cfg: TrainConfig, callbacks=(), resume_state=None):
    torch.manual_seed(0)
    module = TinyGRU(4)
    data = TrainData.from_prepared(planted(), "sequence", "direction")
    result = train(module, data, cfg, task="direction", callbacks=callbacks,
                   resume_state=resume_state)  # fmt: skip
    return module, result


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(epochs=6, batch_size=32, lr=5e-3, patience=10),  # adamw + cosine warmup
        TrainConfig(epochs=6, batch_size=32, lr=5e-3, patience=10, optimizer="sgd",
                    scheduler="plateau"),  # fmt: skip
    ],
)
def test_resume_continues_the_uninterrupted_curve(tmp_path, cfg):
    full_module, full = run(cfg)
    ckpt = CheckpointEvery(tmp_path / "ckpt")
    _, first = run(cfg, callbacks=[ckpt, StopAfter(3)])
    assert first.epochs_run == 3 and first.stop_reason == "callback"
    assert ckpt.saved_epochs == [0, 1, 2]
    # a fresh process would start from unrelated RNG states: scramble them
    torch.manual_seed(123)
    np.random.seed(123)
    resumed_module, resumed = run(cfg, resume_state=load_checkpoint(tmp_path / "ckpt"))
    assert resumed.epochs_run == 6
    for key in ("train_loss", "val_loss", "lr"):
        got = [h[key] for h in resumed.history]
        want = [h[key] for h in full.history]
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9), key
    assert resumed.best_epoch == full.best_epoch
    for (k, a), b in zip(full_module.state_dict().items(), resumed_module.state_dict().values(),
                         strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=k)


def test_checkpoint_files_are_plain(tmp_path):
    states = []

    class Grab:
        def on_epoch_end(self, epoch, metrics, trainer_state):
            states.append(trainer_state())

    run(TrainConfig(epochs=2, batch_size=32), callbacks=[Grab()])
    save_checkpoint(tmp_path, states[-1])
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and len(state["history"]) == 2
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda", "shuffle"}
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)
    assert state["optimizer"]["state"] and state["best_weights"].keys() == state["model"].keys()
    summary = json.loads((tmp_path / "checkpoint.json").read_text())
    assert summary["epoch"] == 1 and summary["monitor"] == "val_loss"
    losses = [h["train_loss"] for h in state["history"]]
    assert [h["train_loss"] for h in summary["history"]] == losses
    assert not list(tmp_path.glob("*.tmp"))


def test_resuming_a_finished_run_trains_nothing(tmp_path):
    ckpt = CheckpointEvery(tmp_path)
    module, done = run(TrainConfig(epochs=2, batch_size=32, patience=10), callbacks=[ckpt])
    state = load_checkpoint(tmp_path)
    assert state["finished"] is True
    again_module, again = run(TrainConfig(epochs=2, batch_size=32, patience=10), resume_state=state)
    assert again.stop_reason == "already_finished" and again.epochs_run == 2
    for a, b in zip(module.state_dict().values(), again_module.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_resume_with_other_data_shape_is_refused(tmp_path):
    run(TrainConfig(epochs=1, batch_size=32), callbacks=[CheckpointEvery(tmp_path)])
    with pytest.raises(ValueError, match="steps per epoch"):
        run(TrainConfig(epochs=1, batch_size=16), resume_state=load_checkpoint(tmp_path))
    with pytest.raises(FileNotFoundError, match="save_checkpoint"):
        load_checkpoint(tmp_path / "missing")
    with pytest.raises(ValueError, match="trainer_state"):
        save_checkpoint(tmp_path / "x", {"epoch": 1})


def test_early_stopping_counts_its_patience_across_a_resume(tmp_path):
    """Cut two epochs into a patience of 3 (no improvement since epoch 14): the resumed
    run stops after one more stale epoch, where the uninterrupted one stops, because the
    best metric and the patience counter come back with the checkpoint."""
    cfg = TrainConfig(epochs=30, batch_size=32, lr=5e-2, patience=3)
    _, full = run(cfg)
    assert full.stop_reason == "early_stopping" and full.epochs_run < cfg.epochs
    cut = full.epochs_run - 1  # the last epoch run was the third stale one
    ckpt = CheckpointEvery(tmp_path / "ckpt")
    run(cfg, callbacks=[ckpt, StopAfter(cut)])
    state = load_checkpoint(tmp_path / "ckpt")
    assert state["epoch"] == cut - 1 and state["patience_counter"] == cfg.patience - 1
    _, resumed = run(cfg, resume_state=state)
    assert resumed.stop_reason == "early_stopping"
    assert resumed.epochs_run == full.epochs_run and resumed.best_epoch == full.best_epoch
    assert resumed.best_metric == pytest.approx(full.best_metric, rel=1e-6)


def test_a_resumed_runs_train_seconds_count_the_epochs_before_its_checkpoint(tmp_path):
    """A unit resumed at epoch 9 of 40 reported only the 31 epochs after the resume (37 s
    of 48 s): its train_seconds add the checkpoint's epochs (their epoch and callback
    time), here made long so that this call's own few milliseconds cannot pass for them."""
    cfg = TrainConfig(epochs=4, batch_size=32, patience=10)
    ckpt = CheckpointEvery(tmp_path)
    run(cfg, callbacks=[ckpt, StopAfter(2)])
    state = load_checkpoint(tmp_path)
    for h in state["history"]:
        h["epoch_seconds"], h["callback_seconds"] = 100.0, 5.0
    _, resumed = run(cfg, resume_state=state)
    assert resumed.epochs_run == 4
    assert 210.0 < resumed.train_seconds < 210.0 + 60.0
