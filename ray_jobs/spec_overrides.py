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
            elif key == "train":  # `train: {lr: ...}` is flattened before: not a mapping
                iss.add(f"{where}.train", f"{value!r}: expected a mapping of training settings, "
                        "e.g. train: {lr: 0.001, epochs: 20}")
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
            elif (is_train and name == "epochs" and isinstance(value, int | float)
                  and not isinstance(value, bool) and value > MAX_EPOCHS):  # 1e9 too
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


def train_given_twice(overrides: Any) -> list[tuple[str, str]]:
    """Training settings given both as `train.<field>` and inside `train: {...}` of one
    model: (path, message) each. Flattened, one spelling silently replaced the other."""
    if not isinstance(overrides, dict):
        return []
    return [(f"overrides.{model}.train.{key}", (
                f"given twice, as train.{key}: {values[f'train.{key}']!r} and inside "
                f"train: {{{key}: {nested[key]!r}}}: keep one"))
            for model, values in overrides.items() if isinstance(values, dict)
            for nested in [values.get("train")] if isinstance(nested, dict)
            for key in nested if f"train.{key}" in values]  # fmt: skip


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
    match = re.match(rf"(?:{re.escape(model)}(?: overrides)?|[A-Za-z]+Config)\.([a-z0-9_]+)\b",
                     message)
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

            config = resolve(model, spec.preset, spec.overrides.get(model, {})).model
        except (ValueError, TypeError) as exc:
            errors.append(_override_field(f"overrides.{model}", str(exc)))
            continue
        n = parameter_count(model, config)
        if spec.tune.num_samples and model in spec.deep_models:
            problem, n = _search_problem(model, spec.preset, spec.overrides.get(model, {}), n)
            if problem:
                errors.append(problem)
                continue
        if n > MAX_PARAMETERS:
            errors.append((f"overrides.{model}", (
                f"{model} with these settings has {n:,} parameters (~{n * 16 / 2**30:,.0f} "
                f"GiB to train with adamw); at most {MAX_PARAMETERS:,}: lower its widths "
                "(hidden_size, channels, d_model, ff_dim) or depths (num_layers, ...)")))
    if errors:
        raise SpecError(errors)


# Every width and depth is at most 4096 on its own, but 4096 LSTM layers of 4096 units are
# 5.5e11 parameters: accepted, such a job failed on the cluster out of memory. 250M
# parameters (4 GiB of fp32 weights, ~16 GiB with gradients and AdamW state) is far past
# what daily or LOB data can fit; the quality presets hold at most ~0.3M.
MAX_PARAMETERS = 250_000_000
# Depth fields: a stack's layers after its first are alike, so its parameter count is
# affine in each of them (parameter_count builds depths 1 and 2 only).
_DEPTH_FIELDS = ("num_layers", "num_levels", "conv_layers")


def parameter_count(model: str, config: Any) -> int:
    """Parameters of deep `model` built from `config` (its dataclass) for the bar
    features, without allocating them: modules are built on torch's meta device at depth
    1 and 2 of each depth field, and the count extrapolated (exact for these stacks)."""
    import torch

    from data.features import BAR_FEATURE_NAMES
    from models.config import ModelDims
    from models.registry import build_module

    dims = ModelDims(n_features=len(BAR_FEATURE_NAMES), seq_len=8, n_horizons=4)

    def count(**depths: int) -> int:
        with torch.device("meta"):
            module = build_module(model, dataclasses.replace(config, **depths), dims)
        return sum(p.numel() for p in module.parameters())

    depths = {f: getattr(config, f) for f in _DEPTH_FIELDS if hasattr(config, f)}
    base = count(**dict.fromkeys(depths, 1))
    return base + sum((d - 1) * (count(**{**dict.fromkeys(depths, 1), f: 2}) - base)
                      for f, d in depths.items())


def _search_problem(model: str, preset: str, overrides: dict[str, Any],
                    n_params: int) -> tuple[tuple[str, str] | None, int]:
    """(error, largest parameter count) of a Tune search over `model`'s space with the
    keys `overrides` sets held fixed. Every point of the space's choices (and each end of
    its ranges) must resolve: `{n_heads: 3}` fixed beside a searched d_model in (32, 64)
    was accepted, and every trial of the search failed on the cluster."""
    import itertools

    from models.registry import get_spec, resolve

    space = {k: v for k, v in get_spec(model).search_space.items() if k not in overrides}
    axes = {k: list(d["values"]) if d["type"] == "choice" else [d["low"], d["high"]]
            for k, d in space.items()}  # fmt: skip
    # Model fields may constrain each other (d_model and n_heads): every combination of
    # them is tried. A training setting is checked alone (TrainConfig's fields are not).
    arch = {k: v for k, v in axes.items() if not k.startswith("train.")}
    points = [dict(zip(arch, p, strict=True)) for p in itertools.product(*arch.values())]
    points += [{k: v} for k, vs in axes.items() if k.startswith("train.") for v in vs]
    for values in points:
        try:
            config = resolve(model, preset, {**overrides, **values}).model
        except (ValueError, TypeError) as exc:
            fixed = ", ".join(f"{k}={v!r}" for k, v in overrides.items()
                              if not k.startswith("train.")) or "the preset's values"
            searched = ", ".join(f"{k}={v!r}" for k, v in values.items()
                                 if not k.startswith("train."))
            return (f"overrides.{model}", (
                f"tune searches {model} with {fixed} fixed, and its search point {searched} "
                f"is invalid: {exc}; fix fewer keys (a fixed key is not searched), choose "
                "values that fit the whole search space (see GET /v1/models), or set "
                "tune.num_samples: 0")), n_params
    # The biggest model the search can build: every numeric key at its largest, with each
    # value of the others (a cell type, a flag, a tuple of scales).
    def numeric(values: list[Any]) -> bool:
        return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)

    top = {k: [max(v)] if numeric(v) else v for k, v in arch.items()}
    for point in itertools.product(*top.values()):
        config = resolve(model, preset, {**overrides, **dict(zip(top, point, strict=True))})
        n_params = max(n_params, parameter_count(model, config.model))
    return None, n_params
