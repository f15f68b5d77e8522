"""Losses, validation metrics and the validation pass of the training loop.

Direction: cross-entropy over (B, H, 3) logits, averaged over samples and horizons;
with class weights, each horizon's loss is a weighted mean (the `F.cross_entropy`
convention) and horizons are averaged. Return: MSE over (B, H) scaled returns.

Early stopping monitors `val_loss` for direction (smooth, and unlike macro-F1 it still
moves while a young model predicts one class everywhere, which would otherwise exhaust
the patience on ties) and `val_mse` for return. Macro-F1 and accuracy are reported too.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.training.batching import TrainData, at_sample_time
from models.training.precision import Precision

N_CLASSES = 3


def monitor_name(task: str) -> str:
    """Name of the (minimised) validation metric early stopping watches."""
    return "val_loss" if task == "direction" else "val_mse"


def check_output(out: torch.Tensor, y: torch.Tensor, task: str, module: nn.Module) -> None:
    """Fail fast, naming the module, when its output does not match the task contract."""
    b, h = y.shape
    want = (b, h, N_CLASSES) if task == "direction" else (b, h)
    if tuple(out.shape) != want:
        raise ValueError(
            f"{type(module).__name__} returned shape {tuple(out.shape)}; task {task!r} needs "
            f"{want} ((B, H, 3) logits for direction, (B, H) for return); build the module "
            "with ModelDims(task=...) matching the training task"
        )


def compute_loss(
    out: torch.Tensor, y: torch.Tensor, task: str, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Scalar loss. out (B, H, 3) logits or (B, H); y (B, H); weights (H, 3) or None."""
    out = out.float()  # autocast may hand back bf16/fp16; losses are computed in fp32
    if task == "return":
        return F.mse_loss(out, y)
    if weights is None:
        # [B, H, 3] -> [B*H, 3]: mean over samples and horizons
        return F.cross_entropy(out.reshape(-1, N_CLASSES), y.reshape(-1))
    nll = -F.log_softmax(out, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (B, H)
    horizon = torch.arange(y.shape[1], device=y.device)
    w = weights[horizon[None, :], y]  # (B, H): weight of each target's class
    per_horizon = (w * nll).sum(0) / w.sum(0).clamp_min(1e-12)  # (H,)
    return per_horizon.mean()


def macro_f1(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(H,) macro-F1 per horizon over the classes present in y or pred (sklearn's rule)."""
    classes = torch.arange(N_CLASSES, device=y.device)
    p = pred.unsqueeze(-1) == classes  # (N, H, C)
    t = y.unsqueeze(-1) == classes
    tp = (p & t).sum(0).float()  # (H, C)
    fp = (p & ~t).sum(0).float()
    fn = (~p & t).sum(0).float()
    denom = 2 * tp + fp + fn
    present = denom > 0
    f1 = torch.where(present, 2 * tp / denom.clamp_min(1), torch.zeros_like(tp))
    return f1.sum(1) / present.sum(1).clamp_min(1)


@torch.no_grad()
def evaluate(
    module: nn.Module,
    data: TrainData,
    split: str,
    *,
    task: str,
    precision: Precision,
    weights: torch.Tensor | None,
    batch_size: int,
) -> dict[str, Any]:
    """Loss and metrics of `split`; keys: loss, metric, f1 | mse, accuracy, forward_seconds.

    Outputs of the whole split are kept on the device (N x H x 3 floats: small) and the
    loss is computed once over them, so weighted losses are exact rather than averaged
    over batches.
    """
    was_training = module.training
    module.eval()
    s = data.splits[split]
    n = len(s)
    outs = []
    forward = 0.0
    sync = data.device.type == "cuda"
    for start in range(0, n, batch_size):
        pos = torch.arange(start, min(start + batch_size, n), device=data.device)
        x, _ = data.batch(split, pos)
        if sync:
            torch.cuda.synchronize(data.device)
        t0 = time.perf_counter()
        with precision.autocast(data.device):
            outs.append(module(x).float())
        if sync:
            torch.cuda.synchronize(data.device)
        forward += time.perf_counter() - t0
    module.train(was_training)
    out = torch.cat(outs)
    check_output(out, s.y, task, module)
    loss = float(compute_loss(out, s.y, task, weights))
    result: dict[str, Any] = {"loss": loss, "forward_seconds": forward}
    if task == "direction":
        pred = out.argmax(-1)
        result["f1"] = float(macro_f1(pred, s.y).mean())
        result["accuracy"] = float((pred == s.y).float().mean())
        result["metric"] = loss
    else:
        result["mse"] = loss
        result["metric"] = loss
    return result


@torch.no_grad()
def return_residuals(
    module: nn.Module, data: TrainData, split: str, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """A return model's residuals on `split`, back in return units, (N, H), and each
    sample's features at its own time (N, F): the tabular row, or a window's last step."""
    if data.task != "return":
        raise ValueError("return_residuals needs TrainData built for task='return'")
    was_training = module.training
    module.eval()
    s = data.splits[split]
    preds, feats = [], []
    for i in range(0, len(s), batch_size):
        pos = torch.arange(i, min(i + batch_size, len(s)), device=data.device)
        x = data.batch(split, pos)[0]
        preds.append(module(x).float())
        feats.append(at_sample_time(x).float())
    module.train(was_training)
    resid = (s.y - torch.cat(preds)) * data.target_scale.to(data.device)  # (N, H)
    return (resid.cpu().numpy().astype(np.float64),
            torch.cat(feats).cpu().numpy().astype(np.float64))
