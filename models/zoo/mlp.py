"""Multi-layer perceptron on the tabular row of each sample: [B, F] -> [B, H, 3] | [B, H]."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.config import ModelDims
from models.zoo._blocks import OutputHead, check_choice, check_dropout, check_positive

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class MLPConfig:
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.2
    activation: str = "gelu"
    layer_norm: bool = True  # LayerNorm, not BatchNorm: well defined for a batch of 1

    def __post_init__(self) -> None:
        check_positive("mlp", "hidden_size", self.hidden_size, 64)
        check_positive("mlp", "num_layers", self.num_layers, 2)
        check_dropout("mlp", self.dropout)
        check_choice("mlp", "activation", self.activation, tuple(ACTIVATIONS))


class MLP(nn.Module):
    def __init__(self, config: MLPConfig, dims: ModelDims) -> None:
        super().__init__()
        self.config, self.dims = config, dims
        layers: list[nn.Module] = []
        width_in = dims.n_features
        for _ in range(config.num_layers):
            layers.append(nn.Linear(width_in, config.hidden_size))
            if config.layer_norm:
                layers.append(nn.LayerNorm(config.hidden_size))
            layers += [ACTIVATIONS[config.activation](), nn.Dropout(config.dropout)]
            width_in = config.hidden_size
        self.body = nn.Sequential(*layers)
        self.head = OutputHead(config.hidden_size, dims, dropout=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[-1] != self.dims.n_features:
            raise ValueError(
                f"mlp: expected tabular input [B, F={self.dims.n_features}], got"
                f" {tuple(x.shape)}; pass PreparedSymbol.X, not the sequence windows"
            )
        return self.head(self.body(x))  # [B, F] -> [B, D] -> [B, H, 3] | [B, H]
