"""Conv1D + BatchNorm blocks into a GRU: convs extract local patterns, the GRU orders them.

The fast / balanced / quality presets vary the conv depth and the widths.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.config import ModelDims
from models.zoo._blocks import (
    OutputHead,
    check_dropout,
    check_odd,
    check_positive,
    check_sequence_input,
    conv_stack,
    recurrent_dropout,
)


@dataclass(frozen=True)
class CNNGRUConfig:
    conv_channels: int = 32
    conv_layers: int = 2
    kernel_size: int = 3
    hidden_size: int = 32
    num_layers: int = 1  # GRU depth
    dropout: float = 0.2

    def __post_init__(self) -> None:
        check_positive("cnn_gru", "conv_channels", self.conv_channels, 32)
        check_positive("cnn_gru", "conv_layers", self.conv_layers, 2)
        check_odd("cnn_gru", "kernel_size", self.kernel_size, 3)
        check_positive("cnn_gru", "hidden_size", self.hidden_size, 32)
        check_positive("cnn_gru", "num_layers", self.num_layers, 1)
        check_dropout("cnn_gru", self.dropout)


class CNNGRU(nn.Module):
    def __init__(self, config: CNNGRUConfig, dims: ModelDims) -> None:
        super().__init__()
        self.config, self.dims = config, dims
        self.convs = conv_stack(
            dims.n_features,
            config.conv_channels,
            config.conv_layers,
            config.kernel_size,
            config.dropout,
        )
        self.rnn = nn.GRU(
            config.conv_channels,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=recurrent_dropout(config.dropout, config.num_layers),
            batch_first=True,
        )
        self.head = OutputHead(config.hidden_size, dims, config.dropout)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_sequence_input("cnn_gru", x, self.dims)
        z = self.convs(x.transpose(1, 2)).transpose(1, 2)  # [B, L, F] -> [B, L, C]
        states, _ = self.rnn(z)  # [B, L, D]
        return self.head(states[:, -1]), states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def interpret(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"hidden_states": [B, L, D]}: GRU states over the conv features."""
        return {"hidden_states": self._run(x)[1]}
