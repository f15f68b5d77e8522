"""int8 dynamic quantization: agrees with the float model, reports accuracy and speed."""

from __future__ import annotations

import pytest
import torch

from data.prepared import PreparedSymbol
from models.deep import DeepModel, fit_deep
from models.quantize import layer_counts, quantization_report, quantize_model
from tests.models._planted import planted as _planted


def planted(n: int = 500, f: int = 5, seq_len: int = 8, seed: int = 3) -> PreparedSymbol:
    return _planted(n, f, seq_len, (1,), seed)


PREPARED = planted()


@pytest.fixture(scope="module", params=["mlp", "gru"])
def model(request) -> DeepModel:
    return fit_deep(request.param, PREPARED, overrides={"seq_len": 8, "train.epochs": 6,
                                                        "train.lr": 1e-2})  # fmt: skip


def test_quantized_model_mostly_agrees_and_reports_speed(model):
    report = quantization_report(model, PREPARED, "test", repeats=2)
    assert report["n"] == 75 and report["agreement"] >= 0.9
    assert abs(report["accuracy_change"]) <= 0.1
    assert report["accuracy_change"] == pytest.approx(
        report["int8_accuracy"] - report["float_accuracy"]
    )
    assert report["max_proba_diff"] < 0.2
    assert report["float_seconds"] > 0 and report["int8_seconds"] > 0
    assert report["speedup"] == pytest.approx(report["float_seconds"] / report["int8_seconds"])
    assert report["int8_bytes"] < report["float_bytes"]
    assert report["layers"]["quantized"] >= 2 and report["layers"]["float"] == 0


def test_quantize_keeps_the_float_model_and_refuses_to_save(model, tmp_path):
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    qmodel = quantize_model(model)
    assert qmodel.quantized and not model.quantized
    assert layer_counts(model.module)["quantized"] == 0
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, before[k])
    x = PREPARED.split_arrays("test", sequence=model.input_kind == "sequence")[0]
    assert qmodel.predict_proba(x).shape == model.predict_proba(x).shape
    with pytest.raises(ValueError, match="inference only"):
        qmodel.save(str(tmp_path))
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(qmodel)
