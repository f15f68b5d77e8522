"""The model contract: a registry entry (`ModelSpec`) and what `fit` returns (`FittedModel`).

Search spaces are data: param -> {"type": "choice", "values": [...]} |
{"type": "uniform" | "loguniform", "low": x, "high": y} | {"type": "randint", "low": a, "high": b}.
Keys are either model-config fields or `train.<TrainConfig field>`.
Presets: {"fast" | "balanced" | "quality": {"model": {...}, "train": {...}, "seq_len": int}}.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

PRESETS = ("fast", "balanced", "quality")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "linear" | "deep"
    input: str  # "tabular" (B, F) | "sequence" (B, L, F)
    config_cls: type  # frozen dataclass of the architecture (or linear estimator) settings
    module_cls: Callable[..., Any] | None  # deep: nn.Module class, called as cls(config, dims)
    presets: dict[str, dict[str, Any]]
    search_space: dict[str, dict[str, Any]]
    hooks: tuple[str, ...] = ()  # "hidden_states" and/or "attention"
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "deep"):
            raise ValueError(f"{self.name}: kind must be 'linear' or 'deep'")
        if self.input not in ("tabular", "sequence"):
            raise ValueError(f"{self.name}: input must be 'tabular' or 'sequence'")
        missing = [p for p in PRESETS if p not in self.presets]
        if missing:
            raise ValueError(f"{self.name}: presets {missing} missing")


class FittedModel(Protocol):
    """What `models.fit(...)` returns, the same for linear and deep models."""

    name: str
    history: list[dict[str, Any]]  # one dict per epoch (deep) or one summary (linear)

    def predict_return(self, x: np.ndarray) -> np.ndarray | None:
        """(n, H) predicted forward returns, or None for a direction classifier."""

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, H, 3) class probabilities (down, flat, up)."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n, H) direction classes."""

    def artifact_files(self) -> dict[str, bytes]:
        """The saved model as {file name: content}, for writers that are not a local
        directory (object storage); `save` writes the same files."""

    def save(self, directory: str) -> None:
        """Write `artifact_files()` into `directory` (`save_artifact_files`)."""


def save_artifact_files(directory: str, files: dict[str, bytes]) -> None:
    """Write {file name: content} into `directory` (created), each file through a temporary
    name and a rename, so a reader never sees half a file: what every model's `save` does
    with its `artifact_files()`."""
    os.makedirs(directory, exist_ok=True)
    for name, data in files.items():
        tmp = os.path.join(directory, name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(directory, name))
