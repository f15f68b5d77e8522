"""The one training loop every deep model uses.

`train(module, data, cfg, task=...)` runs epochs of shuffled mini-batches gathered
straight from device tensors (see `batching`), validates each epoch, early-stops on the
validation metric (see `losses.monitor_name`) and restores the best weights at the end.
Callbacks see each epoch and can checkpoint (`trainer_state()`) or stop; a state from
`trainer_state()` / `load_checkpoint()` passed as `resume_state` continues the run
exactly where it left off (same losses and weights as an uninterrupted run).

Timing: `compute_seconds` covers forward, loss, backward, clipping and the optimizer
step of the training batches; `eval_seconds` the validation forward passes;
`other_seconds` the rest of the epoch (shuffling, batch gathering, validation metrics,
bookkeeping). `overhead_fraction` = other / epoch time. On CUDA the loop synchronizes
around the timed regions so the split is truthful.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.config import TrainConfig
from models.training.batching import TrainData, batch_bounds, class_weights
from models.training.callbacks import Callback, EarlyStopping
from models.training.checkpoint import FORMAT_VERSION, capture_rng, restore_rng
from models.training.losses import check_output, compute_loss, evaluate, monitor_name
from models.training.optim import build_optimizer, build_scheduler, current_lr, steps_per_batch
from models.training.precision import (
    deterministic_algorithms,
    resolve_device,
    resolve_precision,
    seed_everything,
)

EPOCH_METRICS = (
    "epoch",
    "train_loss",
    "val_loss",
    "val_metric",
    "lr",
    "epoch_seconds",
    "samples_per_sec",
    "compute_seconds",
    "eval_seconds",
    "other_seconds",
    "overhead_fraction",
)  # plus val_f1 + val_accuracy (direction) or val_mse (return)


@dataclass(frozen=True)
class TrainResult:
    best_epoch: int
    epochs_run: int  # epochs completed in total, resumed ones included
    best_metric: float
    monitor: str  # name of best_metric: "val_loss" (direction) or "val_mse" (return)
    history: list[dict[str, Any]]
    # wall time of this call, plus the training time (epochs and callbacks) of the epochs a
    # resumed run had trained before its checkpoint: a unit's whole training, not the rest
    train_seconds: float
    samples_per_sec: float  # training samples per second of epoch time (validation included)
    overhead_fraction: float  # share of epoch + callback time outside model compute
    stop_reason: str  # "epochs" | "early_stopping" | "callback" | "already_finished"
    device: str
    precision: str


def _cpu_clone(tree: Any) -> Any:
    """Deep copy with every tensor detached onto the CPU (checkpoint-safe snapshot)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {k: _cpu_clone(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_cpu_clone(v) for v in tree)
    return copy.deepcopy(tree)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(
    module: nn.Module,
    data: TrainData,
    cfg: TrainConfig,
    *,
    task: str,
    callbacks: Sequence[Callback] = (),
    resume_state: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `module` on `data` with `cfg`; see the module docstring."""
    if task != data.task:
        raise ValueError(f"task={task!r} but TrainData was built for {data.task!r}; rebuild it")
    if cfg.class_weights and task != "direction":
        raise ValueError("TrainConfig.class_weights=True needs task='direction'; set it False")
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.amp, device)
    data = data if data.device == device else data.to(device)
    module.to(device)
    module.train()

    bounds = batch_bounds(len(data.train), cfg.batch_size)
    n_used = bounds[-1][1]
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, cfg)
    scheduler = build_scheduler(optimizer, cfg, len(bounds))
    per_step = steps_per_batch(scheduler)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
    weights = class_weights(data.train.y) if cfg.class_weights else None
    shuffle = torch.Generator().manual_seed(cfg.seed)
    monitor = monitor_name(task)
    stopper = EarlyStopping(cfg.patience, cfg.min_delta)
    history: list[dict[str, Any]] = []
    best_weights: dict[str, torch.Tensor] | None = None
    start_epoch, finished, stop_reason = 0, False, "epochs"
    resumed_seconds = 0.0

    if resume_state is None:
        seed_everything(cfg.seed)
    else:
        if resume_state.get("format_version") != FORMAT_VERSION:
            raise ValueError("resume_state is not a trainer state; pass trainer_state() output")
        if resume_state["steps_per_epoch"] != len(bounds):
            raise ValueError(
                f"checkpoint has {resume_state['steps_per_epoch']} steps per epoch, this data "
                f"and batch_size give {len(bounds)}; resume with the same data and TrainConfig"
            )
        module.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        if precision.use_scaler and resume_state["scaler"]:
            scaler.load_state_dict(resume_state["scaler"])
        stopper.best = float(resume_state["best_metric"])
        stopper.best_epoch = int(resume_state["best_epoch"])
        stopper.counter = int(resume_state["patience_counter"])
        # restore_best=False (a refit) keeps the last epoch: an older checkpoint's best
        # snapshot must not come back at the end
        best_weights = resume_state["best_weights"] if cfg.restore_best else None
        history = copy.deepcopy(list(resume_state["history"]))
        resumed_seconds = sum(h.get("epoch_seconds", 0.0) + h.get("callback_seconds", 0.0)
                              for h in history)
        start_epoch = int(resume_state["epoch"]) + 1
        finished = bool(resume_state.get("finished", False))
        stop_reason = "already_finished" if finished else stop_reason
        restore_rng(resume_state["rng"], shuffle, device)

    epoch = start_epoch - 1

    def trainer_state() -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": _cpu_clone(module.state_dict()),
            "optimizer": _cpu_clone(optimizer.state_dict()),
            "scheduler": _cpu_clone(scheduler.state_dict()),
            "scaler": _cpu_clone(scaler.state_dict()) if precision.use_scaler else {},
            "epoch": epoch,
            "best_metric": stopper.best,
            "best_epoch": stopper.best_epoch,
            "best_weights": best_weights,  # already a CPU snapshot, never mutated in place
            "patience_counter": stopper.counter,
            "rng": capture_rng(shuffle, device),
            "history": copy.deepcopy(history),
            "train_config": dataclasses.asdict(cfg),
            "task": task,
            "monitor": monitor,
            "steps_per_epoch": len(bounds),
            "finished": finished,
        }

    with deterministic_algorithms(device):
        for epoch in range(start_epoch, cfg.epochs):
            if finished:
                break
            t_epoch = time.perf_counter()
            compute, losses, lr_used = 0.0, [], cfg.lr
            perm = torch.randperm(len(data.train), generator=shuffle).to(device)
            rows, targets = data.shuffled("train", perm)  # (N,), (N, H) in epoch order
            for step, (a, b) in enumerate(bounds):
                x, y = data.inputs(rows[a:b]), targets[a:b]  # (B, F) | (B, L, F), (B, H)
                _sync(device)
                t0 = time.perf_counter()
                with precision.autocast(device):
                    out = module(x)
                if epoch == start_epoch and step == 0:
                    check_output(out, y, task, module)
                loss = compute_loss(out, y, task, weights)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                _sync(device)
                compute += time.perf_counter() - t0
                losses.append(loss.detach())  # summed once per epoch: no per-step sync
                lr_used = current_lr(optimizer)
                if per_step:
                    scheduler.step()
            sizes = torch.tensor([b - a for a, b in bounds], device=device, dtype=torch.float32)
            train_loss = float((torch.stack(losses).float() * sizes).sum()) / n_used
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"training loss is {train_loss} at epoch {epoch}; lower TrainConfig.lr, "
                    "keep grad_clip > 0 or check the inputs for extreme values"
                )
            val = evaluate(
                module,
                data,
                "val",
                task=task,
                precision=precision,
                weights=weights,
                batch_size=max(2 * cfg.batch_size, 1024),
            )
            if not per_step:
                scheduler.step(val["metric"])
            if stopper.update(val["metric"], epoch) and cfg.restore_best:
                best_weights = _cpu_clone(module.state_dict())
            epoch_seconds = time.perf_counter() - t_epoch
            other = max(0.0, epoch_seconds - compute - val["forward_seconds"])
            metrics: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val["loss"],
                "val_metric": val["metric"],
                **({"val_f1": val["f1"], "val_accuracy": val["accuracy"]} if "f1" in val else {}),
                **({"val_mse": val["mse"]} if "mse" in val else {}),
                "lr": lr_used,
                "epoch_seconds": epoch_seconds,
                "samples_per_sec": n_used / epoch_seconds,
                "compute_seconds": compute,
                "eval_seconds": val["forward_seconds"],
                "other_seconds": other,
                "overhead_fraction": other / epoch_seconds,
            }
            history.append(metrics)
            if stopper.should_stop:
                finished, stop_reason = True, "early_stopping"
            elif epoch == cfg.epochs - 1:
                finished = True
            t_cb = time.perf_counter()
            requested = [
                bool(cb.on_epoch_end(epoch, dict(metrics), trainer_state)) for cb in callbacks
            ]
            metrics["callback_seconds"] = time.perf_counter() - t_cb  # lands in history
            if finished:
                break
            if any(requested):
                stop_reason = "callback"
                break

    if best_weights is not None:
        module.load_state_dict(best_weights)
    elif not cfg.restore_best and history:  # the weights kept are the last epoch's
        stopper.best_epoch, stopper.best = history[-1]["epoch"], history[-1]["val_metric"]
    return _result(history, stopper, monitor, stop_reason, started - resumed_seconds, device,
                   precision.name)


def _result(
    history: list[dict[str, Any]],
    stopper: EarlyStopping,
    monitor: str,
    stop_reason: str,
    started: float,  # perf_counter() at the start, earlier by a resumed run's time before
    device: torch.device,
    precision: str,
) -> TrainResult:
    epoch_time = sum(h["epoch_seconds"] for h in history)
    callback_time = sum(h.get("callback_seconds", 0.0) for h in history)
    other_time = sum(h["other_seconds"] for h in history) + callback_time
    samples = sum(h["samples_per_sec"] * h["epoch_seconds"] for h in history)
    total = epoch_time + callback_time
    return TrainResult(
        best_epoch=stopper.best_epoch,
        epochs_run=len(history),
        best_metric=stopper.best,
        monitor=monitor,
        history=history,
        train_seconds=time.perf_counter() - started,
        samples_per_sec=samples / epoch_time if epoch_time > 0 else 0.0,
        overhead_fraction=other_time / total if total > 0 else 0.0,
        stop_reason=stop_reason,
        device=str(device),
        precision=precision,
    )
