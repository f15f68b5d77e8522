"""Model overrides of a job spec: the static check at the HTTP edge (field names and
value types against the committed model catalog, no torch) and the full check against the
model registry (`check_against_registry`, which imports torch for deep models: the job
driver and the API's checker process run it).

Form: `{model: {<model config field>: v, "train.<TrainConfig field>": v}}`; a nested
`train: {...}` mapping is accepted on input and flattened to the dotted form
(`flatten_train`), the key form the models' search spaces use.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray_jobs.spec_sections import (
    _KEY_RE,
    LINEAR_MODELS,
    MAX_EPOCHS,
    SpecError,
    _is_int,
    _Issues,
)

if TYPE_CHECKING:
    from ray_jobs.spec import JobSpec


def check_overrides(iss: _Issues, overrides: Any, models: tuple[str, ...]) -> None:
    if not isinstance(overrides, dict):
        iss.add("overrides", "expected a mapping {model: {field: value}}")
        return
    from models.config import TrainConfig, config_from_dict  # plain dataclasses, no torch

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_fields = _model_fields()
    for model, values in overrides.items():
        where = f"overrides.{model}"
        if model not in models:
            iss.add(where, f"{model!r} is not in models {list(models)}: add it or drop this")
        if not isinstance(values, dict):
            iss.add(where, "expected a mapping {field: value}")
            continue
        for key, value in values.items():
            is_train = isinstance(key, str) and key.startswith("train.")
            name = key[len("train.") :] if is_train else key
            if not isinstance(name, str) or not _KEY_RE.match(name):
                iss.add(f"{where}.{key}", "a field name is lowercase letters, digits and _")
            elif is_train and model in LINEAR_MODELS:
                iss.add(f"{where}.{key}", f"{model} is a linear model, fitted in closed form: "
                        "it has no training settings; drop this")  # fmt: skip
            elif not is_train and name in train_fields - {"seed"}:
                iss.add(f"{where}.{key}", f"a training setting: write it as train.{name}")
            elif name == "seq_len":
                iss.add(f"{where}.{key}", "all models of a job share one window: set "
                        "features.seq_len instead")  # fmt: skip
            elif not is_train and model in model_fields and name not in model_fields[model]:
                allowed = ", ".join(sorted(model_fields[model])) or "none"
                iss.add(f"{where}.{key}", f"unknown setting of {model}; allowed: {allowed}"
                        " (training settings as train.<field>)")  # fmt: skip
            elif problem := _value_problem(value):
                iss.add(f"{where}.{key}", f"{value!r}: {problem}")
            elif is_train and name not in train_fields:
                allowed = ", ".join(sorted(train_fields))
                iss.add(f"{where}.{key}", f"unknown training setting; allowed: {allowed}")
            elif is_train and name == "epochs" and _is_int(value) and value > MAX_EPOCHS:
                iss.add(f"{where}.{key}", f"{value}: at most {MAX_EPOCHS} epochs")
            elif is_train:
                try:  # one field at a time, so each message lands on its own path
                    config_from_dict(TrainConfig, {name: value})
                except (ValueError, TypeError) as exc:
                    iss.add(f"{where}.{key}", str(exc))


@functools.lru_cache(maxsize=1)
def _model_fields() -> dict[str, frozenset[str]]:
    """model -> its config fields, from the committed catalog (no torch import here)."""
    catalog = json.loads(Path(__file__).with_name("model_catalog.json").read_text("utf-8"))
    return {
        m["name"]: frozenset(m["presets"]["fast"]) - {"train", "seq_len"}
        for m in catalog["models"]
    }


def fully_fixed_searches(overrides: dict[str, Any], deep_models: tuple[str, ...]) -> list[str]:
    """Deep models whose overrides set every key of their search space (from the committed
    catalog): a Tune search over them would only repeat one config."""
    catalog = json.loads(Path(__file__).with_name("model_catalog.json").read_text("utf-8"))
    spaces = {m["name"]: set(m.get("search_space") or {}) for m in catalog["models"]}
    return [m for m in deep_models
            if spaces.get(m) and spaces[m] <= set(overrides.get(m) or {})]  # fmt: skip


def flatten_train(values: Any) -> Any:
    """`{"train": {"lr": x}, ...}` -> `{"train.lr": x, ...}`; anything else unchanged."""
    if not isinstance(values, dict):
        return values
    nested = values.get("train")
    if not isinstance(nested, dict):
        return dict(values)
    flat = {k: v for k, v in values.items() if k != "train"}
    flat.update({f"train.{k}": v for k, v in nested.items()})
    return flat


def _value_problem(v: Any) -> str | None:
    """What is wrong with an override value, or None for a scalar (number, string, bool,
    null) or a flat list of scalars, with no inf or NaN anywhere (JSON's Infinity, 1e400
    and YAML's .inf would otherwise pass here, read back as null and fail the job when
    training)."""
    items = v if isinstance(v, list | tuple) else (v,)
    if not all(x is None or isinstance(x, bool | int | float | str) for x in items):
        return "use a number, string, bool or list"
    if any(isinstance(x, float) and not math.isfinite(x) for x in items):
        return "use a finite number"
    return None


def _override_field(path: str, message: str) -> tuple[str, str]:
    """("overrides.lstm", "lstm.hidden_size=-5: ...") -> ("overrides.lstm.hidden_size", ...)"""
    model = path.rpartition(".")[2]
    match = re.match(rf"(?:{re.escape(model)}|[A-Za-z]+Config)\.([a-z0-9_]+)\b", message)
    return (f"{path}.{match.group(1)}" if match else path), message


def check_against_registry(spec: JobSpec) -> None:
    """Resolve every model's preset + overrides with `models.registry` (imports torch: for
    the job driver, not the HTTP edge; a linear-only job resolves without torch). Raises
    `SpecError` naming `overrides.<model>.<field>` (`overrides.<model>` when the config's
    message names no single field)."""
    from models.linear import LINEAR_SPECS, resolve_linear

    errors = []
    for model in spec.models:
        try:
            if model in LINEAR_SPECS:
                resolve_linear(model, spec.preset, spec.overrides.get(model, {}))
                continue
            from models.registry import resolve

            resolve(model, spec.preset, spec.overrides.get(model, {}))
        except (ValueError, TypeError) as exc:
            errors.append(_override_field(f"overrides.{model}", str(exc)))
    if errors:
        raise SpecError(errors)
