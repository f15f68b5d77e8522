"""Training-memory estimate of a module, and the largest batch that fits a budget.

Estimate (bytes) = parameters + buffers + gradients (trainable parameters) + optimizer
state (AdamW/Adam: 2 copies of the trainable parameters, SGD with momentum: 1) +
input batch + activations.

Activations are measured, not guessed: a CPU copy of the module runs a training-mode
forward pass on two small zero batches (2 and 4 samples) under
`torch.autograd.graph.saved_tensors_hooks`, which sees every tensor autograd keeps for
the backward pass (module outputs, functional ops, LSTM gate buffers, dropout masks),
counted once per storage and excluding the parameters themselves. The difference of the
two probes gives the bytes per sample; activations scale linearly with the batch size.
Under CUDA mixed precision activations are taken at half size. The copy and forked RNG
leave the caller's module and random streams untouched. What it leaves out: allocator
fragmentation, cuDNN workspaces and the transient gradients of activations during the
backward pass, so keep some headroom in the budget.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from models.config import ModelDims, TrainConfig
from models.training.optim import optimizer_state_factor
from models.training.precision import resolve_device, resolve_precision

PROBES = (2, 4)


def _nbytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd saves for backward in one forward of `module` on `x` (excluding the
    parameters and `x` itself, which are counted separately)."""
    excluded = {p.untyped_storage().data_ptr() for p in module.parameters()}
    excluded.add(x.untyped_storage().data_ptr())
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in excluded:
            storages[ptr] = max(storages.get(ptr, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    del out
    return sum(storages.values())


def _probe_input(dims: ModelDims, input_kind: str, batch: int) -> torch.Tensor:
    if input_kind == "tabular":
        return torch.zeros(batch, dims.n_features)  # (B, F)
    if input_kind == "sequence":
        return torch.zeros(batch, dims.seq_len, dims.n_features)  # (B, L, F)
    raise ValueError(f"input_kind={input_kind!r}: choose 'tabular' or 'sequence'")


def _measure(module: nn.Module, dims: ModelDims, input_kind: str, cfg: TrainConfig) -> dict:
    """Fixed bytes and bytes per sample (see the module docstring)."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    param_bytes = _nbytes(module.parameters())
    grad_bytes = _nbytes(trainable)
    optim_bytes = optimizer_state_factor(cfg.optimizer) * grad_bytes
    buffer_bytes = _nbytes(module.buffers())

    probe = copy.deepcopy(module).to("cpu").train()
    with torch.random.fork_rng(devices=[]):
        saved = [_saved_bytes(probe, _probe_input(dims, input_kind, b)) for b in PROBES]
    per_sample_act = max(0.0, (saved[1] - saved[0]) / (PROBES[1] - PROBES[0]))
    fixed_act = max(0.0, saved[0] - per_sample_act * PROBES[0])
    precision = resolve_precision(cfg.amp, resolve_device(cfg.device))
    factor = precision.activation_bytes_factor
    input_per_sample = _probe_input(dims, input_kind, 1).numel() * 4  # fp32 inputs
    return {
        "parameters": param_bytes,
        "buffers": buffer_bytes,
        "gradients": grad_bytes,
        "optimizer_state": optim_bytes,
        "fixed_activations": fixed_act * factor,
        "per_sample": per_sample_act * factor + input_per_sample,
        "per_sample_activations": per_sample_act * factor,
        "per_sample_input": input_per_sample,
        "precision": precision.name,
    }


def estimate_memory(
    module: nn.Module, dims: ModelDims, input_kind: str, batch_size: int, cfg: TrainConfig
) -> dict[str, Any]:
    """Training memory in bytes by part, for `batch_size` samples per step.

    Keys: parameters, buffers, gradients, optimizer_state, activations, inputs, total
    (ints, bytes), batch_size, per_sample_bytes, precision.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: use a positive batch size")
    m = _measure(module, dims, input_kind, cfg)
    activations = int(m["fixed_activations"] + m["per_sample_activations"] * batch_size)
    inputs = int(m["per_sample_input"] * batch_size)
    parts = {
        "parameters": int(m["parameters"]),
        "buffers": int(m["buffers"]),
        "gradients": int(m["gradients"]),
        "optimizer_state": int(m["optimizer_state"]),
        "activations": activations,
        "inputs": inputs,
    }
    return {
        **parts,
        "total": sum(parts.values()),
        "batch_size": batch_size,
        "per_sample_bytes": float(m["per_sample"]),
        "precision": m["precision"],
    }


def auto_batch_size(
    module: nn.Module,
    dims: ModelDims,
    input_kind: str,
    budget_bytes: int,
    cfg: TrainConfig,
    max_batch: int = 4096,
) -> int:
    """Largest batch size whose `estimate_memory` total fits `budget_bytes`, capped at
    `max_batch`, rounded down to a multiple of 8 once it is at least 8 (GPU-friendly)."""
    if max_batch < 1:
        raise ValueError(f"max_batch={max_batch}: use a positive cap such as 4096")
    m = _measure(module, dims, input_kind, cfg)
    fixed = (
        m["parameters"]
        + m["buffers"]
        + m["gradients"]
        + m["optimizer_state"]
        + m["fixed_activations"]
    )
    room = budget_bytes - fixed
    if room < m["per_sample"]:
        raise ValueError(
            f"budget {budget_bytes} bytes is below the {int(fixed + m['per_sample'])} bytes one "
            "sample needs (parameters, gradients, optimizer state, activations); raise the "
            "budget, shrink the model or use optimizer='sgd'"
        )
    batch = min(max_batch, int(room // m["per_sample"]))
    if batch >= 8:
        batch -= batch % 8
    return batch
