"""The registry: lookups, resolve/overrides, Tune casting, search spaces, preset table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.config import ModelDims, TrainConfig
from models.linear import LINEAR_SPECS
from models.presets import (
    PRESETS,
    SEARCH_SPACES,
    TABLE_COLUMNS,
    presets_markdown,
    presets_table,
)
from models.registry import (
    REGISTRY,
    build_module,
    cast_params,
    get_spec,
    list_models,
    resolve,
)
from models.zoo.lstm import LSTMConfig

REPO = Path(__file__).resolve().parents[2]
DEEP = list_models("deep")
SPACE_TYPES = {"choice", "uniform", "loguniform", "randint"}


def test_registry_holds_the_deep_zoo_and_the_linear_models() -> None:
    assert set(list_models()) == set(DEEP) | set(LINEAR_SPECS)
    assert len(DEEP) == 11
    assert list_models("linear") == list(LINEAR_SPECS)
    for name, spec in REGISTRY.items():
        assert spec.name == name
        assert (spec.kind == "deep") == (name in DEEP)


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'lstn'; known models: \[.*'lstm'"):
        get_spec("lstn")
    with pytest.raises(ValueError, match="kind='neural'"):
        list_models("neural")


def test_resolve_returns_the_preset_values() -> None:
    resolved = resolve("lstm", "balanced")
    preset = PRESETS["lstm"]["balanced"]
    assert resolved.model == LSTMConfig(**preset["model"])
    assert resolved.train == TrainConfig(**preset["train"])
    assert resolved.seq_len == preset["seq_len"]


def test_overrides_of_every_form_are_applied() -> None:
    before = repr(PRESETS["lstm"])
    resolved = resolve(
        "lstm",
        "fast",
        {
            "hidden_size": 16,
            "bidirectional": True,
            "train": {"epochs": 3, "lr": 0.01},
            "train.batch_size": 32,
            "seq_len": 20,
        },
    )
    assert resolved.model.hidden_size == 16 and resolved.model.bidirectional is True
    assert resolved.model.num_layers == PRESETS["lstm"]["fast"]["model"]["num_layers"]
    assert (resolved.train.epochs, resolved.train.lr, resolved.train.batch_size) == (3, 0.01, 32)
    assert resolved.train.patience == PRESETS["lstm"]["fast"]["train"]["patience"]
    assert resolved.seq_len == 20
    assert repr(PRESETS["lstm"]) == before  # the preset data is not mutated


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hiden_size": 8}, "lstm: unknown override key 'hiden_size'; use one of the model"),
        ({"train.epoch": 3}, r"lstm.train: unknown field\(s\) \['epoch'\]"),
        ({"train": {"lr_max": 1.0}}, r"lstm.train: unknown field\(s\) \['lr_max'\]"),
        ({"train": 3}, "override 'train' must be a dict"),
        ({"hidden_size": 0}, "lstm.hidden_size=0: use a positive integer"),
        ({"train.lr": -1.0}, "TrainConfig.lr=-1.0"),
        ({"seq_len": 0}, "lstm.seq_len=0: use a positive integer"),
        ({"seq_len": "long"}, "lstm.seq_len='long': use a positive integer"),
        ({"num_layers": 1.5}, "lstm.num_layers: expected an integer"),
    ],
)
def test_bad_overrides_name_the_key_and_model(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve("lstm", "fast", overrides)


@pytest.mark.parametrize("name", list_models())
def test_resolved_config_round_trips_through_json(name: str) -> None:
    """Configs cross process boundaries as plain dicts and come back equal."""
    resolved = resolve(name, "balanced")
    again = resolve(name, "fast", json.loads(json.dumps(resolved.to_dict())))
    assert again == resolved


def test_unknown_preset_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown preset 'turbo'"):
        resolve("gru", "turbo")


def test_cast_params_restores_field_types() -> None:
    sampled = {
        "hidden_size": np.float64(64.0),
        "num_layers": np.int64(2),
        "dropout": np.float32(0.25),
        "bidirectional": np.bool_(True),
        "train.batch_size": 128.0,
        "train.lr": np.float64(1e-3),
        "seq_len": np.int64(30),
    }
    cast = cast_params("lstm", sampled)
    assert cast == {
        "hidden_size": 64,
        "num_layers": 2,
        "dropout": pytest.approx(0.25),
        "bidirectional": True,
        "train.batch_size": 128,
        "train.lr": 1e-3,
        "seq_len": 30,
    }
    assert [type(cast[k]) for k in sampled] == [int, int, float, bool, int, float, int]
    scales = cast_params("temporal_attention", {"scales": [1.0, 2, np.int64(4)]})["scales"]
    assert scales == (1, 2, 4) and all(type(s) is int for s in scales)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"hidden_size": 64.5}, "lstm.hidden_size=64.5: expected an integer"),
        ({"bidirectional": 2}, "expected a bool"),
        ({"width": 3}, "lstm: unknown parameter 'width'"),
        ({"train.nope": 3}, "lstm: unknown parameter 'train.nope'"),
    ],
)
def test_cast_params_rejects_what_it_cannot_cast(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cast_params("lstm", params)


def _sample(space: dict, rng: np.random.Generator) -> object:
    if space["type"] == "choice":
        return space["values"][rng.integers(len(space["values"]))]
    if space["type"] == "uniform":
        return rng.uniform(space["low"], space["high"])
    if space["type"] == "loguniform":
        return float(np.exp(rng.uniform(np.log(space["low"]), np.log(space["high"]))))
    return rng.integers(space["low"], space["high"])


@pytest.mark.parametrize("name", DEEP)
def test_every_search_space_key_is_a_valid_override(name: str) -> None:
    space = get_spec(name).search_space
    assert space is SEARCH_SPACES[name] and space
    for key, dist in space.items():
        assert dist["type"] in SPACE_TYPES, (key, dist)
        if dist["type"] == "choice":
            assert dist["values"]
            points = [{key: v} for v in dist["values"]]
        else:
            assert dist["low"] < dist["high"]
            points = [{key: dist["low"]}, {key: dist["high"]}]
        for point in points:  # each extreme / choice alone resolves
            resolve(name, "fast", cast_params(name, point))


@pytest.mark.parametrize("name", DEEP)
def test_random_search_points_build_working_models(name: str) -> None:
    spec, rng = get_spec(name), np.random.default_rng(7)
    for _ in range(3):
        point = {k: _sample(d, rng) for k, d in spec.search_space.items()}
        resolved = resolve(name, "fast", cast_params(name, point))
        dims = ModelDims(n_features=6, seq_len=12, n_horizons=2)
        model = build_module(name, resolved.model, dims).eval()
        x = torch.randn(3, 6) if spec.input == "tabular" else torch.randn(3, 12, 6)
        with torch.no_grad():
            assert tuple(model(x).shape) == (3, 2, 3)


def test_build_module_takes_a_config_or_its_dict_and_nothing_else() -> None:
    dims = ModelDims(n_features=4, seq_len=8, n_horizons=2, task="return")
    from_dict = build_module("gru", {"hidden_size": 8, "num_layers": 1}, dims)
    assert from_dict.rnn.hidden_size == 8
    with pytest.raises(TypeError, match="gru: model_config is LSTMConfig; pass a GRUConfig"):
        build_module("gru", LSTMConfig(), dims)
    with pytest.raises(ValueError, match=r"gru: unknown field\(s\) \['width'\]"):
        build_module("gru", {"width": 3}, dims)
    if LINEAR_SPECS:
        linear = next(iter(LINEAR_SPECS))
        with pytest.raises(ValueError, match="build_module is for deep models only"):
            build_module(linear, {}, dims)


def test_fast_presets_are_small_enough_for_seconds_per_symbol() -> None:
    for name in DEEP:
        fast = resolve(name, "fast")
        assert 8 <= fast.train.epochs <= 15, name
        assert fast.seq_len <= 30 and fast.train.patience < fast.train.epochs, name


def test_presets_table_matches_resolve_and_the_docs() -> None:
    rows = presets_table()
    assert len(rows) == 3 * len(DEEP)
    for row in rows:
        assert tuple(row) == TABLE_COLUMNS
        resolved = resolve(row["model"], row["preset"])
        assert (row["epochs"], row["patience"], row["batch_size"], row["lr"], row["seq_len"]) == (
            resolved.train.epochs,
            resolved.train.patience,
            resolved.train.batch_size,
            resolved.train.lr,
            resolved.seq_len,
        )
        assert "dropout" not in row["widths"] and row["widths"]
    docs = (REPO / "docs" / "presets.md").read_text()
    assert docs == presets_markdown(), "regenerate: python -m models.presets docs/presets.md"


def test_importing_the_registry_and_export_does_not_import_ray() -> None:
    code = "import sys, models.registry, models.export; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)
