"""The explicit model registry: name -> ModelSpec, for the deep zoo and the linear models.

`resolve` turns (model, preset, overrides) into typed configs; `cast_params` turns a Ray Tune
sample back into field types; `build_module` builds a deep model for given dims. Nothing is
looked up by import path at run time.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from typing import Any, get_type_hints

import numpy as np
from torch import nn

from models.config import ModelDims, TrainConfig, config_from_dict
from models.linear import LINEAR_SPECS
from models.presets import PRESETS, SEARCH_SPACES
from models.spec import ModelSpec
from models.zoo.cnn import CNN, CNNConfig
from models.zoo.cnn_bilstm import CNNBiLSTM, CNNBiLSTMConfig
from models.zoo.cnn_gru import CNNGRU, CNNGRUConfig
from models.zoo.deeplob import DeepLOB, DeepLOBConfig
from models.zoo.gru import GRUConfig, GRUModel
from models.zoo.lstm import LSTMConfig, LSTMModel
from models.zoo.mlp import MLP, MLPConfig
from models.zoo.seq2seq import Seq2Seq, Seq2SeqConfig
from models.zoo.tcn import TCN, TCNConfig
from models.zoo.temporal_attention import TemporalAttention, TemporalAttentionConfig
from models.zoo.transformer import TransformerConfig, TransformerModel

KINDS = ("linear", "deep")


def _deep(
    name: str,
    config_cls: type,
    module_cls: type[nn.Module],
    input_kind: str,
    hooks: tuple[str, ...],
    description: str,
) -> ModelSpec:
    return ModelSpec(
        name=name,
        kind="deep",
        input=input_kind,
        config_cls=config_cls,
        module_cls=module_cls,
        presets=PRESETS[name],
        search_space=SEARCH_SPACES[name],
        hooks=hooks,
        description=description,
    )


_HID, _ATT = ("hidden_states",), ("attention",)
DEEP_SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        _deep("mlp", MLPConfig, MLP, "tabular", (), "MLP on the tabular feature row"),
        _deep("lstm", LSTMConfig, LSTMModel, "sequence", _HID, "LSTM, optionally bidirectional"),
        _deep("gru", GRUConfig, GRUModel, "sequence", _HID, "GRU"),
        _deep("cnn", CNNConfig, CNN, "sequence", (), "1-D CNN with global pooling"),
        _deep("tcn", TCNConfig, TCN, "sequence", (), "dilated causal TCN, residual blocks"),
        _deep(
            "deeplob",
            DeepLOBConfig,
            DeepLOB,
            "sequence",
            _HID,
            "DeepLOB: conv blocks + inception + LSTM",
        ),
        _deep(
            "seq2seq",
            Seq2SeqConfig,
            Seq2Seq,
            "sequence",
            _ATT + _HID,
            "recurrent encoder, Bahdanau-attention decoder, one step per horizon",
        ),
        _deep(
            "transformer",
            TransformerConfig,
            TransformerModel,
            "sequence",
            _ATT,
            "transformer encoder with sinusoidal positions, pooled",
        ),
        _deep(
            "temporal_attention",
            TemporalAttentionConfig,
            TemporalAttention,
            "sequence",
            _ATT,
            "multi-scale conv encoder, one attention query per horizon",
        ),
        _deep("cnn_gru", CNNGRUConfig, CNNGRU, "sequence", _HID, "Conv1D+BatchNorm into GRU"),
        _deep(
            "cnn_bilstm",
            CNNBiLSTMConfig,
            CNNBiLSTM,
            "sequence",
            _HID,
            "Conv1D+BatchNorm into bidirectional LSTM",
        ),
    )
}


def _merge(*groups: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
    merged: dict[str, ModelSpec] = {}
    for group in groups:
        for name, spec in group.items():
            if name in merged:
                raise ValueError(f"model name {name!r} is registered twice; rename one of them")
            if spec.name != name:
                raise ValueError(f"registry key {name!r} holds spec named {spec.name!r}")
            merged[name] = spec
    return merged


REGISTRY: dict[str, ModelSpec] = _merge(DEEP_SPECS, LINEAR_SPECS)


@dataclass(frozen=True)
class ResolvedConfig:
    """A model's typed settings for one run: architecture, training loop, window length."""

    model: Any  # the spec's config dataclass instance
    train: TrainConfig
    seq_len: int

    def to_dict(self) -> dict[str, Any]:
        """Plain values for crossing process boundaries; `resolve`'s overrides accept them."""
        model = dataclasses.asdict(self.model)
        return {**model, "train": dataclasses.asdict(self.train), "seq_len": self.seq_len}


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(REGISTRY)}")
    return REGISTRY[name]


def list_models(kind: str | None = None) -> list[str]:
    """Registered names in registry order, optionally only 'linear' or 'deep' ones."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind={kind!r}: use one of {KINDS} or None for all models")
    return [name for name, spec in REGISTRY.items() if kind is None or spec.kind == kind]


def _split_overrides(
    name: str, config_cls: type, overrides: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], int | None]:
    """Sort flat override keys into (model fields, train fields, seq_len)."""
    model_fields = {f.name for f in dataclasses.fields(config_cls)}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model, train, seq_len = {}, {}, None
    for key, value in overrides.items():
        if key == "train":
            if not isinstance(value, dict):
                raise ValueError(f"{name}: override 'train' must be a dict of TrainConfig fields")
            train.update(value)
        elif key.startswith("train."):
            train[key.removeprefix("train.")] = value
        elif key == "seq_len":
            seq_len = value
        elif key in model_fields:
            model[key] = value
        else:
            raise ValueError(
                f"{name}: unknown override key {key!r}; use one of the model fields"
                f" {sorted(model_fields)}, 'seq_len', 'train' (a dict) or 'train.<field>'"
                f" with <field> in {sorted(train_fields)}"
            )
    return model, train, seq_len


def _check_seq_len(name: str, value: Any) -> int:
    try:
        ok = not isinstance(value, bool) and float(value).is_integer() and int(value) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name}.seq_len={value!r}: use a positive integer such as 30")
    return int(value)


def resolve(
    name: str, preset: str = "fast", overrides: dict[str, Any] | None = None
) -> ResolvedConfig:
    """Preset values updated by `overrides`, validated into typed configs.

    Overrides are flat: model-config fields, `seq_len`, `train` (a dict of TrainConfig
    fields) and/or `train.<field>` keys. Unknown keys raise a ValueError naming the key.
    """
    spec = get_spec(name)
    if preset not in spec.presets:
        raise ValueError(f"{name}: unknown preset {preset!r}; choose one of {list(spec.presets)}")
    base = spec.presets[preset]
    model_over, train_over, seq_len = _split_overrides(name, spec.config_cls, overrides or {})
    if seq_len is None:
        # A tabular model reads one feature row per sample; a preset may leave seq_len out.
        seq_len = base.get("seq_len", 1 if spec.input == "tabular" else None)
        if seq_len is None:
            raise ValueError(f"{name}: preset {preset!r} has no seq_len; add one to the preset")
    return ResolvedConfig(
        model=config_from_dict(
            spec.config_cls, {**base.get("model", {}), **model_over}, where=name
        ),
        train=config_from_dict(
            TrainConfig, {**base.get("train", {}), **train_over}, where=f"{name}.train"
        ),
        seq_len=_check_seq_len(name, seq_len),
    )


def build_module(name: str, model_config: Any, dims: ModelDims) -> nn.Module:
    """Build a deep model; `model_config` is its config dataclass or a plain dict of it."""
    spec = get_spec(name)
    if spec.kind != "deep" or spec.module_cls is None:
        raise ValueError(f"{name} is a {spec.kind} model; build_module is for deep models only")
    if isinstance(model_config, dict):
        model_config = config_from_dict(spec.config_cls, model_config, where=name)
    if not isinstance(model_config, spec.config_cls):
        raise TypeError(
            f"{name}: model_config is {type(model_config).__name__}; pass a"
            f" {spec.config_cls.__name__} (e.g. resolve({name!r}).model) or a dict of it"
        )
    return spec.module_cls(model_config, dims)


def _cast(where: str, ftype: Any, value: Any) -> Any:
    """One Tune-sampled value (numpy scalar, float for an int, list for a tuple) to `ftype`."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(ftype, types.UnionType):  # e.g. `float | None`
        if value is None and type(None) in ftype.__args__:
            return None
        ftype = next(a for a in ftype.__args__ if a is not type(None))
    if ftype is bool:
        if value not in (0, 1):
            raise ValueError(f"{where}={value!r}: expected a bool")
        return bool(value)
    if ftype is int:
        if isinstance(value, bool) or not float(value).is_integer():
            raise ValueError(
                f"{where}={value!r}: expected an integer; sample it with a choice or"
                " randint, not uniform"
            )
        return int(value)
    if ftype is float:
        return float(value)
    if ftype is str:
        return str(value)
    if getattr(ftype, "__origin__", None) is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}={value!r}: expected a tuple such as (1, 2, 4)")
        return tuple(_cast(where, ftype.__args__[0], v) for v in value)
    return value


def cast_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Cast a Tune-sampled point (flat keys as in the search space) to the field types.

    Keys and their meaning are those of `resolve`'s overrides; the result is one.
    """
    spec = get_spec(name)
    model_types, train_types = get_type_hints(spec.config_cls), get_type_hints(TrainConfig)
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key == "seq_len":
            out[key] = _check_seq_len(name, value)
        elif key.startswith("train.") and key.removeprefix("train.") in train_types:
            out[key] = _cast(f"{name}.{key}", train_types[key.removeprefix("train.")], value)
        elif key in model_types:
            out[key] = _cast(f"{name}.{key}", model_types[key], value)
        else:
            raise ValueError(
                f"{name}: unknown parameter {key!r}; use model fields {sorted(model_types)},"
                " 'seq_len' or 'train.<TrainConfig field>'"
            )
    return out
