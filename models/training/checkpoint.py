"""Checkpoints: a directory with fixed file names holding everything needed to resume.

- `checkpoint.pt`: the full trainer state (model, optimizer, scheduler, grad scaler,
  epoch, best metric and weights, patience counter, RNG states, history, config). Only
  tensors and plain containers, so `torch.load(..., weights_only=True)` reads it.
- `checkpoint.json`: the same minus tensors (epoch, best metric, history, config), for
  humans, dashboards and a quick "where did this run get to" without torch.

A directory is what Ray's `Checkpoint.from_directory` reports, so the Ray layer can
hand this straight over.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "checkpoint.json"
FORMAT_VERSION = 1
REQUIRED_KEYS = (
    "format_version",
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "epoch",
    "best_metric",
    "best_epoch",
    "best_weights",
    "patience_counter",
    "rng",
    "history",
)


# ---- RNG states as tensors and plain lists --------------------------------------------
def capture_rng(shuffle: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Every RNG the loop touches, as tensors / plain values (no pickled objects). CUDA
    states are kept only when training runs on CUDA (a CPU run never draws from them)."""
    version, mt_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": {"version": int(version), "state": list(mt_state), "gauss": gauss},
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "shuffle": shuffle.get_state(),
    }


def restore_rng(rng: dict[str, Any], shuffle: torch.Generator, device: torch.device) -> None:
    """Put back the states of `capture_rng`. An exact continuation needs the same device
    type: CUDA states are restored when training on CUDA and ignored on the CPU."""
    py = rng["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = rng["numpy"]
    keys = np.asarray(npy["keys"].numpy(), dtype=np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(rng["torch"])
    cuda_states = rng["cuda"]
    if cuda_states and device.type == "cuda":
        if len(cuda_states) != torch.cuda.device_count():
            raise RuntimeError(
                f"checkpoint has RNG states for {len(cuda_states)} CUDA devices, this machine "
                f"has {torch.cuda.device_count()}; restrict CUDA_VISIBLE_DEVICES to match"
            )
        torch.cuda.set_rng_state_all(cuda_states)
    shuffle.set_state(rng["shuffle"])


# ---- files ----------------------------------------------------------------------------
def json_safe(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become strings ("inf"), tensors are dropped."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items() if not isinstance(v, torch.Tensor)}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def save_checkpoint(directory: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write `state` (from the loop's `trainer_state()`) to `directory`; returns the path.

    Files are written to a temporary name and renamed, so a crash mid-write never
    leaves a half checkpoint under the fixed names.
    """
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"trainer state lacks {missing}; pass the dict from trainer_state()")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (CHECKPOINT_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, out / CHECKPOINT_FILE)
    summary = {
        k: json_safe(v)
        for k, v in state.items()
        if k not in ("model", "optimizer", "scheduler", "scaler", "best_weights", "rng")
    }
    tmp_json = out / (SUMMARY_FILE + ".tmp")
    tmp_json.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(tmp_json, out / SUMMARY_FILE)
    return out


def load_checkpoint(
    directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint directory written by `save_checkpoint` (weights_only=True)."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; pass the directory that save_checkpoint wrote")
    state = torch.load(path, map_location=map_location, weights_only=True)
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format {version!r}, this code reads {FORMAT_VERSION}; "
            "resume with the quantray version that wrote it or start the run afresh"
        )
    return state
