"""Configs shared by every model: the training-loop config and the model's input/output dims.

Configs cross process boundaries as plain dicts (`dataclasses.asdict`) and are rebuilt
with `from_dict`, which rejects unknown keys and casts Tune-sampled values to the field
types.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "step", "exponential", "plateau", "none")
TASKS = ("direction", "return")


def config_from_dict(cls: type[T], values: dict[str, Any] | None, *, where: str = "") -> T:
    """Build dataclass `cls` from a dict: unknown keys are an error, values cast to types."""
    values = dict(values or {})
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        label = where or cls.__name__
        raise ValueError(
            f"{label}: unknown field(s) {unknown}; allowed: {sorted(known)}"
        )
    cast: dict[str, Any] = {}
    for name, value in values.items():
        ftype = known[name].type
        tname = ftype if isinstance(ftype, str) else getattr(ftype, "__name__", str(ftype))
        label = f"{where or cls.__name__}.{name}"
        optional, base = _optional_scalar(tname)
        if value is None and tname in _SCALARS:
            # null is not a value of a plain int/float/bool/str field: passed through, it
            # reached torch as e.g. LSTM(bidirectional=None) and failed the run on the cluster
            raise ValueError(f"{label}: expected {_SCALARS[tname]}, got None (null); give a "
                             "value or leave the field out for its default")
        if value is not None and tname in _SCALARS:
            value = _cast(label, value, tname)
        elif value is not None and optional:  # `int | None`: a value still has the type
            value = _cast(label, value, base)
        elif isinstance(value, list) and tname.startswith("tuple"):
            value = tuple(value)
        cast[name] = value
    return cls(**cast)


_SCALARS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def _optional_scalar(tname: str) -> tuple[bool, str]:
    """("int | None") -> (True, "int"); anything else -> (False, "")."""
    parts = [p.strip() for p in tname.split("|")]
    if len(parts) == 2 and "None" in parts:
        base = parts[0] if parts[1] == "None" else parts[1]
        if base in _SCALARS:
            return True, base
    return False, ""


def _cast(label: str, value: Any, tname: str) -> Any:
    """`value` as the field's scalar type; a value of another kind (a string for a number,
    a number for a flag, a fractional number for an integer) is an error naming the field,
    never a silent conversion such as bool("false") == True."""
    is_bool = isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy's too
    if tname == "bool" and is_bool:
        return bool(value)
    if tname == "str" and isinstance(value, str):
        return value
    if tname == "int" and not is_bool and isinstance(value, numbers.Real) and (
        isinstance(value, numbers.Integral) or float(value).is_integer()
    ):
        return int(value)
    if tname == "float" and not is_bool and isinstance(value, numbers.Real):
        return float(value)
    raise ValueError(f"{label}: expected {_SCALARS[tname]}, got {value!r}")


@dataclass(frozen=True)
class ModelDims:
    """What a deep model is built for.

    Output: (B, H, 3) logits for `direction`, (B, H) for `return`."""

    n_features: int
    seq_len: int
    n_horizons: int
    task: str = "direction"

    def __post_init__(self) -> None:
        if self.n_features < 1 or self.seq_len < 1 or self.n_horizons < 1:
            raise ValueError(f"ModelDims must be positive, got {self}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")

    @property
    def n_outputs(self) -> int:
        return self.n_horizons * (3 if self.task == "direction" else 1)


MAX_SEED = 2**32 - 1  # as a job's `seed`
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d{1,3})?)$")

# A batch this large is already one full-batch step on any split one worker trains;
# without a cap, batch_size 1e12 was accepted and silently meant "all".
MAX_BATCH_SIZE = 1 << 20


@dataclass(frozen=True)
class TrainConfig:
    """Everything the one training loop needs besides the model and data."""

    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    scheduler: str = "cosine"
    warmup_epochs: int = 1
    step_size: int = 10  # step scheduler
    gamma: float = 0.5  # step / exponential scheduler
    grad_clip: float = 1.0  # max-norm; 0 disables
    patience: int = 5  # early stopping on the validation metric
    min_delta: float = 1e-4
    # End with the weights of the best validation epoch (False: the last epoch's, as a
    # refit on train+val needs, whose val samples are in-sample; best_epoch is then the last)
    restore_best: bool = True
    class_weights: bool = False
    seed: int = 42
    amp: str = "auto"  # auto | off | bf16 | fp16 (CUDA only)
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        def bad(field: str, fix: str) -> None:
            raise ValueError(f"TrainConfig.{field}={getattr(self, field)!r}: {fix}")

        if self.epochs < 1:
            bad("epochs", "use at least 1 epoch")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            bad("batch_size", f"use a batch size of 1 to {MAX_BATCH_SIZE}, such as 256")
        if not self.lr > 0:
            bad("lr", "use a positive learning rate such as 1e-3")
        if self.weight_decay < 0:
            bad("weight_decay", "use 0 or a small positive value such as 1e-4")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"choose one of {OPTIMIZERS}")
        if self.scheduler not in SCHEDULERS:
            bad("scheduler", f"choose one of {SCHEDULERS}")
        if self.warmup_epochs < 0:
            bad("warmup_epochs", "use 0 or more")
        if self.grad_clip < 0:
            bad("grad_clip", "use 0 (off) or a positive max-norm such as 1.0")
        if self.patience < 1:
            bad("patience", "use at least 1")
        if self.min_delta < 0:
            bad("min_delta", "use 0 or a small positive value such as 1e-4")
        # The schedules need these only when they use them, but a value no schedule can
        # use is refused up front: found only when the step/exponential/plateau scheduler
        # was built, it failed the run on the cluster, minutes after the job was accepted.
        if not 0 < self.gamma < 1:
            bad("gamma", "use a decay factor in (0, 1) such as 0.5")
        if self.step_size < 1:
            bad("step_size", "use at least 1 epoch")
        if not 0 <= self.seed <= MAX_SEED:
            bad("seed", f"use an integer in [0, {MAX_SEED}]")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            bad("amp", "choose auto, off, bf16 or fp16")
        if not _DEVICE_RE.match(self.device):
            bad("device", "choose auto, cpu, cuda or cuda:N (N a GPU index such as 0)")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> TrainConfig:
        return config_from_dict(cls, values, where="train")
