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
def test_search_then_refit_on_train_plus_val(ray_cluster: str, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from ray_jobs.driver import run_job

    caplog.set_level(logging.INFO)

    spec = JobSpec.from_dict(tiny_spec(
        "tuned", ["ridge", "mlp"], max_epochs=2,
        # more trials than fit at once on 2 CPUs: each ended trial must give its worker's
        # CPU back while the search runs (a stopped trial's Train group used to keep it)
        tune={"num_samples": 4, "symbols": ["AAPL"], "grace_period": 1},
        overrides={"mlp": {"num_layers": 1}},  # fixed: not searched, kept in the refit
        seed=7,
    ))  # fmt: skip
    storage = JobStorage(tmp_path.as_uri(), "tuned")
    summary = run_job(spec, storage, progress_interval_s=1.0)
    assert summary["failed_units"] == [], summary["failed_units"]
    # the driver's progress lines tell the search's trials as they go
    tuning = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[tuning]")]
    assert any(" of 4 trials ended" in line for line in tuning), tuning[-3:]

    best = storage.read_json("tune/mlp/best.json")
    assert best["trials"] == 4 and best["finished_trials"] >= 1
    assert 1 <= best["epochs"] <= 2 and best["metric"] == spec.tune.metric
    assert summary["tuned"] == {"mlp": best}
    assert best["symbols"] == ["AAPL"] and best["fixed"] == ["num_layers"]
    assert "num_layers" not in best["params"] and "hidden_size" in best["params"]

    board = storage.read_table("results/leaderboard.parquet").to_pandas()
    for symbol in ("AAPL", "ABT"):  # refit on every job symbol, not only the searched one
        mlp = board[(board["model"] == "mlp") & (board["symbol"] == symbol)]
        assert sorted(mlp["split"]) == ["test", "test"] and mlp["error"].isna().all()
        ridge = board[(board["model"] == "ridge") & (board["symbol"] == symbol)]
        assert sorted(set(ridge["split"])) == ["test", "val"]
        ens = board[(board["symbol"] == symbol) & board["model"].str.startswith("ensemble")]
        assert set(zip(ens["model"], ens["split"], strict=True)) == {("ensemble_equal", "test")}
    assert storage.read_json("status/ABT__mlp__f0.json")["state"] == "done"
    for symbol in ("AAPL", "ABT"):
        meta = storage.read_json(f"units/{symbol}/mlp/f0/model/metadata.json")
        assert meta["config"]["num_layers"] == 1  # the user's override, not a searched value
        assert meta["config"]["hidden_size"] == best["params"]["hidden_size"]
        assert meta["train_config"]["seed"] == 7  # the job's seed
        # the refit keeps its last epoch's weights: its val samples are in its training set
        assert meta["train_config"]["restore_best"] is False
        assert meta["result"]["best_epoch"] == meta["result"]["epochs_run"] - 1


@pytest.mark.parametrize("max_concurrent, expected", [(1, 1), ("auto", 3)])
def test_search_passes_its_concurrency_limit_to_tune(monkeypatch, tmp_path: Path,
                                                     max_concurrent, expected) -> None:
    """tune.max_concurrent (auto: the placement's slots) is the limit Tune applies; with a
    BasicVariantGenerator Tune ignores `max_concurrent_trials`, so the limit must be the
    generator's own."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    from ray_jobs.tune_search import search_model

    seen = {}

    class Stop(Exception):
        pass

    def fake_tuner(*args, tune_config, **kwargs):
        seen["config"] = tune_config
        raise Stop

    monkeypatch.setattr(tune, "Tuner", fake_tuner)
    spec = JobSpec.from_dict(tiny_spec("limit", ["mlp"], tune={
        "num_samples": 8, "symbols": ["AAPL"], "max_concurrent": max_concurrent,
        "grace_period": 1}))
    with pytest.raises(Stop):
        search_model("mlp", spec, JobStorage(tmp_path.as_uri(), "limit"), {}, gpu=0, slots=3)
    config = seen["config"]
    alg = config.search_alg
    if isinstance(alg, ConcurrencyLimiter):
        applied = alg.max_concurrent
    else:  # what ray.tune.tune.run does with a generator: max_concurrent_trials ignored
        assert isinstance(alg, BasicVariantGenerator)
        applied = alg.max_concurrent or None
    assert applied == expected


def test_first_n_search_symbols_skip_a_symbol_whose_data_failed(monkeypatch,
                                                                tmp_path: Path) -> None:
    """`tune.symbols: 1` searches on the job's first usable symbol: the first symbol's
    failed data does not fail every deep unit with "none of the search symbols"."""
    import ray_jobs.tune_search as tune_search
    from ray_jobs import driver
    from ray_jobs.placement import DeepPlacement
    from ray_jobs.planner import plan as make_plan
    from ray_jobs.progress import ProgressTracker

    searched = []

    def fake_search(model, spec, storage, prepared, *, gpu, slots, say=None):
        searched.append(sorted(prepared))
        return {"params": {"dropout": 0.1}, "epochs": 1}

    monkeypatch.setattr(tune_search, "search_model", fake_search)
    spec = JobSpec.from_dict(tiny_spec("first-usable", ["mlp"], tune={
        "num_samples": 2, "symbols": 1, "grace_period": 1}))
    plan = make_plan(spec, ["AAPL", "ABT"])
    storage = JobStorage(tmp_path.as_uri(), "first-usable")
    refit, failed = driver._tune(spec, plan, plan, {"ABT": object()}, storage,
                                 ProgressTracker(), DeepPlacement(gpu=0.0, slots=1))
    assert failed == set() and searched == [["ABT"]] and "mlp" in refit
