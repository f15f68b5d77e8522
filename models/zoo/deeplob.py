"""DeepLOB (Zhang, Zohren, Roberts 2019): conv blocks + inception module + LSTM.

The window is an image [B, 1, L, F]: time is the height, features the width. The paper's
three conv blocks shrink the width 40 -> 20 -> 10 -> 1 (1x2 stride-2 convs pairing
price/size then ask/bid, then a 1x10 conv over the levels); here any width works: each
1x2 stride-2 stage runs while the width is >= 2 and the last stage's kernel spans the
remaining width. With F = 40 LOB columns this is exactly the paper's layout. The (4x1)
time convs and the inception branches use 'same' padding (as the original Keras code), so
the LSTM sees all L steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.config import ModelDims
from models.zoo._blocks import OutputHead, check_dropout, check_positive, check_sequence_input


@dataclass(frozen=True)
class DeepLOBConfig:
    conv_channels: int = 16  # paper: 32
    inception_channels: int = 32  # per branch; paper: 64
    hidden_size: int = 32  # LSTM width; paper: 64
    dropout: float = 0.2  # before the head
    leaky_slope: float = 0.01

    def __post_init__(self) -> None:
        check_positive("deeplob", "conv_channels", self.conv_channels, 16)
        check_positive("deeplob", "inception_channels", self.inception_channels, 32)
        check_positive("deeplob", "hidden_size", self.hidden_size, 32)
        check_dropout("deeplob", self.dropout)
        if not 0.0 <= self.leaky_slope < 1.0:
            raise ValueError(
                f"deeplob.leaky_slope={self.leaky_slope!r}: use a slope in [0, 1) such as 0.01"
            )


def _conv_act_bn(
    c_in: int, c_out: int, kernel: tuple[int, int], slope: float, stride: tuple[int, int] = (1, 1)
) -> list[nn.Module]:
    layers: list[nn.Module] = []
    if kernel[0] > 1:
        # TF-style 'same' in time for stride 1: (k - 1) // 2 rows before, the rest after.
        before = (kernel[0] - 1) // 2
        layers.append(nn.ZeroPad2d((0, 0, before, kernel[0] - 1 - before)))
    layers += [
        nn.Conv2d(c_in, c_out, kernel, stride=stride),
        nn.LeakyReLU(slope),
        nn.BatchNorm2d(c_out),
    ]
    return layers


def _conv_block(
    c_in: int, channels: int, width_kernel: int, width_stride: int, slope: float
) -> nn.Sequential:
    """Width conv then two (4x1) time convs: [B, c_in, L, W] -> [B, C, L, W']."""
    return nn.Sequential(
        *_conv_act_bn(c_in, channels, (1, width_kernel), slope, stride=(1, width_stride)),
        *_conv_act_bn(channels, channels, (4, 1), slope),
        *_conv_act_bn(channels, channels, (4, 1), slope),
    )


class Inception(nn.Module):
    """Three branches at different time scales: [B, C, L, 1] -> [B, 3 * C_inc, L, 1]."""

    def __init__(self, c_in: int, c_inc: int, slope: float) -> None:
        super().__init__()
        self.b3 = nn.Sequential(
            *_conv_act_bn(c_in, c_inc, (1, 1), slope), *_conv_act_bn(c_inc, c_inc, (3, 1), slope)
        )
        self.b5 = nn.Sequential(
            *_conv_act_bn(c_in, c_inc, (1, 1), slope), *_conv_act_bn(c_inc, c_inc, (5, 1), slope)
        )
        self.pool = nn.Sequential(
            nn.MaxPool2d((3, 1), stride=1, padding=(1, 0)),
            *_conv_act_bn(c_in, c_inc, (1, 1), slope),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b3(x), self.b5(x), self.pool(x)], dim=1)


class DeepLOB(nn.Module):
    def __init__(self, config: DeepLOBConfig, dims: ModelDims) -> None:
        super().__init__()
        self.config, self.dims = config, dims
        c, slope = config.conv_channels, config.leaky_slope
        blocks: list[nn.Module] = []
        width, c_in = dims.n_features, 1
        for _ in range(2):  # the paper's two 1x2 stride-2 stages, while there is width
            k = 2 if width >= 2 else 1
            blocks.append(_conv_block(c_in, c, k, k, slope))
            width, c_in = (width - k) // k + 1, c
        blocks.append(_conv_block(c, c, width, 1, slope))  # collapse the width to 1
        self.convs = nn.Sequential(*blocks)
        self.inception = Inception(c, config.inception_channels, slope)
        self.rnn = nn.LSTM(3 * config.inception_channels, config.hidden_size, batch_first=True)
        self.head = OutputHead(config.hidden_size, dims, config.dropout)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_sequence_input("deeplob", x, self.dims)
        z = self.convs(x.unsqueeze(1))  # [B, L, F] -> [B, 1, L, F] -> [B, C, L, 1]
        z = self.inception(z)  # [B, 3 C_inc, L, 1]
        z = z.squeeze(-1).transpose(1, 2)  # [B, L, 3 C_inc]
        states, _ = self.rnn(z)  # [B, L, D]
        return self.head(states[:, -1]), states

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)[0]

    def interpret(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"hidden_states": [B, L, D]}: LSTM states over the inception features."""
        return {"hidden_states": self._run(x)[1]}
