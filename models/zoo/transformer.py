"""Transformer encoder over the window: input projection, sinusoidal positions, pre-norm
self-attention layers, then pooling over time.

The attention is written out (not nn.MultiheadAttention) so that `interpret` can return
the weights and the export never meets the fused fast path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.config import ModelDims
from models.zoo._blocks import (
    OutputHead,
    check_choice,
    check_dropout,
    check_positive,
    check_sequence_input,
    sinusoidal_positions,
)

POOLINGS = ("mean", "last")


@dataclass(frozen=True)
class TransformerConfig:
    d_model: int = 32
    n_heads: int = 4
    num_layers: int = 2
    ff_dim: int = 64
    dropout: float = 0.1
    pooling: str = "mean"

    def __post_init__(self) -> None:
        check_positive("transformer", "d_model", self.d_model, 32)
        check_positive("transformer", "n_heads", self.n_heads, 4)
        check_positive("transformer", "num_layers", self.num_layers, 2)
        check_positive("transformer", "ff_dim", self.ff_dim, 64)
        check_dropout("transformer", self.dropout)
        check_choice("transformer", "pooling", self.pooling, POOLINGS)
        if self.d_model % self.n_heads:
            raise ValueError(
                f"transformer.d_model={self.d_model} is not divisible by"
                f" n_heads={self.n_heads}: use a d_model that is a multiple of n_heads,"
                f" such as {self.n_heads * 8}"
            )


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, length, d = x.shape
        qkv = self.qkv(x).reshape(b, length, 3, self.n_heads, self.d_head)  # [B, L, 3, h, d]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, h, L, d]
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_head)  # [B, h, L, L]
        weights = torch.softmax(scores, dim=-1)
        z = (self.drop(weights) @ v).transpose(1, 2).reshape(b, length, d)  # [B, L, D]
        return self.out(z), weights


class EncoderLayer(nn.Module):
    """Pre-norm: x + attn(norm(x)), then x + ff(norm(x)); stable for small data."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config.d_model, config.n_heads, config.dropout)
        self.norm2 = nn.LayerNorm(config.d_model)
        self.ff = nn.Sequential(
            nn.Linear(config.d_model, config.ff_dim),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.ff_dim, config.d_model),
        )
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.attn(self.norm1(x))
        x = x + self.drop(attended)
        x = x + self.drop(self.ff(self.norm2(x)))
        return x, weights  # [B, L, D], [B, h, L, L]


class TransformerModel(nn.Module):
    def __init__(self, config: TransformerConfig, dims: ModelDims) -> None:
        super().__init__()
        self.config, self.dims = config, dims
        self.embed = nn.Linear(dims.n_features, config.d_model)
        self.register_buffer(
            "positions", sinusoidal_positions(dims.seq_len, config.d_model), persistent=False
        )
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = OutputHead(config.d_model, dims, config.dropout)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_sequence_input("transformer", x, self.dims)
        if x.shape[1] != self.dims.seq_len:
            raise ValueError(
                f"transformer: built for seq_len={self.dims.seq_len}, got windows of"
                f" {x.shape[1]} steps; rebuild the model with ModelDims(seq_len=...)"
            )
        z = self.embed(x) + self.positions  # [B, L, F] -> [B, L, D]
        weights = z.new_zeros(0)
        for layer in self.layers:
            z, weights = layer(z)
        z = self.norm(z)
        pooled = z.mean(dim=1) if self.config.pooling == "mean" else z[:, -1]  # [B, D]
        return self.head(pooled), weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def interpret(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"attention": [B, n_heads, L, L]}: the last layer's self-attention weights."""
        return {"attention": self._run(x)[1]}
