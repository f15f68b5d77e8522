"""A Tune search (`tune.num_samples > 0`) on a local Ray: ASHA trials on the search
symbols, then every symbol's unit refit with the best config on train+val and scored on
test only; the summary records the config, and the symbol's ensembles use no in-sample
val predictions."""

from __future__ import annotations

from pathlib import Path

import pytest

from ray_jobs.spec import JobSpec
from ray_jobs.storage import JobStorage
from tests.ray_jobs._jobs import tiny_spec


@pytest.mark.timeout(600)
def test_search_then_refit_on_train_plus_val(ray_cluster: str, tmp_path: Path) -> None:
    from ray_jobs.driver import run_job

    spec = JobSpec.from_dict(tiny_spec(
        "tuned", ["ridge", "mlp"], max_epochs=2,
        tune={"num_samples": 2, "symbols": ["AAPL"], "grace_period": 1},
    ))  # fmt: skip
    storage = JobStorage(tmp_path.as_uri(), "tuned")
    summary = run_job(spec, storage, progress_interval_s=1.0)
    assert summary["failed_units"] == [], summary["failed_units"]

    best = storage.read_json("tune/mlp/best.json")
    assert best["trials"] == 2 and best["finished_trials"] >= 1
    assert 1 <= best["epochs"] <= 2 and best["metric"] == spec.tune.metric
    assert summary["tuned"] == {"mlp": best}

    board = storage.read_table("results/leaderboard.parquet").to_pandas()
    for symbol in ("AAPL", "ABT"):  # refit on every job symbol, not only the searched one
        mlp = board[(board["model"] == "mlp") & (board["symbol"] == symbol)]
        assert sorted(mlp["split"]) == ["test", "test"] and mlp["error"].isna().all()
        ridge = board[(board["model"] == "ridge") & (board["symbol"] == symbol)]
        assert sorted(set(ridge["split"])) == ["test", "val"]
        ens = board[(board["symbol"] == symbol) & board["model"].str.startswith("ensemble")]
        assert set(zip(ens["model"], ens["split"], strict=True)) == {("ensemble_equal", "test")}
    assert storage.read_json("status/ABT__mlp__f0.json")["state"] == "done"
