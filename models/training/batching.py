"""Training data as device tensors, and batches gathered straight from them.

The whole (T, F) feature matrix of a symbol lives on the device ONCE. A split is just
its sample indices and targets. A batch is an index tensor: tabular rows are
`features[end]`, sequence windows are `features[end[:, None] - L + 1 + arange(L)]`,
so memory stays O(T * F) instead of O(N * L * F) and the hot path has no DataLoader,
no per-sample Python and no host-to-device copies.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from data.prepared import PreparedSymbol

INPUT_KINDS = ("tabular", "sequence")
TASKS = ("direction", "return")


@dataclass(frozen=True)
class SplitTensors:
    """One split: the decision rows of its samples and their targets."""

    name: str
    end_rows: torch.Tensor  # (N,) int64: feature row of each sample's decision time
    y: torch.Tensor  # (N, H): int64 classes (direction) or float32 scaled returns (return)

    def __len__(self) -> int:
        return int(self.end_rows.shape[0])


@dataclass(frozen=True)
class TrainData:
    """Features once, plus per-split indices/targets; everything on one device.

    For task "return", targets are divided by `target_scale` (per-horizon std of the
    training returns), so the loss is an MSE in units of the return variance (1.0 = as good
    as predicting zero); `DeepModel` multiplies predictions back.
    """

    features: torch.Tensor  # (T, F) float32
    splits: dict[str, SplitTensors]
    input_kind: str  # "tabular" -> x (B, F), "sequence" -> x (B, L, F)
    task: str
    seq_len: int  # window length L the module is fed (1 for tabular)
    target_scale: torch.Tensor  # (H,) float32; ones for direction

    def __post_init__(self) -> None:
        if self.input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind={self.input_kind!r}: choose one of {INPUT_KINDS}")
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r}: choose one of {TASKS}")
        for split in ("train", "val"):
            if split not in self.splits or len(self.splits[split]) == 0:
                raise ValueError(
                    f"TrainData needs a non-empty {split!r} split; check the split fractions "
                    "and that the symbol has enough rows"
                )
        first = min(int(s.end_rows.min()) for s in self.splits.values() if len(s))
        if self.input_kind == "sequence" and first - self.seq_len + 1 < 0:
            raise ValueError(
                f"seq_len={self.seq_len} reaches before the first feature row; prepare the "
                f"data with seq_len >= {self.seq_len} or use a shorter window"
            )

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_prepared(
        cls,
        prepared: PreparedSymbol,
        input_kind: str,
        task: str,
        splits: tuple[str, ...] = ("train", "val"),
        *,
        seq_len: int | None = None,
        device: str | torch.device = "cpu",
    ) -> TrainData:
        """Build from a prepared symbol. `seq_len` (default: the prepared one) may be shorter
        than `prepared.seq_len`: windows then take the last `seq_len` rows before each
        decision time."""
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind={input_kind!r}: choose one of {INPUT_KINDS}")
        if task not in TASKS:
            raise ValueError(f"task={task!r}: choose one of {TASKS}")
        length = prepared.seq_len if seq_len is None else int(seq_len)
        if input_kind == "tabular":
            length = 1
        if not 1 <= length <= prepared.seq_len:
            raise ValueError(
                f"{prepared.symbol}: seq_len={length} exceeds the prepared seq_len="
                f"{prepared.seq_len}; prepare the data with a longer seq_len"
            )
        missing = [s for s in splits if s not in prepared.splits]
        if missing:
            raise ValueError(
                f"{prepared.symbol}: splits {missing} missing; prepared has {list(prepared.splits)}"
            )
        dev = torch.device(device)
        target_scale = np.ones(len(prepared.horizons), dtype=np.float32)
        if task == "return":
            train_returns = prepared.y_return[prepared.splits["train"]]
            target_scale = train_returns.std(axis=0).astype(np.float32)
            if not np.all(target_scale > 0):
                raise ValueError(
                    f"{prepared.symbol}: training returns have zero variance for some horizon; "
                    "use more training data or the direction task"
                )
        tensors = {}
        for name in splits:
            idx = np.asarray(prepared.splits[name], dtype=np.int64)
            if task == "direction":
                y = torch.from_numpy(np.ascontiguousarray(prepared.y_class[idx]))
            else:
                y = torch.from_numpy(np.ascontiguousarray(prepared.y_return[idx] / target_scale))
            tensors[name] = SplitTensors(
                name=name,
                end_rows=torch.from_numpy(idx + prepared.row0).to(dev),
                y=y.to(dev),
            )
        with warnings.catch_warnings():
            # Arrays read from Ray's object store are read-only; the tensor shares them
            # (no copy per worker) and nothing here writes to the features, so torch's
            # "not writable" warning, printed in every deep run's log, says nothing.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            features = torch.from_numpy(np.ascontiguousarray(prepared.features))
        return cls(
            features=features.to(dev),
            splits=tensors,
            input_kind=input_kind,
            task=task,
            seq_len=length,
            target_scale=torch.from_numpy(target_scale),
        )

    def to(self, device: str | torch.device) -> TrainData:
        dev = torch.device(device)
        return TrainData(
            features=self.features.to(dev),
            splits={
                k: SplitTensors(s.name, s.end_rows.to(dev), s.y.to(dev))
                for k, s in self.splits.items()
            },
            input_kind=self.input_kind,
            task=self.task,
            seq_len=self.seq_len,
            target_scale=self.target_scale,
        )

    # ---- access -------------------------------------------------------------------
    @property
    def train(self) -> SplitTensors:
        return self.splits["train"]

    @property
    def val(self) -> SplitTensors:
        return self.splits["val"]

    @property
    def device(self) -> torch.device:
        return self.features.device

    @property
    def n_horizons(self) -> int:
        return int(self.train.y.shape[1])

    def inputs(self, end_rows: torch.Tensor) -> torch.Tensor:
        """Model inputs for decision rows (B,): (B, F) tabular or (B, L, F) sequence."""
        if self.input_kind == "tabular":
            return self.features[end_rows]  # [B] -> [B, F]
        offsets = torch.arange(1 - self.seq_len, 1, device=end_rows.device)  # (L,)
        return self.features[end_rows[:, None] + offsets]  # [B, L] -> [B, L, F]

    def shuffled(self, split: str, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(decision rows (N,), targets (N, H)) of `split` in the order `perm`, gathered once
        per epoch so that each batch is a slice (a view) of them."""
        s = self.splits[split]
        return s.end_rows[perm], s.y[perm]

    def batch(self, split: str, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) for positions (B,) within `split` (e.g. a slice of a randperm)."""
        s = self.splits[split]
        return self.inputs(s.end_rows[positions]), s.y[positions]


def at_sample_time(x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Each sample's inputs at its own time, (n, F): a tabular batch as it is, a batch of
    windows (n, L, F) by its last step (an array or a tensor)."""
    return x[:, -1, :] if x.ndim == 3 else x


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """[start, stop) of each batch over n samples. A trailing batch of one sample is
    dropped, because BatchNorm cannot train on it and its gradient is pure noise."""
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < 2:
        bounds.pop()
    return bounds


def class_weights(y_class: torch.Tensor, n_classes: int = 3) -> torch.Tensor:
    """(H, C) inverse training frequency per horizon, normalised so a balanced split gets
    weight 1 everywhere: w[h, c] = N / (C * count[h, c]). Absent classes get weight 0."""
    n, h = y_class.shape
    counts = torch.zeros(h, n_classes, dtype=torch.float64, device=y_class.device)
    counts.scatter_add_(1, y_class.T, torch.ones(h, n, dtype=torch.float64, device=y_class.device))
    weights = torch.where(
        counts > 0, n / (n_classes * counts.clamp(min=1)), torch.zeros_like(counts)
    )
    return weights.float()
