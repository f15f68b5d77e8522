"""Acceptance (issue 4, items 3 and 5) on a local Ray (2 CPUs):
- a TorchTrainer worker process killed mid-run: the run restarts its worker and resumes the
  unit from its latest checkpoint, the epoch count going on (no restart at epoch 0);
- a symbol with too little data fails alone: its units are error rows in the leaderboard,
  the summary lists them, the other symbols' rows are fine and the entrypoint exits 1."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from ray_jobs.spec import JobSpec
from ray_jobs.storage import JobStorage
from tests._support import log_tail, wait_for
from tests.ray_jobs._jobs import (
    TINY_DATES,
    epoch_dirs,
    finish_entrypoint,
    kill_and_reap,
    own_ray_processes,
    registered_epoch,
    slow_lstm,
    start_spec,
    tiny_spec,
)

EPOCHS = 16
UNIT = "AAPL__lstm__f0"


@pytest.mark.timeout(900)
def test_killed_train_worker_resumes_from_its_checkpoint(ray_cluster: str,
                                                         tmp_path: Path) -> None:
    from ray_jobs.driver import run_job

    spec = JobSpec.from_dict(tiny_spec(
        "worker-kill", ["lstm"], max_epochs=None,
        dataset={"uri": "sample:sp500", "symbols": ["AAPL"]}, overrides={"lstm": slow_lstm(EPOCHS)},
    ))  # fmt: skip
    storage = JobStorage(tmp_path.as_uri(), "ft")
    train_root = tmp_path / "jobs" / "ft" / "ray" / "train"
    outcome: dict = {}

    def drive() -> None:
        try:
            outcome["summary"] = run_job(spec, storage, progress_interval_s=1.0)
        except BaseException as exc:  # surfaced by the assertions below
            outcome["error"] = exc

    driver = threading.Thread(target=drive, name="run_job", daemon=True)
    driver.start()
    wait_for(
        lambda: registered_epoch(train_root, UNIT) >= 2, timeout_s=400,
        what=f"Ray Train to register a checkpoint epoch >= 2 of {UNIT} under {train_root}",
        alive=lambda: None if driver.is_alive() else f"run_job ended early: {outcome}",
    )  # fmt: skip
    workers = own_ray_processes(b"ray::RayTrainWorker")
    assert len(workers) == 1, f"expected one TorchTrainer worker, found {workers}"
    killed_at = time.time()
    registered = registered_epoch(train_root, UNIT)
    kill_and_reap(workers)
    assert not storage.exists(f"status/{UNIT}.json"), "the unit finished before the kill"

    driver.join(timeout=400)
    assert not driver.is_alive(), "run_job did not finish after the worker restart"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"]["failed_units"] == []

    status = storage.read_json(f"status/{UNIT}.json")
    assert status["state"] == "done"
    resumed = status["resumed_from_epoch"]
    assert resumed is not None and resumed >= registered >= 2, (
        f"resumed from epoch {resumed}, but epoch {registered} was checkpointed before the kill"
    )
    # The history goes 0..EPOCHS-1 once: the epochs before the kill came from the
    # checkpoint, the rest were trained after it; none twice, none missing.
    assert [h["epoch"] for h in status["history"]] == list(range(EPOCHS))
    assert status["rows"][0]["epochs"] == EPOCHS
    # Checkpoints after the resume point were written by the restarted worker.
    later = [e for e in epoch_dirs(train_root, UNIT) if e > resumed]
    assert later, "no checkpoint after the resume point"
    for e in later:
        (marker,) = train_root.glob(f"*/{UNIT}/epoch_{e:04d}/unit.json")
        assert marker.stat().st_mtime >= killed_at - 1.0, f"epoch {e} was not trained again"
        assert json.loads(marker.read_text()) == {"unit_id": UNIT, "epoch": e}


def _bars_with_a_short_symbol(path: Path) -> Path:
    """Two healthy sample symbols (~500 rows each) and `TINY` with 80 rows."""
    from data.loading import load_bars

    bars = load_bars("sample:sp500", symbols=["AAPL", "ABT", "ACN"], **TINY_DATES)
    tiny = bars[bars["symbol"] == "ACN"].tail(80).assign(symbol="TINY")
    frame = pd.concat([bars[bars["symbol"] != "ACN"], tiny], ignore_index=True)
    frame.to_parquet(path, index=False)
    return path


@pytest.mark.timeout(600)
def test_symbol_with_too_little_data_fails_alone(ray_cluster: str, tmp_path: Path) -> None:
    data = _bars_with_a_short_symbol(tmp_path / "bars.parquet")
    spec = tiny_spec(
        "short-symbol", ["ols", "ridge", "mlp"],
        dataset={"uri": str(data), "symbols": ["AAPL", "ABT", "TINY"]},
        overrides={"mlp": {"hidden_size": 8}},
        resources={"units_per_run": 3},  # TINY shares its mlp run with the healthy symbols
    )  # fmt: skip
    proc, storage, log = start_spec(spec, tmp_path, ray_cluster)
    rc = finish_entrypoint(proc, log, timeout_s=500)
    assert rc == 1, f"exit status {rc}, expected 1 (some units failed); log:\n{log_tail(log)}"
    assert "results at" in log.read_text(), log_tail(log)  # it ended normally, not by a crash

    summary = storage.read_json("results/summary.json")
    tiny_units = {f"TINY__{m}__f0" for m in ("ols", "ridge", "mlp")}
    assert {u["unit_id"] for u in summary["failed_units"]} == tiny_units
    for failed in summary["failed_units"]:
        assert "TINY" in failed["error"] and "80 rows" in failed["error"], failed
    assert set(summary["data_errors"]) == {"TINY"}

    board = storage.read_table("results/leaderboard.parquet").to_pandas()
    units = board[~board["model"].str.startswith("ensemble")]
    tiny = units[units["symbol"] == "TINY"]
    assert sorted(zip(tiny["model"], tiny["horizon"].astype(int), strict=True)) == sorted(
        (m, h) for m in ("ols", "ridge", "mlp") for h in (1, 5)
    )
    assert tiny["error"].str.contains("80 rows").all()
    assert tiny["accuracy"].isna().all()
    healthy = units[units["symbol"] != "TINY"]
    test = healthy[healthy["split"] == "test"]
    assert len(test) == 2 * 3 * 2  # 2 symbols x 3 models x 2 horizons
    assert healthy["error"].isna().all(), healthy.loc[healthy["error"].notna(), "error"]
    for symbol in ("AAPL", "ABT"):
        for model in ("ols", "ridge", "mlp"):
            assert storage.read_json(f"status/{symbol}__{model}__f0.json")["state"] == "done"
    assert storage.read_json("status/TINY__mlp__f0.json")["state"] == "failed"
    assert storage.read_json("progress.json")["phase"] == "failed"


@pytest.mark.timeout(600)
def test_a_failed_search_fails_its_models_units_which_are_not_trained(
    ray_cluster: str, tmp_path: Path
) -> None:
    """The search of mlp runs on TINY only, whose data fails: every mlp unit fails with the
    search's error and stays failed (none is trained after all), ridge is unaffected."""
    data = _bars_with_a_short_symbol(tmp_path / "bars.parquet")
    spec = tiny_spec(
        "failed-search", ["ridge", "mlp"],
        dataset={"uri": str(data), "symbols": ["AAPL", "TINY"]},
        tune={"num_samples": 1, "symbols": ["TINY"], "grace_period": 1},
    )  # fmt: skip
    proc, storage, log = start_spec(spec, tmp_path, ray_cluster)
    rc = finish_entrypoint(proc, log, timeout_s=500)
    assert rc == 1, f"exit status {rc}, expected 1; log:\n{log_tail(log)}"
    status = storage.read_json("status/AAPL__mlp__f0.json")
    assert status["state"] == "failed" and "none of the search symbols" in status["error"]
    assert storage.read_json("status/AAPL__ridge__f0.json")["state"] == "done"
    summary = storage.read_json("results/summary.json")
    assert {u["unit_id"] for u in summary["failed_units"]} == {
        "AAPL__mlp__f0", "TINY__mlp__f0", "TINY__ridge__f0"}
    board = storage.read_table("results/leaderboard.parquet").to_pandas()
    mlp = board[(board["model"] == "mlp") & (board["symbol"] == "AAPL")]
    assert len(mlp) and mlp["error"].str.contains("tune:").all()
    progress = storage.read_json("progress.json")
    assert progress["phase"] == "failed"
    assert progress["units"]["done"] + progress["units"]["failed"] == progress["units"]["total"]


def test_a_dataset_that_cannot_be_read_ends_the_job_with_exit_2(ray_cluster: str,
                                                                 tmp_path: Path) -> None:
    """A missing file or columns that are not bars: nothing can be planned. The entrypoint
    says why (every missing column at once) and exits 2 (bad input), and progress.json
    says failed with the reason, instead of a traceback and a job stuck in `planning`."""
    upper = tmp_path / "upper.csv"
    pd.DataFrame({"Symbol": ["A"], "Date": ["2020-01-02"], "Open": [1.0], "High": [1.0],
                  "Low": [1.0], "Close": [1.0], "Volume": [1]}).to_csv(upper, index=False)
    for name, uri, says in [("no-file", str(tmp_path / "nope.parquet"), "dataset not found"),
                            ("upper", str(upper), "'Volume' -> 'volume'")]:
        spec = tiny_spec(name, ["ols"], dataset={"uri": uri, "symbols": 2})
        (tmp_path / name).mkdir()
        proc, storage, log = start_spec(spec, tmp_path / name, ray_cluster)
        rc = finish_entrypoint(proc, log, timeout_s=120)
        text = log.read_text()
        assert rc == 2 and says in text and "Traceback" not in text, log_tail(log)
        progress = storage.read_json("progress.json")
        assert progress["phase"] == "failed" and says in progress["message"], progress


def test_symbols_n_leaves_out_a_symbol_whose_files_would_clash(tmp_path: Path) -> None:
    """`symbols: N` takes the dataset's first N; `BRK.B` and `BRK/B` would share the
    file name BRK_B, so the second is left out with that reason (a data error), not the
    whole job."""
    from ray_jobs.driver import resolve_symbols
    from tests.data.conftest import make_bars

    path = tmp_path / "b.parquet"
    make_bars(("BRK.B", "BRK/B", "AAPL"), n=5).to_parquet(path)
    spec = JobSpec.from_dict(tiny_spec("clash", ["ols"], dataset={"uri": str(path),
                                                                   "symbols": 3}))
    symbols, left_out = resolve_symbols(spec)
    assert symbols == ["AAPL", "BRK.B"]
    assert list(left_out) == ["BRK/B"] and "both name their files 'BRK_B'" in left_out["BRK/B"]
    too_many = JobSpec.from_dict(tiny_spec("many", ["ols"], dataset={"uri": str(path),
                                                                      "symbols": 4}))
    with pytest.raises(ValueError, match=r"dataset.symbols: 4 symbols requested but .* has 3: "
                                         r"ask for at most 3"):
        resolve_symbols(too_many)


def test_cuda_settings_on_a_cluster_without_gpus_end_the_job_with_exit_2(
        ray_cluster: str, tmp_path: Path) -> None:
    """`train.device: cuda` or `train.amp: bf16` cannot run where the deep runs get no GPU;
    the API cannot know the cluster, so the driver refuses them before anything trains,
    naming each setting, instead of every unit failing alone."""
    from ray_jobs.driver import cuda_only_settings

    spec = tiny_spec("cuda", ["ols", "mlp", "lstm"],
                     overrides={"mlp": {"train.device": "cuda:0"}, "lstm": {"train.amp": "bf16"}})
    assert cuda_only_settings(JobSpec.from_dict(spec)) == [
        "mlp: train.device='cuda:0'", "lstm: train.amp='bf16'"]
    assert cuda_only_settings(JobSpec.from_dict(tiny_spec("cpu", ["mlp"]))) == []
    proc, storage, log = start_spec(spec, tmp_path, ray_cluster)
    rc = finish_entrypoint(proc, log, timeout_s=120)
    text = log.read_text()
    assert rc == 2 and "Traceback" not in text, log_tail(log)
    progress = storage.read_json("progress.json")
    assert progress["phase"] == "failed", progress
    assert "mlp: train.device='cuda:0'; lstm: train.amp='bf16' need(s) one" in progress["message"]
    assert not storage.exists("status/AAPL__ols__f0.json")  # nothing trained


def test_a_resumed_runs_checkpoint_copy_is_removed_when_the_run_ends(tmp_path, monkeypatch
                                                                     ) -> None:
    """A resumed run downloaded its latest checkpoint with `Checkpoint.to_directory()`,
    which copied it to /tmp/checkpoint_tmp_* and left it there for good (a CI run left 9,
    up to 0.9 MB each). The copy is named as the run's own upload directories (so a killed
    worker's is swept as stale) and removed when the run ends, however it ends."""
    import json
    import os
    import tempfile

    import ray.train

    from ray_jobs import deep_runs

    src = tmp_path / "epoch_0003"
    src.mkdir()
    (src / deep_runs.UNIT_FILE).write_text(json.dumps({"unit_id": "AAPL__lstm__f0",
                                                       "epoch": 3}))
    (src / "checkpoint.pt").write_bytes(b"weights")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(ray.train, "get_checkpoint",
                        lambda: ray.train.Checkpoint.from_directory(str(src)))
    with pytest.raises(RuntimeError, match="the unit failed"):
        with deep_runs._latest_checkpoint() as (unit_id, local, epoch):
            assert (unit_id, epoch) == ("AAPL__lstm__f0", 3)
            assert os.path.basename(local).startswith(deep_runs.CKPT_PREFIX)
            assert open(os.path.join(local, "checkpoint.pt"), "rb").read() == b"weights"
            raise RuntimeError("the unit failed")
    assert os.listdir(tmp_path / "tmp") == [] and not os.path.exists(local)
    assert src.is_dir()  # the run's own checkpoint stays
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: None)
    with deep_runs._latest_checkpoint() as latest:
        assert latest == (None, None, None)


def test_a_run_removes_checkpoint_directories_whose_upload_was_cut_off(tmp_path) -> None:
    """A worker killed mid-upload left its `quantray-ckpt-*` directory (~2 MB) in /tmp for
    good (Ray deletes it only after the upload): each run sweeps the stale ones as it
    starts, leaving a fresh one (an upload in flight) and anything else alone."""
    import os

    from ray_jobs.deep_runs import STALE_CKPT_S, remove_stale_checkpoint_dirs

    now = time.time()
    for name, age in (("quantray-ckpt-old", STALE_CKPT_S + 60), ("quantray-ckpt-new", 5.0),
                      ("other-old", STALE_CKPT_S + 60)):
        d = tmp_path / name
        d.mkdir()
        (d / "checkpoint.pt").write_bytes(b"x")
        os.utime(d, (now - age, now - age))
    (tmp_path / "quantray-ckpt-file").write_text("not a directory")
    os.utime(tmp_path / "quantray-ckpt-file", (now - 2 * STALE_CKPT_S,) * 2)
    assert remove_stale_checkpoint_dirs(str(tmp_path), now=now) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "other-old", "quantray-ckpt-file", "quantray-ckpt-new"]
