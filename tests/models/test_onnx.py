"""ONNX export of every deep model, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from models.config import ModelDims
from models.export import check_onnx, example_input, export_onnx
from models.registry import build_module, get_spec, list_models, resolve

F, L, H = 12, 16, 4
DEEP = list_models("deep")


def _trained_looking(name: str, task: str = "direction") -> tuple[torch.nn.Module, ModelDims]:
    """A model whose BatchNorm running statistics are no longer the initial 0 / 1."""
    torch.manual_seed(1)
    dims = ModelDims(n_features=F, seq_len=L, n_horizons=H, task=task)
    model = build_module(name, resolve(name, "fast").model, dims).train()
    with torch.no_grad():
        model(example_input(dims, get_spec(name).input, batch=16) * 2.0 + 0.5)
    return model, dims


@pytest.mark.parametrize("task", ["direction", "return"])
@pytest.mark.parametrize("name", DEEP)
def test_export_matches_pytorch_on_other_batch_sizes(name: str, task: str, tmp_path: Path) -> None:
    model, dims = _trained_looking(name, task)
    kind = get_spec(name).input
    path = export_onnx(model, dims, kind, tmp_path / f"{name}.onnx")  # default exporter
    assert model.training, "export must restore the module's training mode"
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.onnx"]  # weights inside the file
    for batch in (1, 5):  # exported with batch 2: proves the dynamic batch axis
        assert check_onnx(model, path, example_input(dims, kind, batch=batch)) < 1e-4


# The dynamo exporter costs 3-10 s per model; by default a subset covering convolutions with
# BatchNorm, attention and a recurrent layer runs. QUANTRAY_SLOW_TESTS=1 checks all eleven.
DYNAMO_MODELS = DEEP if os.environ.get("QUANTRAY_SLOW_TESTS") else ["cnn", "transformer", "lstm"]


@pytest.mark.parametrize("name", DYNAMO_MODELS)
def test_dynamo_export_matches_pytorch(name: str, tmp_path: Path) -> None:
    model, dims = _trained_looking(name)
    kind = get_spec(name).input
    path = export_onnx(model, dims, kind, tmp_path / "m.onnx", exporter="dynamo")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    for batch in (1, 5):
        assert check_onnx(model, path, example_input(dims, kind, batch=batch)) < 1e-4


def test_check_onnx_detects_a_model_that_changed_after_export(tmp_path: Path) -> None:
    model, dims = _trained_looking("gru", task="return")
    path = export_onnx(model, dims, "sequence", tmp_path / "gru.onnx")
    x = example_input(dims, "sequence", batch=4)
    assert check_onnx(model, path, x) < 1e-4
    with torch.no_grad():
        model.head.proj.bias.add_(0.5)
    assert check_onnx(model, path, x) == pytest.approx(0.5, abs=1e-4)


def test_export_rejects_unknown_exporter_and_input_kind(tmp_path: Path) -> None:
    model, dims = _trained_looking("mlp")
    with pytest.raises(ValueError, match="exporter='jit'"):
        export_onnx(model, dims, "tabular", tmp_path / "m.onnx", exporter="jit")
    with pytest.raises(ValueError, match="input_kind='image'"):
        export_onnx(model, dims, "image", tmp_path / "m.onnx")
