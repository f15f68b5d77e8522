"""Training-memory estimate and automatic batch size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.config import ModelDims, TrainConfig
from models.training import auto_batch_size, estimate_memory

DIMS = ModelDims(n_features=8, seq_len=12, n_horizons=2)


class Tab(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(8, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 6)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(-1, 2, 3)  # [B, F] -> [B, 2, 3]


class Seq(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, 32, batch_first=True)
        self.head = nn.Linear(32, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1]).reshape(-1, 2, 3)  # [B, L, F] -> [B, 2, 3]


def param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


@pytest.mark.parametrize("module, kind", [(Tab(), "tabular"), (Seq(), "sequence")])
def test_estimate_covers_adamw_state_and_grows_with_batch(module, kind):
    cfg = TrainConfig()
    small = estimate_memory(module, DIMS, kind, 32, cfg)
    large = estimate_memory(module, DIMS, kind, 256, cfg)
    assert small["total"] >= param_bytes(module) * (1 + 1 + 2)
    assert small["optimizer_state"] == 2 * param_bytes(module)
    assert small["total"] == sum(
        small[k] for k in ("parameters", "buffers", "gradients", "optimizer_state", "activations",
                           "inputs")
    )  # fmt: skip
    assert large["activations"] > small["activations"] > 0 and large["total"] > small["total"]
    # linear in the batch size: equal increments for equal steps
    mid = estimate_memory(module, DIMS, kind, 144, cfg)
    assert mid["activations"] - small["activations"] == pytest.approx(
        large["activations"] - mid["activations"], rel=0.01
    )


def test_sequence_activations_scale_with_window_length():
    short = estimate_memory(Seq(), ModelDims(8, 12, 2), "sequence", 64, TrainConfig())
    long = estimate_memory(Seq(), ModelDims(8, 48, 2), "sequence", 64, TrainConfig())
    assert long["activations"] > 3 * short["activations"]


def test_sgd_needs_less_optimizer_state():
    adamw = estimate_memory(Tab(), DIMS, "tabular", 64, TrainConfig())
    sgd = estimate_memory(Tab(), DIMS, "tabular", 64, TrainConfig(optimizer="sgd"))
    assert sgd["optimizer_state"] * 2 == adamw["optimizer_state"]


def test_estimate_leaves_module_and_rng_untouched():
    module = Tab().train()
    running = module.net[1].running_mean.clone()
    rng = torch.get_rng_state()
    estimate_memory(module, DIMS, "tabular", 64, TrainConfig())
    assert torch.equal(module.net[1].running_mean, running) and module.training
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("module, kind", [(Tab(), "tabular"), (Seq(), "sequence")])
def test_auto_batch_size_respects_the_budget(module, kind):
    cfg = TrainConfig()
    fixed = estimate_memory(module, DIMS, kind, 1, cfg)["total"]
    budget = fixed + 200 * int(estimate_memory(module, DIMS, kind, 1, cfg)["per_sample_bytes"])
    batch = auto_batch_size(module, DIMS, kind, budget, cfg)
    assert 8 <= batch <= 200 and batch % 8 == 0
    assert estimate_memory(module, DIMS, kind, batch, cfg)["total"] <= budget
    assert estimate_memory(module, DIMS, kind, batch + 8, cfg)["total"] > budget
    assert auto_batch_size(module, DIMS, kind, 10**12, cfg, max_batch=512) == 512
    with pytest.raises(ValueError, match="raise the budget"):
        auto_batch_size(module, DIMS, kind, param_bytes(module), cfg)


def test_zoo_model_estimate():
    from models.registry import build_module, resolve

    resolved = resolve("lstm", "fast")
    dims = ModelDims(8, resolved.seq_len, 2)
    module = build_module("lstm", resolved.model, dims)
    est = estimate_memory(module, dims, "sequence", resolved.train.batch_size, resolved.train)
    assert est["activations"] > est["inputs"] > 0 and est["precision"] == "fp32"
