"""Acceptance (issue 4, items 1 and 2): a sweep of several symbols x all 14 models on a
local Ray (2 CPUs), with its storage in S3 (a moto server on loopback), completes; its
leaderboard has a row for every unit x horizon, and checkpoints, results and artifacts are
in the bucket."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from ray_jobs.spec import DEEP_MODELS, MODEL_NAMES, JobSpec
from ray_jobs.storage import JobStorage
from tests.ray_jobs._jobs import tiny_spec

SYMBOLS = ("AAPL", "ABT")
HORIZONS = (1, 5)
JOB_ID = "sweep-s3"
# Small widths so that 22 deep units train in seconds; keys as in docs/presets.md.
SMALL = {
    "mlp": {"hidden_size": 8},
    "lstm": {"hidden_size": 8},
    "gru": {"hidden_size": 8},
    "cnn": {"channels": 8},
    "tcn": {"channels": 8, "num_levels": 2},
    "transformer": {"d_model": 16, "n_heads": 2, "ff_dim": 16},
    "seq2seq": {"hidden_size": 8, "attention_size": 8},
    "cnn_gru": {"conv_channels": 8, "hidden_size": 8},
    "cnn_bilstm": {"conv_channels": 8, "hidden_size": 8},
}


@pytest.fixture(scope="module")
def sweep(ray_cluster: str, s3_store) -> dict:
    """Run the whole sweep once; the tests below look at what it left in the bucket."""
    from ray_jobs.driver import run_job

    spec = JobSpec.from_dict(tiny_spec(
        "sweep", list(MODEL_NAMES), overrides=SMALL,
        # One TorchTrainer run per symbol (its 11 deep units one after another), two at once:
        # a run's fixed cost (~14-25 s) is paid twice, not 11 times.
        resources={"units_per_run": len(DEEP_MODELS), "max_concurrent_runs": 2},
    ))  # fmt: skip
    storage = JobStorage(s3_store.uri, JOB_ID)
    summary = run_job(spec, storage, progress_interval_s=1.0)
    return {"summary": summary, "spec": spec, "storage": storage}


@pytest.mark.timeout(900)  # the module's sweep runs in this test's setup
def test_every_unit_and_horizon_has_a_leaderboard_row(sweep: dict, s3_store) -> None:
    summary = sweep["summary"]
    assert summary["failed_units"] == [], summary["failed_units"]
    assert summary["units"] == len(SYMBOLS) * len(MODEL_NAMES) == 28

    board = pd.read_parquet(io.BytesIO(s3_store.read(f"jobs/{JOB_ID}/results/leaderboard.parquet")))
    units = board[~board["model"].str.startswith("ensemble")]
    test = units[units["split"] == "test"]
    got = sorted(zip(test["symbol"], test["model"], test["horizon"].astype(int), strict=True))
    want = sorted((s, m, h) for s in SYMBOLS for m in MODEL_NAMES for h in HORIZONS)
    assert got == want  # exactly one test row per unit x horizon, no gaps, no duplicates
    assert test["error"].isna().all(), test.loc[test["error"].notna(), ["unit_id", "error"]]
    # Every row holds real scores, and a direction accuracy is a probability.
    assert test["accuracy"].between(0, 1).all() and test["macro_f1"].notna().all()
    deep = test[test["model"].isin(DEEP_MODELS)]
    assert (deep["epochs"] == 1).all()  # max_epochs reached every deep model
    assert deep["artifact_uri"].str.startswith("s3://quantray-it/store/jobs/").all()
    # The CSV twin holds the same rows.
    csv = pd.read_csv(io.BytesIO(s3_store.read(f"jobs/{JOB_ID}/results/leaderboard.csv")))
    assert len(csv) == len(board)
    # Soft-voting ensembles ride along, one per symbol x horizon on the test split.
    ens = board[board["model"].str.startswith("ensemble") & (board["split"] == "test")]
    assert set(ens["symbol"]) == set(SYMBOLS)


@pytest.mark.timeout(60)
def test_summary_and_progress_say_succeeded(sweep: dict, s3_store) -> None:
    summary = json.loads(s3_store.read(f"jobs/{JOB_ID}/results/summary.json"))
    assert summary["failed_units"] == [] and summary["data_errors"] == {}
    assert summary["plan"]["deep_units"] == 2 * len(DEEP_MODELS)
    assert summary["plan"]["deep_runs"] == len(SYMBOLS)  # a symbol's deep units share a run
    assert {m["model"] for m in summary["models"]} >= set(MODEL_NAMES)
    progress = json.loads(s3_store.read(f"jobs/{JOB_ID}/progress.json"))
    assert progress["phase"] == "succeeded"


@pytest.mark.timeout(60)
def test_checkpoints_results_and_artifacts_are_in_the_bucket(sweep: dict, s3_store) -> None:
    job = s3_store.keys(f"jobs/{JOB_ID}")
    assert {"spec.json", "plan.json", "progress.json"} <= set(job)

    results = s3_store.keys(f"jobs/{JOB_ID}/results")
    for name in ("leaderboard.parquet", "leaderboard.csv", "summary.json",
                 "plots/comparison.png", "plots/heatmap_macro_f1.png",
                 "plots/learning_curves.png"):  # fmt: skip
        assert name in results, f"results/{name} missing from the bucket: {results}"
    assert s3_store.read(f"jobs/{JOB_ID}/results/plots/comparison.png")[:8] == b"\x89PNG\r\n\x1a\n"

    # Ray Train checkpoints under ray/train/{run}/{unit}/epoch_N. CheckpointConfig(
    # num_to_keep=2) counts a run's checkpoints across its units: each run keeps its two best
    # by val_score and its latest (the last unit's); a finished unit's model is in units/.
    plan = json.loads(s3_store.read(f"jobs/{JOB_ID}/plan.json"))
    train = s3_store.keys(f"jobs/{JOB_ID}/ray/train")
    assert len(plan["deep_groups"]) == len(SYMBOLS)
    for group in plan["deep_groups"]:
        run = group["run_name"]
        kept = sorted(k for k in train if k.startswith(f"{run}/") and k.endswith("/unit.json"))
        assert 2 <= len(kept) <= 3, kept
        assert f"{run}/{group['units'][-1]}/epoch_0000/unit.json" in kept
        for marker in kept:
            unit_id = marker.split("/")[1]
            assert unit_id in group["units"]
            info = json.loads(s3_store.read(f"jobs/{JOB_ID}/ray/train/{marker}"))
            assert info == {"unit_id": unit_id, "epoch": 0}

    # Artifacts: every unit's model, predictions and metrics.
    units = s3_store.keys(f"jobs/{JOB_ID}/units")
    statuses = s3_store.keys(f"jobs/{JOB_ID}/status")
    for symbol in SYMBOLS:
        for model in MODEL_NAMES:
            base = f"{symbol}/{model}/f0"
            for name in ("model/metadata.json", "predictions.parquet", "metrics.json"):
                assert f"{base}/{name}" in units, f"units/{base}/{name} missing"
            assert f"{symbol}__{model}__f0.json" in statuses


@pytest.mark.timeout(120)
def test_artifacts_load_back_from_the_bucket(sweep: dict, tmp_path) -> None:
    """A stored deep and a stored linear model predict again after a download."""
    import numpy as np

    from models import api
    from models.leaderboard import model_inputs
    from ray_jobs.tasks import prepare_many

    storage: JobStorage = sweep["storage"]
    prepared = prepare_many(sweep["spec"], ["AAPL"])[0]["AAPL"][0]
    for model in ("lstm", "ridge"):
        local = tmp_path / model
        storage.download_dir(f"units/AAPL/{model}/f0/model", str(local))
        fitted = api.load(str(local))
        x = model_inputs(fitted, prepared, "test")
        proba = np.asarray(fitted.predict_proba(x))
        assert proba.shape == (len(prepared.splits["test"]), len(HORIZONS), 3)
        np.testing.assert_allclose(proba.sum(axis=-1), 1.0, atol=1e-4)
        # The stored predictions came from this very model.
        preds = storage.read_table(f"units/AAPL/{model}/f0/predictions.parquet").to_pandas()
        stored = preds[preds["split"] == "test"]["p_up_h1"].to_numpy()
        np.testing.assert_allclose(stored, proba[:, 0, 2], atol=1e-5)

