"""ONNX export of deep models, with a numerical check against PyTorch via onnxruntime.

Two exporters, both checked on all eleven zoo models (outputs match PyTorch to ~1e-7):
- "torchscript" (default): `torch.onnx.export(..., dynamo=False)`. torch 2.13 still ships
  it but marks it deprecated; it exports a zoo model in ~0.1 s.
- "dynamo": the torch.export-based exporter, torch's default since 2.9. Same graphs (ONNX
  GRU/LSTM ops, nothing unrolled), but 3-10 s per model on CPU: as long as the fitting of a
  `fast` preset, so it is not the default for per-unit artifacts. Switch the default when
  torch drops the TorchScript exporter.

The graph has one input "x" ([B, F] tabular or [B, L, F] sequence) and one output
"output" ([B, H, 3] logits or [B, H] returns); only the batch axis is dynamic, because
some models (transformer, temporal_attention) are built for a fixed window length.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.config import ModelDims

INPUT_KINDS = ("tabular", "sequence")
EXPORTERS = ("torchscript", "dynamo")
OPSET = 18
INPUT_NAME, OUTPUT_NAME = "x", "output"
# Export with batch 2: torch.export specialises sizes 0 and 1, which would fix the axis.
_EXAMPLE_BATCH = 2


def example_input(dims: ModelDims, input_kind: str, batch: int = _EXAMPLE_BATCH) -> torch.Tensor:
    """A random input of the layout a model of `input_kind` reads."""
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind={input_kind!r}: use one of {INPUT_KINDS} (ModelSpec.input)")
    if input_kind == "tabular":
        return torch.randn(batch, dims.n_features)  # [B, F]
    return torch.randn(batch, dims.seq_len, dims.n_features)  # [B, L, F]


def export_onnx(
    module: nn.Module,
    dims: ModelDims,
    input_kind: str,
    path: str | Path,
    *,
    exporter: str = "torchscript",
) -> Path:
    """Write `module` (in eval mode) to a single self-contained ONNX file at `path`."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter={exporter!r}: use one of {EXPORTERS}")
    if any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in module.modules()):
        # both exporters fail inside torch on these layers, with a graph dump on stderr
        raise ValueError(
            "an int8-quantized module (models.quantize) cannot be exported to ONNX: export the"
            " float model, then quantize the ONNX file (onnxruntime.quantization) if needed"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = example_input(dims, input_kind)
    was_training = module.training
    module.eval()  # dropout off, BatchNorm on running statistics: the serving graph
    try:
        with warnings.catch_warnings(), _quiet_exporter_logs():
            _ignore_known_export_warnings()
            if exporter == "dynamo":
                torch.onnx.export(
                    module,
                    (x,),
                    str(path),
                    dynamo=True,
                    verbose=False,
                    external_data=False,
                    opset_version=OPSET,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                )
            else:
                torch.onnx.export(
                    module,
                    (x,),
                    str(path),
                    dynamo=False,
                    opset_version=OPSET,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                )
    finally:
        module.train(was_training)
    return path


def _ignore_known_export_warnings() -> None:
    """Warnings the zoo triggers on every export, none of which changes the graph."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the exporter itself
    warnings.filterwarnings("ignore", category=FutureWarning)
    # Input-layout checks compare static sizes (F, L); only the batch axis is dynamic.
    warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
    # We never pass variable-length (packed) sequences.
    warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size")
    warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
    # torch.export notices nn.LSTM/nn.GRU refreshing their flat weight list; values unchanged.
    warnings.filterwarnings("ignore", message="The tensor attributes .*_flat_weights")


@contextlib.contextmanager
def _quiet_exporter_logs() -> Iterator[None]:
    """Silence the dynamo exporter's per-op registration warnings (e.g. torchvision absent)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_onnx(module: nn.Module, path: str | Path, x: torch.Tensor | np.ndarray) -> float:
    """Max absolute difference between onnxruntime and PyTorch (eval mode) outputs on `x`."""
    import onnxruntime as ort  # imported here: only export checks need the runtime

    x_t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if x_t.ndim == 0 or x_t.shape[0] == 0:
        # onnxruntime aborts the whole process on an empty batch through an LSTM/GRU node
        raise ValueError(f"check_onnx needs at least one input row; got shape {tuple(x_t.shape)}")
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            expected = module(x_t).numpy()
    finally:
        module.train(was_training)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x_t.numpy()})
    if got.shape != expected.shape:
        raise ValueError(
            f"{path}: ONNX output shape {got.shape} != PyTorch {expected.shape}; re-export"
            " the model for these dims"
        )
    return float(np.max(np.abs(got - expected))) if got.size else 0.0
