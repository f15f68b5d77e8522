"""Callbacks and early stopping.

A callback sees every finished epoch: `on_epoch_end(epoch, metrics, trainer_state)`.
`metrics` is a plain dict of numbers (a copy; see `loop.EPOCH_METRICS`);
`trainer_state()` builds the full resumable state on demand (only callbacks that
checkpoint pay for it). Returning True requests a stop after this epoch. This is how
the Ray layer reports metrics and checkpoints each epoch without the loop knowing Ray.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.training.checkpoint import save_checkpoint

StateFn = Callable[[], dict[str, Any]]


class Callback(Protocol):
    def on_epoch_end(
        self, epoch: int, metrics: dict[str, Any], trainer_state: StateFn
    ) -> bool | None:
        """Called after each epoch (0-based). Return True to stop training."""


@dataclass
class EarlyStopping:
    """Track the best value of a minimised metric; stop after `patience` epochs without an
    improvement larger than `min_delta`."""

    patience: int
    min_delta: float
    best: float = math.inf
    best_epoch: int = -1
    counter: int = 0

    def __post_init__(self) -> None:
        if self.patience < 1:
            raise ValueError(f"EarlyStopping.patience={self.patience}: use at least 1")
        if self.min_delta < 0:
            raise ValueError(f"EarlyStopping.min_delta={self.min_delta}: use 0 or more")

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when it is the new best."""
        if not math.isfinite(value):
            raise FloatingPointError(
                f"validation metric is {value} at epoch {epoch}; lower the lr, enable "
                "grad_clip or check the inputs for extreme values"
            )
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.counter = value, epoch, 0
            return True
        self.counter += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.counter >= self.patience


@dataclass
class CheckpointEvery:
    """Write a checkpoint directory every `every` epochs (and keep only the latest)."""

    directory: str | os.PathLike[str]
    every: int = 1
    saved_epochs: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"CheckpointEvery.every={self.every}: use at least 1")

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any], trainer_state: StateFn) -> bool:
        if (epoch + 1) % self.every == 0:
            save_checkpoint(self.directory, trainer_state())
            self.saved_epochs.append(epoch)
        return False


@dataclass
class StopAfter:
    """Request a stop once `epochs` epochs have run (simulates a preempted worker)."""

    epochs: int

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any], trainer_state: StateFn) -> bool:
        return epoch + 1 >= self.epochs
