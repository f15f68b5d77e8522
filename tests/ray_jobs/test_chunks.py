"""The chunk path of a job without Ray: chunking, preparing many symbols from one read with
per-symbol errors, and ensembles from in-memory predictions equal to those read back from
storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from data.prepared import PreparedSymbol
from ray_jobs.driver import chunk_symbols
from ray_jobs.ensembles import ensemble_rows_from_predictions, symbol_ensemble_rows
from ray_jobs.planner import Unit
from ray_jobs.spec import JobSpec
from ray_jobs.storage import JobStorage, StorageError
from ray_jobs.tasks import prepare_many
from ray_jobs.units import run_unit


def _spec(uri: str, symbols: list[str]) -> JobSpec:
    return JobSpec.from_dict({
        "name": "chunks", "dataset": {"uri": uri, "symbols": symbols},
        "target": {"kind": "direction", "horizons": [1, 5]}, "models": ["ols", "ridge"],
        "preset": "fast",
    })  # fmt: skip


def test_chunks_cover_the_symbols_in_order_and_spread_over_the_cpus() -> None:
    symbols = [f"S{i:03d}" for i in range(102)]
    chunks = chunk_symbols(symbols, cpus=2)
    assert [s for c in chunks for s in c] == symbols
    assert len(chunks) == 8 and max(map(len, chunks)) - min(map(len, chunks)) <= 11
    assert chunk_symbols(symbols[:3], cpus=64) == [["S000"], ["S001"], ["S002"]]
    assert chunk_symbols([], cpus=2) == []


def test_one_read_prepares_many_and_a_short_symbol_fails_alone(tmp_path: Path) -> None:
    from data.loading import load_bars

    frame = load_bars("sample:sp500", symbols=["AAPL", "ABT"])
    tiny = frame[frame["symbol"] == "ABT"].head(60).assign(symbol="TINY")
    path = tmp_path / "bars.parquet"
    pd.concat([frame, tiny]).to_parquet(path, index=False)

    prepared, errors = prepare_many(_spec(str(path), ["AAPL", "TINY", "ABT"]),
                                    ["AAPL", "TINY", "ABT"])
    assert sorted(prepared) == ["AAPL", "ABT"]
    assert list(errors) == ["TINY"] and errors["TINY"].startswith("data: ")
    assert "TINY" in errors["TINY"] and "60 rows" in errors["TINY"]

    # A symbol with no rows at all breaks the shared read: each symbol is then read alone.
    prepared, errors = prepare_many(_spec(str(path), ["AAPL", "NOPE"]), ["AAPL", "NOPE"])
    assert sorted(prepared) == ["AAPL"] and list(errors) == ["NOPE"]
    assert "NOPE" in errors["NOPE"]


def test_a_threshold_that_empties_a_training_class_is_a_data_warning() -> None:
    """target.threshold 0.5 puts every training label at h=1 in "flat": the symbol trains,
    and its warning reaches the driver's log and summary.json's data_warnings."""
    spec = JobSpec.from_dict({
        "name": "wide", "dataset": {"uri": "sample:sp500", "symbols": ["AAPL"]},
        "target": {"kind": "direction", "horizons": [1, 5], "threshold": [0.5, 0.01]},
        "models": ["ols"], "preset": "fast",
    })  # fmt: skip
    warnings: dict[str, str] = {}
    prepared, errors = prepare_many(spec, ["AAPL"], warnings)
    assert list(prepared) == ["AAPL"] and errors == {}
    assert list(warnings) == ["AAPL"]
    assert warnings["AAPL"].startswith("data: threshold [0.5, 0.01] leaves a class under 5%")
    assert "h=1 (tau 0.5): 0.0% down / 100.0% flat / 0.0% up" in warnings["AAPL"]


@pytest.mark.timeout(300)
def test_in_memory_ensembles_equal_the_ones_read_back(tmp_path: Path) -> None:
    spec = _spec("sample:sp500", ["AAPL"])
    prepared, errors = prepare_many(spec, ["AAPL"])
    assert not errors
    fold = prepared["AAPL"][0]
    storage = JobStorage(tmp_path.as_uri(), "chunks")
    sink: dict = {}
    for model in ("ols", "ridge"):
        rows = run_unit(Unit("AAPL", model), fold, spec, storage, predictions=sink)
        assert not any(r.get("error") for r in rows), rows
    assert sorted(sink) == ["ols", "ridge"]

    in_memory = ensemble_rows_from_predictions("AAPL", fold, sink)
    dirs = {m: Unit("AAPL", m).rel_dir for m in ("ols", "ridge")}
    read_back = symbol_ensemble_rows("AAPL", fold, dirs, storage)
    assert len(in_memory) == len(read_back) == 2 * 2 * 2  # equal/f1 x val/test x horizons
    for a, b in zip(in_memory, read_back, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], float) and np.isnan(a[k]):
                assert np.isnan(b[k]), k
            else:
                assert a[k] == pytest.approx(b[k]), k


def test_a_dead_chunk_task_fails_its_symbols_and_units_with_the_cause(tmp_path: Path) -> None:
    from ray_jobs.driver import _failed_chunk

    spec = _spec("sample:sp500", ["AAPL", "ABT"])
    storage = JobStorage(tmp_path.as_uri(), "chunks")
    units = [Unit("AAPL", "ols"), Unit("AAPL", "ridge"), Unit("ABT", "ols")]
    report = _failed_chunk(["AAPL", "ABT"], units, RuntimeError("worker died"), spec, storage)
    cause = "worker: RuntimeError: worker died"
    assert report.data_errors == {"AAPL": cause, "ABT": cause}
    assert sorted(report.unit_rows) == sorted(u.unit_id for u in units)
    for rows in report.unit_rows.values():
        assert len(rows) == 2 and all(r["error"] == cause for r in rows)  # one per horizon
    statuses = storage.unit_statuses()
    assert {u: s["state"] for u, s in statuses.items()} == dict.fromkeys(report.unit_rows,
                                                                        "failed")
    assert all(s["error"] == cause for s in statuses.values())


@pytest.mark.timeout(300)
def test_a_refit_member_stores_no_in_sample_val_and_ensembles_skip_val(tmp_path: Path) -> None:
    """A model refit on train+val (after a Tune search) has no out-of-sample val: it stores
    test predictions only, and its symbol's ensembles are scored on test with equal
    weights, instead of weighting and scoring by in-sample val predictions."""
    spec = _spec("sample:sp500", ["AAPL"])
    prepared, _ = prepare_many(spec, ["AAPL"])
    fold = prepared["AAPL"][0]
    storage = JobStorage(tmp_path.as_uri(), "chunks")
    sink: dict = {}
    run_unit(Unit("AAPL", "ols"), fold, spec, storage, predictions=sink)
    rows = run_unit(Unit("AAPL", "ridge"), fold, spec, storage, predictions=sink, refit={})
    assert {r["split"] for r in rows} == {"test"} and not any(r["error"] for r in rows)
    stored = pd.read_parquet(tmp_path / "jobs" / "chunks" / Unit("AAPL", "ridge").rel_dir
                             / "predictions.parquet")  # fmt: skip
    assert set(stored["split"]) == {"test"}

    ensembles = ensemble_rows_from_predictions("AAPL", fold, sink)
    assert {(r["model"], r["split"]) for r in ensembles} == {("ensemble_equal", "test")}
    assert len(ensembles) == 2  # horizons 1 and 5


def test_job_ensembles_weigh_members_as_the_model_zoo_does() -> None:
    """The job's ensembles, computed from stored prediction columns, score exactly as
    `models.ensemble.ensemble_rows` on the fitted members: the F1 weights come from the
    members' validation macro-F1 (a skilled ridge outweighs an always-flat voter), and
    here they change the vote, so equal weights in their place would show."""
    from models.ensemble import ensemble_rows
    from models.linear import fit_linear
    from ray_jobs.units import predict_splits, prediction_columns
    from tests.models.test_ensemble import Constant, make_prepared

    p = make_prepared()
    members = {"flat": Constant("flat", 1), "ridge": fit_linear("ridge", p)}
    frames = {m: prediction_columns(p, predict_splits(f, p, ("val", "test")))
              for m, f in members.items()}
    job = {(r["model"], r["split"], r["horizon"]): r
           for r in ensemble_rows_from_predictions("ENS", p, frames)}
    zoo = {(r["model"], r["split"], r["horizon"]): r for r in ensemble_rows("ENS", members, p)}
    assert job.keys() == zoo.keys() and len(job) == 2 * 2 * 2
    for key, ref in zoo.items():
        for col in ("accuracy", "macro_f1", "baseline_accuracy", "p_value", "mcc"):
            assert job[key][col] == pytest.approx(ref[col], rel=1e-9), (key, col)
    for split in ("val", "test"):
        for h in (1, 3):
            f1, equal = job[("ensemble_f1", split, h)], job[("ensemble_equal", split, h)]
            assert f1["macro_f1"] > equal["macro_f1"] + 0.05, (split, h)


def test_ensemble_unit_ids_use_the_symbols_safe_form() -> None:
    """A symbol spelled BRK.B: its trained units' ids are BRK_B__... (the planner's form,
    that of its files), and so are its ensembles' ids, so a client can join on unit_id."""
    from models.linear import fit_linear
    from ray_jobs.units import predict_splits, prediction_columns
    from tests.models.test_ensemble import make_prepared

    p = make_prepared()
    frames = {m: prediction_columns(p, predict_splits(fit_linear(m, p), p, ("val", "test")))
              for m in ("ols", "ridge")}
    rows = ensemble_rows_from_predictions("BRK.B", p, frames)
    assert rows and {r["symbol"] for r in rows} == {"BRK.B"}
    assert {r["unit_id"] for r in rows} == {"BRK_B__ensemble_equal__f0",
                                            "BRK_B__ensemble_f1__f0"}
    assert Unit("BRK.B", "ols").unit_id == "BRK_B__ols__f0"


def _outage() -> StorageError:
    return StorageError("write", "s3://b/k", ConnectionError("connection reset by peer"),
                        "still failing after 5 attempts", outage=True)


def test_a_linear_unit_rides_out_a_storage_outage_and_fails_on_a_permanent_error(
        monkeypatch) -> None:
    """The chaos probe's 20 s S3 outage in the linear phase failed 2 units (and the job),
    while the deep runs rode out the same outage: a unit whose writes hit an outage longer
    than JobStorage's own retries is fitted again after a wait; a permanent storage error
    (access denied) still fails it at once."""
    import time

    from ray_jobs import tasks

    calls, answers = [], iter([_outage(), _outage(), [{"error": None}]])

    def fake_run_unit(unit, prepared, spec, storage, **kw):
        calls.append(kw["propagate"])
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    failed = []
    monkeypatch.setattr(tasks, "run_unit", fake_run_unit)
    monkeypatch.setattr(tasks, "fail_unit", lambda *a, **k: failed.append(a) or [{"error": "x"}])
    monkeypatch.setattr(time, "sleep", lambda s: None)
    spec = type("S", (), {"target": type("T", (), {"horizons": [1]})()})()
    rows = tasks._run_linear_unit(Unit("A", "ols", 0), None, spec, None, {}, {})
    assert rows == [{"error": None}] and len(calls) == 3 and not failed
    # permanent (access denied): failed at once
    answers = iter([StorageError("write", "s3://b/k", PermissionError("denied"), "grant")])
    calls.clear()
    tasks._run_linear_unit(Unit("A", "ols", 0), None, spec, None, {}, {})
    assert len(calls) == 1 and len(failed) == 1
    # a storage that stays down: the first unit waits the retries out, the chunk's next
    # units fail at once (minutes to a failed job to resume, not hours)
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    answers = iter([_outage()] * 4)
    calls.clear()
    failed.clear()
    chunk: dict[str, bool] = {}
    tasks._run_linear_unit(Unit("A", "ols", 0), None, spec, None, {}, chunk)
    assert len(calls) == 3 and waits == [0.0, *tasks.UNIT_RETRY_WAITS_S]
    waits.clear()
    tasks._run_linear_unit(Unit("A", "ridge", 0), None, spec, None, {}, chunk)
    assert len(calls) == 4 and waits == [0.0] and len(failed) == 2


def _linear_frames(p: PreparedSymbol, models: tuple[str, ...] = ("ols", "ridge")) -> dict:
    """model -> the prediction columns a job stores for a linear model fitted on `p`."""
    from models.linear import fit_linear
    from ray_jobs.units import predict_splits, prediction_columns

    return {m: prediction_columns(p, predict_splits(fit_linear(m, p), p, ("val", "test")))
            for m in models}


def test_walk_forward_ensembles_get_one_unit_id_per_fold() -> None:
    """Each walk-forward fold of a symbol has its own ensembles: their rows carry that
    fold and the planner's unit id for it (AAPL__ensemble_equal__f2), so the folds'
    ensemble rows never share a unit id, as the trained units' rows do not."""
    from data.loading import load_bars
    from data.prepare import PrepareConfig, prepare_symbol

    cfg = PrepareConfig(seq_len=10, horizons=(1, 5), split="walk_forward", n_folds=3)
    folds = prepare_symbol(load_bars("sample:sp500", symbols=["AAPL"]), cfg)
    seen: set[str] = set()
    for p in folds:
        rows = ensemble_rows_from_predictions("AAPL", p, _linear_frames(p))
        assert rows and {r["fold"] for r in rows} == {p.fold}
        ids = {r["unit_id"] for r in rows}
        assert ids == {Unit("AAPL", f"ensemble_{w}", p.fold).unit_id for w in ("equal", "f1")}
        assert not ids & seen
        seen |= ids
    assert "AAPL__ensemble_equal__f2" in seen and len(seen) == 2 * 3


def test_a_symbol_with_one_usable_model_gets_no_ensemble(tmp_path: Path) -> None:
    """An ensemble needs at least two members (the module's rule): where only one model of
    a symbol (or of a fold) finished, there is no ensemble row, not a one-member
    "ensemble" that repeats that model's scores under another name, and the stored
    predictions are not read for it."""
    from tests.models.test_ensemble import make_prepared

    p = make_prepared()
    assert ensemble_rows_from_predictions("ENS", p, _linear_frames(p, ("ridge",))) == []
    storage = JobStorage(tmp_path.as_uri(), "one")  # nothing stored: a read would fail
    assert symbol_ensemble_rows("ENS", p, {"ridge": Unit("ENS", "ridge").rel_dir}, storage) == []
    assert len(ensemble_rows_from_predictions("ENS", p, _linear_frames(p))) == 2 * 2 * 2


def test_predictions_stored_for_other_samples_are_refused_not_realigned() -> None:
    """The members' stored predictions are matched to the prepared split by sample index.
    Predictions of other samples (a split moved 3 samples earlier, as another embargo
    gives) are an error naming the member and the split, not silently paired by position (samples
    507-509 would have taken sample 510's predictions)."""
    from dataclasses import replace

    from tests.models.test_ensemble import make_prepared

    p = make_prepared()
    frames = _linear_frames(p)
    for split in ("val", "test"):
        moved = replace(p, splits={**p.splits, split: p.splits[split] - 3})
        with pytest.raises(ValueError,
                           match=f"^ols's stored {split} predictions \\(fold 0\\) do not "
                                 "match the prepared split"):
            ensemble_rows_from_predictions("ENS", moved, frames)
