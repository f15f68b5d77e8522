"""Temporal convolutional network (Bai et al. 2018): dilated causal convs, residual blocks.

Level i uses dilation 2**i, so the receptive field is 1 + 2 (k - 1) (2**levels - 1) steps;
the head reads the last time step, which sees exactly that much history.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelDims
from models.zoo._blocks import (
    MAX_SIZE,
    OutputHead,
    check_dropout,
    check_positive,
    check_sequence_input,
)


@dataclass(frozen=True)
class TCNConfig:
    channels: int = 32
    num_levels: int = 3
    kernel_size: int = 3
    dropout: float = 0.2

    def __post_init__(self) -> None:
        check_positive("tcn", "channels", self.channels, 32)
        check_positive("tcn", "num_levels", self.num_levels, 3)
        check_positive("tcn", "kernel_size", self.kernel_size, 3)
        if self.kernel_size < 2:
            raise ValueError(
                f"tcn.kernel_size={self.kernel_size}: use 2 or more (such as 3) so the"
                " dilated convolutions see past steps"
            )
        check_dropout("tcn", self.dropout)
        # Level i pads each window by (k - 1) 2**i steps: num_levels 40 asked for 2**40
        # padded steps per sample and failed the worker; a window is at most 512 steps.
        if (self.kernel_size - 1) * 2 ** (self.num_levels - 1) > MAX_SIZE:
            raise ValueError(
                f"tcn.num_levels={self.num_levels}: with kernel_size={self.kernel_size} its"
                f" last level looks {(self.kernel_size - 1) * 2 ** (self.num_levels - 1)}"
                f" steps back (receptive field {self.receptive_field}); at most {MAX_SIZE}:"
                " use fewer levels (such as 4) or a smaller kernel_size"
            )

    @property
    def receptive_field(self) -> int:
        return 1 + 2 * (self.kernel_size - 1) * (2**self.num_levels - 1)


class CausalConv(nn.Module):
    """Left-padded dilated Conv1d: output t sees inputs <= t. [B, C_in, L] -> [B, C_out, L]."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.left_pad = (kernel_size - 1) * dilation
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.left_pad, 0)))


class TemporalBlock(nn.Module):
    """Two causal convs with ReLU and dropout, plus a (1x1-projected) residual."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            CausalConv(c_in, c_out, kernel_size, dilation),
            nn.ReLU(),
            nn.Dropout(dropout),
            CausalConv(c_out, c_out, kernel_size, dilation),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.net(x) + self.skip(x))  # [B, C_in, L] -> [B, C_out, L]


class TCN(nn.Module):
    def __init__(self, config: TCNConfig, dims: ModelDims) -> None:
        super().__init__()
        self.config, self.dims = config, dims
        self.blocks = nn.Sequential(
            *[
                TemporalBlock(
                    dims.n_features if i == 0 else config.channels,
                    config.channels,
                    config.kernel_size,
                    2**i,
                    config.dropout,
                )
                for i in range(config.num_levels)
            ]
        )
        self.head = OutputHead(config.channels, dims, config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_sequence_input("tcn", x, self.dims)
        z = self.blocks(x.transpose(1, 2))  # [B, L, F] -> [B, F, L] -> [B, C, L]
        return self.head(z[:, :, -1])  # last step: [B, C] -> [B, H, 3] | [B, H]
