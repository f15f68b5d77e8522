"""The model contract: a registry entry (`ModelSpec`) and what `fit` returns (`FittedModel`).

Search spaces are data: param -> {"type": "choice", "values": [...]} |
{"type": "uniform" | "loguniform", "low": x, "high": y} | {"type": "randint", "low": a, "high": b}.
Keys are either model-config fields or `train.<TrainConfig field>`.
Presets: {"fast" | "balanced" | "quality": {"model": {...}, "train": {...}, "seq_len": int}}.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
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


class ArtifactError(ValueError):
    """A saved model directory that cannot be read back: corrupt, truncated or edited files."""


def read_metadata(directory: str) -> dict[str, Any]:
    """`directory/metadata.json` as a dict; a missing file is FileNotFoundError, unreadable
    JSON or a non-object an ArtifactError naming the file."""
    path = os.path.join(directory, "metadata.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {directory!r} a saved model directory?")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(
            f"{path} is not valid JSON ({exc}): the saved model is corrupt or truncated;"
            " save it again"
        ) from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return meta


@contextlib.contextmanager
def artifact_errors(directory: str, name: Any) -> Iterator[None]:
    """Re-raise what reading a saved model's files raises as an ArtifactError naming the
    directory (a missing file stays FileNotFoundError, which names it already)."""
    try:
        yield
    except (FileNotFoundError, ArtifactError):
        raise
    except Exception as exc:
        raise ArtifactError(
            f"{directory}: cannot load the saved {name!r} model ({type(exc).__name__}: {exc});"
            " its files are corrupt, truncated, edited or from an incompatible version"
        ) from exc


def check_finite(name: str, x: np.ndarray) -> None:
    """Refuse inputs with NaN or inf: a model maps them to NaN probabilities, whose argmax
    is silently class 0 (down). Prepared features are finite; raw ones need cleaning."""
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(len(x), -1).all(axis=1))
        raise ValueError(
            f"{name}: {bad.size} of {len(x)} input rows hold NaN or inf (first: row"
            f" {int(bad[0])}); pass finite, scaled features (PreparedSymbol rows)"
        )
