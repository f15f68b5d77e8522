"""GRU over the window; the head reads the top layer's last state."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.config import ModelDims
from models.zoo._blocks import (
    OutputHead,
    check_dropout,
    check_positive,
    check_sequence_input,
    recurrent_dropout,
)


@dataclass(frozen=True)
class GRUConfig:
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.2  # between stacked layers and before the head

    def __post_init__(self) -> None:
        check_positive("gru", "hidden_size", self.hidden_size, 64)
        check_positive("gru", "num_layers", self.num_layers, 2)
        check_dropout("gru", self.dropout)


class GRUModel(nn.Module):
    def __init__(self, config: GRUConfig, dims: ModelDims) -> None:
        super().__init__()
        self.config, self.dims = config, dims
        self.rnn = nn.GRU(
            dims.n_features,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=recurrent_dropout(config.dropout, config.num_layers),
            batch_first=True,
        )
        self.head = OutputHead(config.hidden_size, dims, config.dropout)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_sequence_input("gru", x, self.dims)
        states, _ = self.rnn(x)  # [B, L, F] -> [B, L, D]
        return self.head(states[:, -1]), states  # [B, D] -> [B, H, 3] | [B, H]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def interpret(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"hidden_states": [B, L, D]}: top-layer states at every time step."""
        return {"hidden_states": self._run(x)[1]}
