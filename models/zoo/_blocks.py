"""Building blocks shared by the zoo: config checks, output heads and a Conv1d block.

Shape letters: B batch, L time steps, F input features, C channels, D hidden width,
H horizons. Every block here exports to ONNX (no packed sequences, no data-dependent
Python control flow).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from models.config import ModelDims

# ---- config checks: one message style for every model ------------------------------


MAX_SIZE = 4096  # no width, depth or kernel of a market model needs more


def check_positive(model: str, field: str, value: int, example: int) -> None:
    """Widths, depths and kernel sizes must be in [1, MAX_SIZE]: a mistyped 100000000 would
    otherwise take a worker's memory down instead of failing with a message."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{model}.{field}={value!r}: use a positive integer such as {example}")
    if value > MAX_SIZE:
        raise ValueError(f"{model}.{field}={value!r}: at most {MAX_SIZE}; use a value such as "
                         f"{example}")


def check_dropout(model: str, value: float, field: str = "dropout") -> None:
    """Dropout is a probability in [0, 1); 1 would zero every activation."""
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{model}.{field}={value!r}: use a probability in [0, 1) such as 0.2")


def check_choice(model: str, field: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{model}.{field}={value!r}: choose one of {tuple(choices)}")


def check_odd(model: str, field: str, value: int, example: int = 3) -> None:
    """Odd kernels keep the sequence length with symmetric padding."""
    check_positive(model, field, value, example)
    if value % 2 == 0:
        raise ValueError(
            f"{model}.{field}={value!r}: use an odd kernel size such as {example} so the"
            " output keeps the input length"
        )


def check_sequence_input(model: str, x: torch.Tensor, dims: ModelDims) -> None:
    """Fail with the expected layout instead of an opaque matmul error deep inside."""
    if x.dim() != 3 or x.shape[-1] != dims.n_features:
        raise ValueError(
            f"{model}: expected input [B, L, F={dims.n_features}], got {tuple(x.shape)};"
            " pass the sequence windows (PreparedSymbol.X_seq), not the tabular rows"
        )


def recurrent_dropout(dropout: float, num_layers: int) -> float:
    """nn.LSTM/nn.GRU apply dropout between layers only; with one layer it must be 0."""
    return dropout if num_layers > 1 else 0.0


# ---- output heads ------------------------------------------------------------------


class OutputHead(nn.Module):
    """[B, D] -> logits [B, H, 3] (direction) or returns [B, H] (return)."""

    def __init__(self, in_dim: int, dims: ModelDims, dropout: float) -> None:
        super().__init__()
        self.n_horizons = dims.n_horizons
        self.per_horizon = 3 if dims.task == "direction" else 1
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(in_dim, dims.n_outputs)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.proj(self.drop(z))  # [B, D] -> [B, H * K]
        if self.per_horizon == 1:
            return out  # [B, H]
        return out.reshape(-1, self.n_horizons, self.per_horizon)  # [B, H, 3]


class HorizonHead(nn.Module):
    """One shared projection per horizon row: [B, H, D] -> [B, H, 3] or [B, H]."""

    def __init__(self, in_dim: int, dims: ModelDims, dropout: float) -> None:
        super().__init__()
        self.per_horizon = 3 if dims.task == "direction" else 1
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(in_dim, self.per_horizon)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.proj(self.drop(z))  # [B, H, D] -> [B, H, K]
        return out.squeeze(-1) if self.per_horizon == 1 else out


# ---- convolution ---------------------------------------------------------------------


class ConvBNBlock(nn.Module):
    """Conv1d (same length) + BatchNorm + ReLU + Dropout: [B, C_in, L] -> [B, C_out, L].

    BatchNorm normalises over batch and time, so it is well defined even for B == 1.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm1d(c_out)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.act(self.norm(self.conv(x))))


def conv_stack(
    c_in: int, channels: int, num_layers: int, kernel_size: int, dropout: float
) -> nn.Sequential:
    """`num_layers` ConvBNBlocks: [B, c_in, L] -> [B, channels, L]."""
    blocks = [
        ConvBNBlock(c_in if i == 0 else channels, channels, kernel_size, dropout)
        for i in range(num_layers)
    ]
    return nn.Sequential(*blocks)


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """Fixed sinusoidal position encoding [length, width] (Vaswani et al. 2017), on the
    CPU (a module's `.to(device)` moves it): built under `torch.device("meta")` to count
    parameters (`ray_jobs.spec_overrides.parameter_count`), meta aranges cost seconds."""
    cpu = torch.device("cpu")
    pos = torch.arange(length, dtype=torch.float32, device=cpu).unsqueeze(1)  # [L, 1]
    freq = torch.exp(
        torch.arange(0, width, 2, dtype=torch.float32, device=cpu)
        * (-math.log(1e4) / width)
    )  # [ceil(W / 2)]
    pe = torch.zeros(length, width, device=cpu)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: width // 2])
    return pe
