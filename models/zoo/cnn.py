"""1-D CNN over time: stacked same-length Conv1d blocks, then global pooling over time."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.config import ModelDims
from models.zoo._blocks import (
    OutputHead,
    check_choice,
    check_dropout,
    check_odd,
    check_positive,
    check_sequence_input,
    conv_stack,
)

POOLINGS = ("avg", "max", "avgmax")


@dataclass(frozen=True)
class CNNConfig:
    channels: int = 32
    num_layers: int = 2
    kernel_size: int = 5
    dropout: float = 0.2
    pooling: str = "avgmax"  # avgmax concatenates mean and max over time

    def __post_init__(self) -> None:
        check_positive("cnn", "channels", self.channels, 32)
        check_positive("cnn", "num_layers", self.num_layers, 2)
        check_odd("cnn", "kernel_size", self.kernel_size, 5)
        check_dropout("cnn", self.dropout)
        check_choice("cnn", "pooling", self.pooling, POOLINGS)


class CNN(nn.Module):
    def __init__(self, config: CNNConfig, dims: ModelDims) -> None:
        super().__init__()
        self.config, self.dims = config, dims
        self.convs = conv_stack(
            dims.n_features, config.channels, config.num_layers, config.kernel_size, config.dropout
        )
        pooled = config.channels * (2 if config.pooling == "avgmax" else 1)
        self.head = OutputHead(pooled, dims, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sequence_input("cnn", x, self.dims)
        z = self.convs(x.transpose(1, 2))  # [B, L, F] -> [B, F, L] -> [B, C, L]
        if self.config.pooling == "avg":
            pooled = z.mean(dim=-1)  # [B, C]
        elif self.config.pooling == "max":
            pooled = z.amax(dim=-1)  # [B, C]
        else:
            pooled = torch.cat([z.mean(dim=-1), z.amax(dim=-1)], dim=-1)  # [B, 2C]
        return self.head(pooled)
