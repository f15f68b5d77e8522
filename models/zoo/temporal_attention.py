"""Multi-scale temporal encoder with horizon-aware temporal attention.

Encoder: parallel branches read the window at several time scales (a kernel-3 conv with
dilation s sees 2s + 1 steps; one branch averages over the widest span first), their
outputs are concatenated and mixed into d_model channels per time step. Attention: each
horizon owns a learned query that attends over time, so the 1-day and the 20-day forecasts
can look at different parts of the window. `interpret` returns those weights [B, H, L].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.config import ModelDims
from models.zoo._blocks import (
    MAX_SIZE,
    HorizonHead,
    check_dropout,
    check_positive,
    check_sequence_input,
    sinusoidal_positions,
)

MAX_SCALES = 16  # branches of the encoder


@dataclass(frozen=True)
class TemporalAttentionConfig:
    channels: int = 16  # per scale branch
    scales: tuple[int, ...] = (1, 2, 4)  # conv dilations; receptive field 2s + 1
    d_model: int = 32
    dropout: float = 0.2

    def __post_init__(self) -> None:
        check_positive("temporal_attention", "channels", self.channels, 16)
        check_positive("temporal_attention", "d_model", self.d_model, 32)
        check_dropout("temporal_attention", self.dropout)
        if not self.scales or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.scales
        ):
            raise ValueError(
                f"temporal_attention.scales={self.scales!r}: use a non-empty tuple of"
                " positive dilations such as (1, 2, 4)"
            )
        # A dilation pads every window by itself on both sides (and the smoothing branch
        # by the widest): scales (1000000000,) asked a worker for gigabytes per sample.
        if max(self.scales) > MAX_SIZE or len(self.scales) > MAX_SCALES:
            raise ValueError(
                f"temporal_attention.scales={self.scales!r}: use at most {MAX_SCALES}"
                f" dilations of at most {MAX_SIZE} steps each, such as (1, 2, 4)"
            )


class MultiScaleEncoder(nn.Module):
    """[B, F, L] -> [B, D, L]: dilated conv branches + a smoothing branch, mixed by 1x1."""

    def __init__(self, n_features: int, config: TemporalAttentionConfig) -> None:
        super().__init__()
        c = config.channels
        self.branches = nn.ModuleList(
            nn.Conv1d(n_features, c, kernel_size=3, dilation=s, padding=s) for s in config.scales
        )
        widest = max(config.scales)
        self.smooth = nn.Sequential(
            nn.AvgPool1d(2 * widest + 1, stride=1, padding=widest, count_include_pad=False),
            nn.Conv1d(n_features, c, kernel_size=1),
        )
        n_branches = len(config.scales) + 1
        self.mix = nn.Sequential(
            nn.BatchNorm1d(c * n_branches),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Conv1d(c * n_branches, config.d_model, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [branch(x) for branch in self.branches] + [self.smooth(x)]  # each [B, C, L]
        return self.mix(torch.cat(parts, dim=1))  # [B, C * n_branches, L] -> [B, D, L]


class TemporalAttention(nn.Module):
    def __init__(self, config: TemporalAttentionConfig, dims: ModelDims) -> None:
        super().__init__()
        self.config, self.dims = config, dims
        d = config.d_model
        self.encoder = MultiScaleEncoder(dims.n_features, config)
        self.register_buffer("positions", sinusoidal_positions(dims.seq_len, d), persistent=False)
        self.norm = nn.LayerNorm(d)
        self.queries = nn.Parameter(torch.randn(dims.n_horizons, d) / math.sqrt(d))  # [H, D]
        self.key = nn.Linear(d, d, bias=False)  # a key bias shifts all scores: no effect
        self.value = nn.Linear(d, d)
        self.head = HorizonHead(2 * d, dims, config.dropout)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_sequence_input("temporal_attention", x, self.dims)
        if x.shape[1] != self.dims.seq_len:
            raise ValueError(
                f"temporal_attention: built for seq_len={self.dims.seq_len}, got windows of"
                f" {x.shape[1]} steps; rebuild the model with ModelDims(seq_len=...)"
            )
        z = self.encoder(x.transpose(1, 2)).transpose(1, 2)  # [B, L, F] -> [B, L, D]
        z = self.norm(z + self.positions)
        keys, values = self.key(z), self.value(z)  # [B, L, D]
        scores = self.queries @ keys.transpose(1, 2) / math.sqrt(self.config.d_model)
        weights = torch.softmax(scores, dim=-1)  # [H, D] @ [B, D, L] -> [B, H, L]
        context = weights @ values  # [B, H, D]
        last = z[:, -1:].expand(-1, self.dims.n_horizons, -1)  # [B, H, D]: today's state
        return self.head(torch.cat([context, last], dim=-1)), weights  # [B, H, 3] | [B, H]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def interpret(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"attention": [B, H, L]}: each horizon's weights over the window's time steps."""
        return {"attention": self._run(x)[1]}
