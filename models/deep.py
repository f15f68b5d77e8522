"""Deep models as FittedModels: `fit_deep` trains a zoo model with the one training loop;
`DeepModel` predicts, explains (`interpret`), saves and loads it.

Predictions run in batches without gradients on the module's device. Direction models
give softmax probabilities (n, H, 3). Return models were trained on returns divided by
the per-horizon training std (`target_scale`); `predict_return` scales back, and
`predict_proba` treats the forecast as a Gaussian predictive distribution and integrates
it over the training class bands, the same rule as the linear models (see
models/linear/base.py), so both land in one leaderboard. Its scale is conditional, as a
linear model's default: a regression of the log squared training residual on the inputs
at each sample's time (the tabular row, or a window's last step), so a calm bar gets a
narrow distribution and can be called flat. With the residual std on every row (models
saved before the conditional scale) P(flat) never wins: such a model never predicts flat.

Storage, no pickle: `weights.pt` (a state_dict, read with `torch.load(weights_only=True)`)
and `metadata.json` (model name, configs, dims, data window, scaler, thresholds, versions,
history); `DeepModel.load` rebuilds the module through the registry.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr
from torch import nn

from data.prepared import PreparedSymbol
from models.config import ModelDims, TrainConfig, config_from_dict
from models.linear.base import LogScale, fit_log_scale
from models.spec import artifact_errors, check_finite, read_metadata, save_artifact_files
from models.training import Callback, TrainData, TrainResult, load_checkpoint, train
from models.training.batching import at_sample_time
from models.training.checkpoint import json_safe
from models.training.losses import return_residuals
from models.training.precision import resolve_device, seed_everything

WEIGHTS_FILE = "weights.pt"
METADATA_FILE = "metadata.json"
INFER_BATCH = 4096
RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(TrainResult) if f.name != "history")


class DeepModel:
    """A trained deep model (FittedModel protocol)."""

    kind = "deep"

    def __init__(
        self,
        name: str,
        module: nn.Module,
        *,
        model_config: Any,
        train_config: TrainConfig,
        dims: ModelDims,
        input_kind: str,
        info: dict[str, Any],
        target_scale: np.ndarray | None = None,
        resid_std: np.ndarray | None = None,
        scale: LogScale | None = None,
        result: TrainResult | None = None,
        quantized: bool = False,
    ) -> None:
        self.name = name
        self.module = module.eval()
        self.model_config = model_config
        self.train_config = train_config
        self.dims = dims
        self.input_kind = input_kind
        self.info = dict(info)  # symbol, horizons, feature names, scaler, thresholds, window
        ones = np.ones(dims.n_horizons, dtype=np.float32)
        self.target_scale = ones if target_scale is None else np.asarray(target_scale, np.float32)
        self.resid_std = None if resid_std is None else np.asarray(resid_std, np.float64)
        self.scale = scale  # the conditional scale of a return model (None: resid_std)
        self.thresholds = np.asarray(self.info["thresholds"], dtype=np.float64)  # (H,)
        sizes = {"thresholds": self.thresholds.size, "target_scale": self.target_scale.size}
        if self.resid_std is not None:
            sizes["resid_std"] = self.resid_std.size
        if "horizons" in self.info:
            sizes["horizons"] = len(self.info["horizons"])
        wrong = {k: v for k, v in sizes.items() if v != dims.n_horizons}
        if wrong:
            raise ValueError(f"{name}: sizes {wrong} do not match its {dims.n_horizons} horizons")
        self.result = result
        self.history: list[dict[str, Any]] = list(result.history) if result else []
        self.quantized = quantized

    # ---- shapes -------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.dims.task

    @property
    def seq_len(self) -> int | None:
        return self.dims.seq_len if self.input_kind == "sequence" else None

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters(), torch.empty(0)).device

    def _tensor(self, x: np.ndarray) -> torch.Tensor:
        """Check the input layout; keep the last seq_len steps of longer windows."""
        x = np.asarray(x, dtype=np.float32)
        f = self.dims.n_features
        if self.input_kind == "tabular":
            if x.ndim != 2 or x.shape[1] != f:
                raise ValueError(f"{self.name}: expected tabular inputs (n, {f}), got {x.shape}")
        else:
            length = self.dims.seq_len
            if x.ndim != 3 or x.shape[2] != f or x.shape[1] < length:
                raise ValueError(
                    f"{self.name}: expected windows (n, L >= {length}, {f}), got {x.shape}; "
                    "pass PreparedSymbol.X_seq rows"
                )
            x = x[:, -length:, :]  # [n, L', F] -> [n, L, F]: the most recent steps
        check_finite(self.name, x)
        return torch.from_numpy(np.ascontiguousarray(x))

    @torch.no_grad()
    def outputs(self, x: np.ndarray, batch_size: int = INFER_BATCH) -> np.ndarray:
        """Raw module outputs in batches: (n, H, 3) logits or (n, H) scaled returns."""
        xt = self._tensor(x)
        self.module.eval()
        dev = self.device
        parts = [
            self.module(xt[i : i + batch_size].to(dev)).float().cpu()
            for i in range(0, xt.shape[0], batch_size)
        ]
        if not parts:
            shape = (0, self.dims.n_horizons) + ((3,) if self.task == "direction" else ())
            return np.zeros(shape, dtype=np.float32)
        return torch.cat(parts).numpy()

    # ---- FittedModel protocol -----------------------------------------------------
    def predict_return(self, x: np.ndarray) -> np.ndarray | None:
        """(n, H) forward log returns (return task), None for a direction classifier."""
        if self.task != "return":
            return None
        return (self.outputs(x) * self.target_scale[None, :]).astype(np.float32)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, H, 3) P(down), P(flat), P(up)."""
        if self.task == "direction":
            return torch.softmax(torch.from_numpy(self.outputs(x)), dim=-1).numpy()
        if self.resid_std is None:
            raise ValueError(f"{self.name}: return model without resid_std; refit or re-save it")
        mu = self.predict_return(x).astype(np.float64)  # (n, H)
        if self.scale is not None:  # the inputs at each sample's own time
            sigma = np.maximum(self.scale(at_sample_time(np.asarray(x, np.float64))), 1e-12)
        else:  # a model saved before the conditional scale: the residual std everywhere
            sigma = np.maximum(self.resid_std, 1e-12)[None, :]
        tau = self.thresholds[None, :]
        p_down, p_up = ndtr((-tau - mu) / sigma), ndtr((mu - tau) / sigma)
        p_flat = np.clip(1.0 - p_down - p_up, 0.0, 1.0)
        proba = np.stack([p_down, p_flat, p_up], axis=-1)  # (n, H, 3)
        return (proba / proba.sum(-1, keepdims=True)).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n, H) classes: argmax of `predict_proba`."""
        return self.predict_proba(x).argmax(axis=-1).astype(np.int64)

    @torch.no_grad()
    def interpret(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The module's `interpret` hook (hidden states and/or attention weights) as numpy."""
        hook = getattr(self.module, "interpret", None)
        if hook is None:
            raise ValueError(
                f"{self.name} has no interpret hook; use a recurrent or attention model "
                "(registry specs with hooks, e.g. lstm, seq2seq, transformer)"
            )
        self.module.eval()
        out = hook(self._tensor(x).to(self.device))
        return {k: v.float().cpu().numpy() for k, v in out.items()}

    # ---- storage ------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        from importlib.metadata import version

        result = None
        if self.result is not None:
            result = {k: getattr(self.result, k) for k in RESULT_FIELDS}
        return json_safe(
            {
                "kind": self.kind,
                "model": self.name,
                "input_kind": self.input_kind,
                "task": self.task,
                "config": dataclasses.asdict(self.model_config),
                "train_config": dataclasses.asdict(self.train_config),
                "dims": dataclasses.asdict(self.dims),
                "seq_len": self.seq_len,
                "target_scale": self.target_scale.tolist(),
                "resid_std": None if self.resid_std is None else self.resid_std.tolist(),
                "scale": None if self.scale is None else {
                    k: v.tolist() for k, v in self.scale.arrays().items()},
                "result": result,
                "history": self.history,
                "versions": {p: version(p) for p in ("torch", "numpy", "quantray")},
                **self.info,
            }
        )

    def artifact_files(self) -> dict[str, bytes]:
        """{weights.pt (state_dict), metadata.json}: the files `save` writes."""
        if self.quantized:
            raise ValueError(
                f"{self.name}: an int8-quantized model is for inference only; save the float "
                "model and quantize after loading (models.quantize.quantize_model)"
            )
        state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        buf = io.BytesIO()
        torch.save(state, buf)
        text = json.dumps(self.metadata(), indent=2, default=str)
        return {WEIGHTS_FILE: buf.getvalue(), METADATA_FILE: text.encode("utf-8")}

    def save(self, directory: str) -> None:
        """Write weights.pt (state_dict) and metadata.json into `directory` (created)."""
        save_artifact_files(directory, self.artifact_files())

    @classmethod
    def load(cls, directory: str, device: str = "cpu") -> DeepModel:
        """Rebuild from `save`'s files through the registry; weights read weights_only.
        Unreadable files raise `models.spec.ArtifactError` naming the directory."""
        path = Path(directory)
        meta = read_metadata(str(path))
        dev = resolve_device(device)
        with artifact_errors(str(path), meta.get("model")):
            return cls._from_files(path, meta, dev)

    @classmethod
    def _from_files(cls, path: Path, meta: dict[str, Any], device: torch.device) -> DeepModel:
        from models.registry import build_module, get_spec

        name = meta["model"]
        spec = get_spec(name)
        config = config_from_dict(spec.config_cls, meta["config"], where=name)
        dims = ModelDims(**meta["dims"])
        module = build_module(name, config, dims)
        state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
        module.to(device)
        result = None
        if meta.get("result") is not None:
            values = {k: float(v) if v in ("inf", "-inf", "nan") else v
                      for k, v in meta["result"].items()}
            result = TrainResult(history=meta.get("history", []), **values)
        reserved = {"kind", "model", "input_kind", "task", "config", "train_config", "dims",
                    "seq_len", "target_scale", "resid_std", "scale", "result", "history",
                    "versions"}
        return cls(
            name,
            module,
            model_config=config,
            train_config=TrainConfig.from_dict(meta["train_config"]),
            dims=dims,
            input_kind=meta["input_kind"],
            info={k: v for k, v in meta.items() if k not in reserved},
            target_scale=np.asarray(meta["target_scale"], dtype=np.float32),
            resid_std=None if meta["resid_std"] is None else np.asarray(meta["resid_std"]),
            scale=LogScale.from_arrays({k: np.asarray(v, dtype=np.float64)
                                        for k, v in (meta.get("scale") or {}).items()}),
            result=result,
        )  # fmt: skip


def data_info(prepared: PreparedSymbol, preset: str) -> dict[str, Any]:
    """What a saved model records about the data it was trained on."""
    return {
        "preset": preset,
        "symbol": prepared.symbol,
        "fold": prepared.fold,
        "horizons": list(prepared.horizons),
        "feature_names": list(prepared.feature_names),
        "scaler": {"mean": prepared.scaler_mean.tolist(), "std": prepared.scaler_std.tolist()},
        "thresholds": prepared.thresholds.tolist(),
        "data_window": prepared.data_window(),
        "data_meta": prepared.meta,
    }


def fit_deep(
    name: str,
    prepared: PreparedSymbol,
    *,
    preset: str = "fast",
    overrides: dict[str, Any] | None = None,
    task: str = "direction",
    callbacks: Sequence[Callback] = (),
    resume_from: str | os.PathLike[str] | dict[str, Any] | None = None,
    device: str | None = None,
) -> DeepModel:
    """Train zoo model `name` on one prepared symbol with the one training loop.

    `resume_from`: a checkpoint directory (from `CheckpointEvery` / `save_checkpoint`)
    or a trainer-state dict. `device` overrides TrainConfig.device. The training stats
    are kept on the returned model as `.result`.
    """
    from models.registry import build_module, get_spec, resolve

    spec = get_spec(name)
    if spec.kind != "deep":
        raise ValueError(f"{name} is a {spec.kind} model; fit it with models.api.fit")
    resolved = resolve(name, preset, overrides)
    cfg = resolved.train if device is None else dataclasses.replace(resolved.train, device=device)
    seq_len = resolved.seq_len if spec.input == "sequence" else 1
    dims = ModelDims(prepared.n_features, seq_len, len(prepared.horizons), task)
    data = TrainData.from_prepared(
        prepared, spec.input, task, seq_len=seq_len, device=resolve_device(cfg.device)
    )
    seed_everything(cfg.seed)  # the module's initial weights depend on the seed too
    module = build_module(name, resolved.model, dims)
    state = resume_from
    if isinstance(resume_from, str | os.PathLike):
        state = load_checkpoint(resume_from)
    result = train(module, data, cfg, task=task, callbacks=callbacks, resume_state=state)
    resid_std = scale = None
    if task == "return":  # the predictive distribution's scale, as a linear model's
        residuals, features = return_residuals(module, data, "train")
        resid_std = residuals.std(axis=0, ddof=1)
        scale, _ = fit_log_scale(features, residuals.T)
    return DeepModel(
        name,
        module,
        model_config=resolved.model,
        train_config=cfg,
        dims=dims,
        input_kind=spec.input,
        info=data_info(prepared, preset),
        target_scale=data.target_scale.numpy(),
        resid_std=resid_std,
        scale=scale,
        result=result,
    )
