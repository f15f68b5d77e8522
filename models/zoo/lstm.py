"""LSTM over the window, optionally bidirectional; the head reads the final states."""

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
class LSTMConfig:
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.2  # between stacked layers and before the head
    bidirectional: bool = False

    def __post_init__(self) -> None:
        check_positive("lstm", "hidden_size", self.hidden_size, 64)
        check_positive("lstm", "num_layers", self.num_layers, 2)
        check_dropout("lstm", self.dropout)


class LSTMModel(nn.Module):
    def __init__(self, config: LSTMConfig, dims: ModelDims) -> None:
        super().__init__()
        self.config, self.dims = config, dims
        self.rnn = nn.LSTM(
            dims.n_features,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=recurrent_dropout(config.dropout, config.num_layers),
            bidirectional=config.bidirectional,
            batch_first=True,
        )
        n_dirs = 2 if config.bidirectional else 1
        self.head = OutputHead(config.hidden_size * n_dirs, dims, config.dropout)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_sequence_input("lstm", x, self.dims)
        states, _ = self.rnn(x)  # [B, L, F] -> [B, L, D * dirs]
        hid = self.config.hidden_size
        if self.config.bidirectional:
            # The forward direction has read the whole window at t = L-1, the backward
            # direction at t = 0: those two are the summaries of the window.
            last = torch.cat([states[:, -1, :hid], states[:, 0, hid:]], dim=-1)  # [B, 2D]
        else:
            last = states[:, -1]  # [B, D]
        return self.head(last), states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def interpret(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"hidden_states": [B, L, D * dirs]}: top-layer states at every time step."""
        return {"hidden_states": self._run(x)[1]}
