"""A job's ensembles, built from the members' stored predictions (`ray_jobs.ensembles`), are
the ensembles `models.ensemble` builds from the live fitted models: the same weights, the
same leaderboard metrics, for both weightings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.api import fit
from models.ensemble import ensemble_rows, ensemble_weights, f1_weights
from models.metrics import DIRECTION_METRICS, RETURN_METRICS
from ray_jobs.ensembles import ensemble_rows_from_predictions
from ray_jobs.planner import Unit
from ray_jobs.spec import JobSpec
from ray_jobs.storage import JobStorage
from ray_jobs.tasks import prepare_many
from ray_jobs.units import run_unit

MEMBERS = ("lasso", "ols", "ridge")
METRICS = DIRECTION_METRICS + RETURN_METRICS


def test_f1_weights_follow_validation_macro_f1() -> None:
    y = np.array([[0, 2], [1, 1], [2, 0], [2, 2]])
    perfect, wrong = y.copy(), np.full_like(y, 1)
    w = f1_weights(y, [perfect, wrong])
    assert w.shape == (2, 2) and np.allclose(w.sum(axis=0), 1.0)
    assert (w[0] > w[1]).all()
    no_flat = np.array([[0, 2], [2, 0], [0, 0], [2, 2]])
    always_flat = np.ones_like(no_flat)  # every member scores 0: equal weights
    assert np.allclose(f1_weights(no_flat, [always_flat, always_flat]), 0.5)


@pytest.mark.timeout(300)
def test_stored_prediction_ensembles_equal_the_live_model_ensembles(tmp_path: Path) -> None:
    spec = JobSpec.from_dict({
        "name": "ens", "dataset": {"uri": "sample:sp500", "symbols": ["AAPL"]},
        "target": {"kind": "direction", "horizons": [1, 5, 20]}, "models": list(MEMBERS),
        "preset": "fast",
    })  # fmt: skip
    prepared, errors = prepare_many(spec, ["AAPL"])
    assert not errors
    fold = prepared["AAPL"][0]
    storage = JobStorage(tmp_path.as_uri(), "ens")
    sink: dict = {}
    for model in MEMBERS:
        rows = run_unit(Unit("AAPL", model), fold, spec, storage, predictions=sink)
        assert not any(r.get("error") for r in rows), rows

    members = {m: fit(m, fold, preset="fast") for m in MEMBERS}
    w_f1 = ensemble_weights(members, fold, "f1")
    assert not np.allclose(w_f1, 1 / len(MEMBERS))  # the F1 weighting is not the equal one

    live = ensemble_rows("AAPL", members, fold)
    stored = ensemble_rows_from_predictions("AAPL", fold, sink)
    key = lambda r: (r["model"], r["split"], r["horizon"])  # noqa: E731
    assert sorted(map(key, live)) == sorted(map(key, stored))
    by_key = {key(r): r for r in stored}
    for row in live:
        other = by_key[key(row)]
        for metric in METRICS:
            assert row[metric] == pytest.approx(other[metric], nan_ok=True), (key(row), metric)
