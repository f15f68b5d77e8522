"""Device choice, mixed precision and deterministic execution for the training loop.

Mixed precision is CUDA only: `amp="auto"` means bf16 autocast where the GPU supports
it, else fp16 autocast with a GradScaler, and full fp32 on the CPU. Asking for bf16/fp16
on a CPU is an error, not a silent downgrade.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda'/'cuda:N' must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"TrainConfig.device={device!r} but CUDA is not available; use device='auto' or 'cpu'"
        )
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"TrainConfig.device={device!r}: use auto, cpu, cuda or cuda:N")
    return dev


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: autocast dtype (None = fp32) and whether to scale grads."""

    dtype: torch.dtype | None
    use_scaler: bool

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def activation_bytes_factor(self) -> float:
        """Activation size relative to fp32 under this precision."""
        return 1.0 if self.dtype is None else 0.5

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """Map TrainConfig.amp and the device to a Precision (see the module docstring)."""
    if amp == "off":
        return Precision(None, False)
    if device.type != "cuda":
        if amp == "auto":
            return Precision(None, False)
        raise ValueError(
            f"TrainConfig.amp={amp!r} needs a CUDA device (got {device}); use amp='auto' or 'off'"
        )
    bf16_ok = torch.cuda.is_bf16_supported()
    if amp == "bf16" and not bf16_ok:
        raise ValueError("TrainConfig.amp='bf16' but this GPU has no bf16; use 'fp16' or 'auto'")
    if amp == "bf16" or (amp == "auto" and bf16_ok):
        return Precision(torch.bfloat16, False)
    return Precision(torch.float16, True)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all CUDA devices included)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


@contextlib.contextmanager
def deterministic_algorithms(device: torch.device) -> Iterator[None]:
    """Run with deterministic kernels where feasible; restore the caller's settings after.

    CPU: `torch.use_deterministic_algorithms(True, warn_only=True)` (an op without a
    deterministic kernel warns instead of failing the run). CUDA: cuDNN is pinned to
    deterministic kernels; torch's global switch is turned on only when the process was
    started with CUBLAS_WORKSPACE_CONFIG (e.g. ":4096:8"), without which cuBLAS cannot be
    deterministic. We do not set environment variables behind the caller's back.
    """
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if device.type != "cuda" or os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic = previous[2]
        torch.backends.cudnn.benchmark = previous[3]
