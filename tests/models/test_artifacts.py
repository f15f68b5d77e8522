"""What users rely on after training: artifacts that load back (or fail naming the file),
and predictions that refuse inputs they cannot score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models import api
from models.ensemble import ensemble_rows, soft_vote
from models.export import check_onnx, export_onnx
from models.leaderboard import model_inputs
from models.quantize import quantize_model
from models.registry import list_models
from models.spec import ArtifactError
from tests.models._planted import planted

PREPARED = planted(300, 4, 10, (1, 3, 5), seed=3, return_scales=(1.0, 1.5, 2.0))
TINY = {"seq_len": 10, "train.epochs": 1}
ALL_MODELS = ["ols", "ridge", "lasso", *list_models("deep")]


def _fit(name: str, task: str = "direction"):
    with torch.random.fork_rng():
        return api.fit(name, PREPARED, task=task,
                       overrides=None if api.is_linear(name) else dict(TINY))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("saved")
    out = {}
    for name in ("ridge", "lstm"):
        out[name] = root / name
        _fit(name).save(str(out[name]))
    return out


@pytest.mark.parametrize("task", ["direction", "return"])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_loads_back_with_identical_outputs(name, task, tmp_path):
    model = _fit(name, task)
    model.save(str(tmp_path))
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # a reader with another thread count
    try:
        loaded = api.load(str(tmp_path))
    finally:
        torch.set_num_threads(before)
    x = model_inputs(model, PREPARED, "test")
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    r = model.predict_return(x)
    assert (r is None) == (task == "direction" and not api.is_linear(name))
    if r is not None:
        np.testing.assert_array_equal(loaded.predict_return(x), r)
    assert loaded.predict_proba(x[:1]).shape == (1, 3, 3)
    assert loaded.predict(x[:0]).shape == (0, 3)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("name", ["ridge", "lstm"])
def test_corrupt_metadata_is_an_error_naming_the_file(name, saved, tmp_path):
    d = _copy(saved[name], tmp_path / "m")
    meta = d / "metadata.json"
    text = meta.read_text()
    meta.write_text(text[: len(text) // 2])  # truncated
    with pytest.raises(ArtifactError, match=r"metadata\.json is not valid JSON"):
        api.load(str(d))
    meta.write_text("[]")
    with pytest.raises(ArtifactError, match=r"metadata\.json: expected a JSON object"):
        api.load(str(d))


@pytest.mark.parametrize("name", ["ridge", "lstm"])
def test_edited_or_truncated_files_are_an_error_naming_the_directory(name, saved, tmp_path):
    d = _copy(saved[name], tmp_path / "edited")
    meta = json.loads((d / "metadata.json").read_text())
    meta["horizons"] = [1]  # the model forecasts 3 horizons
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=f"{d}.*horizons"):
        api.load(str(d))
    d = _copy(saved[name], tmp_path / "truncated")
    weights = d / ("arrays.npz" if name == "ridge" else "weights.pt")
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ArtifactError, match=f"{d}: cannot load the saved '{name}' model"):
        api.load(str(d))


def test_weights_are_read_weights_only(saved, tmp_path):
    d = _copy(saved["lstm"], tmp_path / "pickled")
    state = torch.load(d / "weights.pt", weights_only=True)
    torch.save({**state, "extra": ArtifactError("arbitrary object")}, d / "weights.pt")
    with pytest.raises(ArtifactError, match="Weights only load failed"):
        api.load(str(d))


@pytest.mark.parametrize("name", ["ridge", "mlp", "lstm"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_predict_refuses_nan_and_inf_inputs(name, bad, saved, tmp_path):
    model = api.load(str(saved[name])) if name in saved else _fit(name)
    x = model_inputs(model, PREPARED, "test")[:5].copy()
    x[2, ...] = bad  # without the check, row 2 came out as class 0 (down)
    for method in (model.predict_proba, model.predict):
        with pytest.raises(ValueError, match=r"1 of 5 input rows hold NaN or inf \(first: row 2\)"):
            method(x)


def test_check_onnx_refuses_an_empty_batch(tmp_path):
    # an empty batch through an exported LSTM/GRU aborts onnxruntime (the whole process);
    # check_onnx refuses it for every model, so it is shown on one that does not crash
    model = _fit("mlp")
    path = export_onnx(model.module, model.dims, model.input_kind, tmp_path / "mlp.onnx")
    x = model_inputs(model, PREPARED, "test")
    assert check_onnx(model.module, path, x[:1]) < 1e-5
    with pytest.raises(ValueError, match="at least one input row"):
        check_onnx(model.module, path, x[:0])


class _NaNMember:
    """A fitted model whose probabilities are NaN on some rows (e.g. diverged weights)."""

    def __init__(self, model) -> None:
        self.model, self.name, self.history = model, "broken", []
        self.input_kind, self.seq_len = model.input_kind, model.seq_len

    def predict_proba(self, x):
        p = self.model.predict_proba(x).copy()
        p[:3] = np.nan
        return p

    def predict(self, x):
        return self.predict_proba(x).argmax(-1)

    def predict_return(self, x):
        return self.model.predict_return(x)


def test_ensemble_refuses_a_member_with_nan_probabilities(saved):
    ridge = api.load(str(saved["ridge"]))
    lstm = api.load(str(saved["lstm"]))
    assert len(ensemble_rows("SYN", {"ridge": ridge, "lstm": lstm}, PREPARED)) == 12
    with pytest.raises(ValueError, match="member 'broken' gives NaN"):
        ensemble_rows("SYN", {"ridge": ridge, "broken": _NaNMember(lstm)}, PREPARED)


def test_soft_vote_refuses_nan_probabilities():
    # the job's ensembles (ray_jobs/ensembles.py) vote with soft_vote on stored predictions
    probas = np.full((2, 4, 1, 3), 1 / 3)
    probas[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"members \[1\] have NaN"):
        soft_vote(probas, np.full((2, 1), 0.5))


@pytest.mark.parametrize("name", ["mlp", "lstm"])
def test_export_refuses_a_quantized_model_clearly(name, saved, tmp_path):
    model = api.load(str(saved[name])) if name in saved else _fit(name)
    q = quantize_model(model)
    with pytest.raises(ValueError, match="int8-quantized module .* cannot be exported"):
        export_onnx(q.module, q.dims, q.input_kind, tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()
