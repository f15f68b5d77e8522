"""The one entry point to every model: fit, load, evaluate, and the sequential sweep.

`fit` dispatches on the model's kind: linear models (`models.linear`) are fitted in closed
form / by coordinate descent on the training split; deep models go through the one
training loop (`models.deep.fit_deep`). Both return a FittedModel (models/spec.py).

`train_symbols` is the in-process sequential loop over symbols x models: the baseline
the Ray layer's parallel execution is measured against, and what `quantray train` runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from data.prepared import PreparedSymbol
from data.symbols import safe_symbol
from models.ensemble import ensemble_rows
from models.leaderboard import fitted_rows
from models.linear import LINEAR_SPECS, fit_linear, load_linear
from models.metrics import error_rows
from models.spec import FittedModel, read_metadata

ProgressFn = Callable[[int, int, str], None]  # (units done, units total, unit label)


def is_linear(name: str) -> bool:
    return name in LINEAR_SPECS


def fit(
    name: str,
    prepared: PreparedSymbol,
    *,
    preset: str = "fast",
    overrides: dict[str, Any] | None = None,
    task: str = "direction",
    callbacks: Sequence[Any] = (),
    resume_from: str | None = None,
    device: str | None = None,
) -> FittedModel:
    """Fit model `name` on one prepared symbol (one fold).

    Linear models have no epochs: `callbacks`, `resume_from` and a non-CPU `device` apply
    to deep models only and are rejected for linear ones rather than ignored.
    """
    if is_linear(name):
        if callbacks or resume_from is not None:
            raise ValueError(
                f"{name} is a linear model, fitted in one step: callbacks and resume_from apply"
                " to deep models only; pass callbacks=() and resume_from=None"
            )
        if device not in (None, "auto", "cpu"):
            raise ValueError(f"{name} is a linear model and runs on the CPU; got device={device!r}")
        return fit_linear(name, prepared, preset=preset, overrides=overrides, task=task)
    from models.deep import fit_deep

    return fit_deep(
        name, prepared, preset=preset, overrides=overrides, task=task,
        callbacks=callbacks, resume_from=resume_from, device=device,
    )  # fmt: skip


def load(directory: str) -> FittedModel:
    """Load a saved model; `metadata.json` names the model, which picks the class.

    A missing `metadata.json` (or weights file) is FileNotFoundError; files that cannot be
    read back (corrupt, truncated, edited) are `models.spec.ArtifactError` (a ValueError)
    naming the file or directory."""
    meta = read_metadata(directory)
    name = meta.get("model", meta.get("name"))
    if meta.get("kind") == "linear" or name in LINEAR_SPECS:
        return load_linear(directory)
    from models.deep import DeepModel

    return DeepModel.load(directory)


def evaluate(
    fitted: FittedModel,
    prepared: PreparedSymbol,
    *,
    splits: tuple[str, ...] = ("val", "test"),
    model_name: str | None = None,
) -> list[dict[str, Any]]:
    """Leaderboard rows (one per horizon x split) of a fitted model on `prepared`."""
    return fitted_rows(prepared.symbol, model_name or fitted.name, fitted, prepared, splits)


def _folds(value: PreparedSymbol | Sequence[PreparedSymbol], symbol: str) -> list[PreparedSymbol]:
    folds = [value] if isinstance(value, PreparedSymbol) else list(value)
    if not folds or not all(isinstance(p, PreparedSymbol) for p in folds):
        raise ValueError(f"{symbol}: expected a PreparedSymbol or a non-empty list of them")
    return folds


def train_symbols(
    prepared_by_symbol: Mapping[str, PreparedSymbol | Sequence[PreparedSymbol]],
    models: Iterable[str],
    preset: str = "fast",
    overrides: Mapping[str, dict[str, Any]] | None = None,
    task: str = "direction",
    progress: ProgressFn | None = None,
    *,
    ensembles: bool = False,
    save_dir: str | None = None,
    splits: tuple[str, ...] = ("val", "test"),
    device: str | None = None,
) -> list[dict[str, Any]]:
    """Fit and score every (symbol, fold, model) one after another, in this process.

    `overrides` maps model name -> overrides for that model. A unit that raises becomes
    error rows (one per horizon) and the loop goes on. With `ensembles`, every
    symbol/fold with at least two fitted models also gets "ensemble_equal" and
    "ensemble_f1" rows. With `save_dir`, each fitted model is saved under
    `save_dir/{symbol}/{model}` (`.../fold{k}/...` when there are several folds), the
    symbol as a safe path part (`BF/B` -> `BF_B`, `data.symbols.safe_symbol`).
    """
    models = list(models)
    overrides = dict(overrides or {})
    stray = sorted(set(overrides) - set(models))
    if stray:
        raise ValueError(f"overrides given for {stray}, which are not in models={models}")
    folds_by_symbol = {s: _folds(v, s) for s, v in prepared_by_symbol.items()}
    total = sum(len(f) for f in folds_by_symbol.values()) * len(models)
    done = 0
    rows: list[dict[str, Any]] = []
    for symbol, folds in folds_by_symbol.items():
        for prepared in folds:
            fitted: dict[str, FittedModel] = {}
            for name in models:
                try:
                    start = time.perf_counter()
                    model = fit(name, prepared, preset=preset, overrides=overrides.get(name),
                                task=task, device=device)
                    unit_rows = evaluate(model, prepared, splits=splits, model_name=name)
                    if save_dir is not None:
                        model.save(_unit_dir(save_dir, symbol, name, prepared.fold, len(folds)))
                    rows += unit_rows
                    fitted[name] = model
                    label = f"{symbol}/{name} {time.perf_counter() - start:.1f}s"
                except Exception as exc:  # a failed unit is reported, the sweep goes on
                    rows += error_rows(symbol, name, prepared.horizons, exc, fold=prepared.fold)
                    label = f"{symbol}/{name} FAILED: {type(exc).__name__}"
                done += 1
                if progress is not None:
                    progress(done, total, label)
            if ensembles and len(fitted) >= 2:
                try:
                    rows += ensemble_rows(symbol, fitted, prepared, splits)
                except Exception as exc:  # same policy as a failed unit
                    for name in ("ensemble_equal", "ensemble_f1"):
                        rows += error_rows(symbol, name, prepared.horizons, exc,
                                           fold=prepared.fold)
    return rows


def _unit_dir(root: str, symbol: str, model: str, fold: int, n_folds: int) -> str:
    parts = [root, safe_symbol(symbol)] + ([f"fold{fold}"] if n_folds > 1 else []) + [model]
    return os.path.join(*parts)
