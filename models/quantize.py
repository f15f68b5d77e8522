"""int8 dynamic quantization of a trained deep model for CPU inference.

`quantize_model` swaps nn.Linear, nn.LSTM and nn.GRU for their dynamically quantized
versions (`torch.ao.quantization.quantize_dynamic`, qint8 weights, activations quantized
on the fly); convolutions, norms and custom attention arithmetic stay float. torch 2.13
still ships this API (it warns that it moves to torchao; those deprecation warnings are
silenced here and nothing else). `quantization_report` measures what it costs and buys
on one split: accuracy of both models, how often they agree, the largest probability
change, and the CPU time of both, timed side by side.

The quantized model is for inference only: `DeepModel.save` refuses it; save the float
model and quantize after loading.
"""

from __future__ import annotations

import copy
import io
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from data.prepared import PreparedSymbol
from models.deep import DeepModel

QUANTIZABLE = (nn.Linear, nn.LSTM, nn.GRU)


def quantize_model(model: DeepModel) -> DeepModel:
    """A CPU copy of `model` with int8 dynamic quantization (the original is untouched)."""
    if model.quantized:
        raise ValueError(f"{model.name} is already quantized; quantize the float model")
    from torch.ao.quantization import quantize_dynamic

    module = copy.deepcopy(model.module).cpu().eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        qmodule = quantize_dynamic(module, set(QUANTIZABLE), dtype=torch.qint8)
    return DeepModel(
        model.name,
        qmodule,
        model_config=model.model_config,
        train_config=model.train_config,
        dims=model.dims,
        input_kind=model.input_kind,
        info=model.info,
        target_scale=model.target_scale,
        resid_std=model.resid_std,
        scale=model.scale,
        result=model.result,
        quantized=True,
    )


def layer_counts(module: nn.Module) -> dict[str, int]:
    """How many Linear/LSTM/GRU layers are float vs dynamically quantized."""
    dynamic = "torch.ao.nn.quantized.dynamic"
    quantized = sum(
        1
        for m in module.modules()
        if type(m).__module__.startswith(dynamic) and type(m).__name__ in ("Linear", "LSTM", "GRU")
    )
    float_layers = sum(1 for m in module.modules() if type(m) in QUANTIZABLE)
    return {"quantized": quantized, "float": float_layers}


def _state_bytes(module: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _side_by_side(fns: tuple[Callable[[], Any], ...], repeats: int) -> list[float]:
    """Best-of-`repeats` seconds of each fn, run in turn each round so that load changes on
    the machine hit both alike."""
    for fn in fns:
        fn()  # warm-up: first-call allocations and weight packing
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def quantization_report(
    model: DeepModel,
    prepared: PreparedSymbol,
    split: str = "test",
    *,
    repeats: int = 5,
    batch_size: int = 4096,
) -> dict[str, Any]:
    """Accuracy change and CPU speedup of int8 dynamic quantization on `split`.

    Both models run on the CPU with the current torch thread count, taking turns each
    round; times are the best of `repeats` full passes over the split.
    """
    from models.leaderboard import model_inputs

    if repeats < 1:
        raise ValueError(f"repeats={repeats}: use at least 1")
    float_model = model
    if model.device.type != "cpu":
        float_model = copy.copy(model)
        float_model.module = copy.deepcopy(model.module).cpu()
    qmodel = quantize_model(float_model)
    x = model_inputs(float_model, prepared, split)
    y = prepared.y_class[prepared.splits[split]]
    p_float = float_model.predict_proba(x)
    p_int8 = qmodel.predict_proba(x)
    pred_float, pred_int8 = p_float.argmax(-1), p_int8.argmax(-1)

    t_float, t_int8 = _side_by_side(
        (lambda: float_model.outputs(x, batch_size), lambda: qmodel.outputs(x, batch_size)),
        repeats,
    )
    acc_float, acc_int8 = float(np.mean(pred_float == y)), float(np.mean(pred_int8 == y))
    report: dict[str, Any] = {
        "model": model.name,
        "split": split,
        "n": int(len(y)),
        "float_accuracy": acc_float,
        "int8_accuracy": acc_int8,
        "accuracy_change": acc_int8 - acc_float,
        "agreement": float(np.mean(pred_float == pred_int8)),
        "max_proba_diff": float(np.abs(p_float - p_int8).max()) if len(y) else 0.0,
        "float_seconds": t_float,
        "int8_seconds": t_int8,
        "speedup": t_float / t_int8 if t_int8 > 0 else float("inf"),
        "float_bytes": _state_bytes(float_model.module),
        "int8_bytes": _state_bytes(qmodel.module),
        "layers": layer_counts(qmodel.module),
        "threads": torch.get_num_threads(),
    }
    if model.task == "return":
        r = prepared.y_return[prepared.splits[split]]
        report["float_mse"] = float(np.mean((float_model.predict_return(x) - r) ** 2))
        report["int8_mse"] = float(np.mean((qmodel.predict_return(x) - r) ** 2))
    return report
