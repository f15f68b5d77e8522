"""An interrupted Tune search resumes: the job driver (`python -m ray_jobs.run`) is SIGKILLed
while a model's search runs, after a trial finished; rerunning the job id restores the
search's Tune experiment, so the finished trials are not trained again (same trial ids,
their result files untouched), the unfinished ones are run, and the job ends with the
search's best.json over every trial and a leaderboard. A search that cannot be restored
(another spec, an unreadable state) is removed with a warning and starts afresh."""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import time
from pathlib import Path

import pytest

from ray_jobs.spec import JobSpec
from ray_jobs.storage import JobStorage
from tests._support import log_tail, wait_for
from tests.ray_jobs._jobs import (
    finish_entrypoint,
    start_entrypoint,
    stop_entrypoint,
    tiny_spec,
    write_spec,
)

JOB = "tune-resume"
SAMPLES = 3


EXP = "ray/search-mlp"  # the search's Tune experiment, in the job's storage


def _trial_states(storage: JobStorage) -> dict[str, str] | None:
    """trial id -> status in the newest experiment state Tune synced to the job's storage,
    or None (none yet, or being rewritten)."""
    snaps = [n for n in storage.list_dir(EXP, missing_ok=True)
             if n.startswith("experiment_state-")]
    if not snaps:
        return None
    try:
        state = json.loads(storage.read_bytes(f"{EXP}/{max(snaps)}"))
        trials = [json.loads(t) for t, _ in state["trial_data"]]
    except (OSError, ValueError, KeyError):
        return None
    return {t["trial_id"]: t["status"] for t in trials}


def _trial_files(storage: JobStorage) -> dict[str, tuple[bytes, bytes]]:
    """trial id -> (params.json, result.json) of every trial folder of the experiment."""
    files = set(storage.list_files(EXP))
    out = {}
    for name in storage.list_dir(EXP):
        if f"{name}/params.json" in files:
            result = f"{EXP}/{name}/result.json"
            out[_trial_id(name)] = (storage.read_bytes(f"{EXP}/{name}/params.json"),
                                    storage.read_bytes(result) if storage.exists(result)
                                    else b"")
    return out


def _trial_id(trial_dir: str) -> str:
    """A trial folder's id: `_trial_{id}_{n}_{params}...` (Tune's default dirname)."""
    parts = trial_dir.split("_")
    return f"{parts[2]}_{parts[3]}"


def _seeded_configs(seed: int, n: int) -> list[dict]:
    """The first `n` configs Tune's generator draws from mlp's search space with `seed`
    (as plain JSON, as the trials' params.json hold them)."""
    from ray.tune.experiment import Experiment
    from ray.tune.search import BasicVariantGenerator

    from models.registry import get_spec
    from ray_jobs.tune_search import tune_space

    def _draw(config):
        pass

    gen = BasicVariantGenerator(random_state=seed)
    gen.add_configurations([Experiment("seeded", _draw, num_samples=n,
                                       config=tune_space(get_spec("mlp").search_space))])
    return [json.loads(json.dumps(gen.next_trial().config, default=int)) for _ in range(n)]


@pytest.mark.timeout(600)
def test_rerun_resumes_an_interrupted_search(ray_cluster: str, tmp_path: Path) -> None:
    """The driver is killed after the search's first trial finished; the rerun goes on
    with the same experiment. (The checks read through JobStorage: with an S3Store's uri
    as `uri` the test runs on S3 as well.)"""
    import ray

    from ray_jobs.tune_search import check_search_state

    spec = tiny_spec(
        JOB, ["mlp"], max_epochs=2, seed=7,
        # one trial at a time, each trained its 2 epochs (no ASHA stop): a kill after the
        # first finished trial lands while the search still has trials to run
        tune={"num_samples": SAMPLES, "symbols": ["AAPL"], "grace_period": 2,
              "max_concurrent": 1},
    )  # fmt: skip
    uri = (tmp_path / "store").as_uri()
    log = tmp_path / "driver.log"
    first = start_entrypoint(["--spec", str(write_spec(spec, tmp_path / "spec.yaml")),
                              "--storage", uri, "--name", JOB], ray_cluster, log)
    storage = JobStorage(uri, JOB)

    def some_finished() -> dict[str, str] | None:
        """The trial states once a trial has finished and the search has more to run, and
        the stored state is resumable. Tune uploads its experiment and generator states
        file by file: a kill between the two leaves a state that is not resumed (a fresh
        search, see check_search_state), so the kill waits for a consistent pair."""
        states = _trial_states(storage) or {}
        done = [s for s in states.values() if s == "TERMINATED"]
        if not 0 < len(done) < SAMPLES:
            return None
        try:
            check_search_state(storage, EXP)
        except Exception:  # being uploaded
            return None
        return states

    try:
        try:
            wait_for(some_finished, timeout_s=300, every_s=0.2,
                     what="a finished trial in the search's experiment state",
                     alive=lambda: None if first.poll() is None else
                     f"the driver exited with {first.returncode}:\n{log_tail(log)}")  # fmt: skip
        except AssertionError as exc:  # what the search was doing, for the CI's log
            from ray_jobs.cluster_gc import describe_holders

            raise AssertionError(
                f"{exc}\ntrial states in storage: {_trial_states(storage)}\n"
                f"stored files: {storage.list_files(EXP) if storage.exists(EXP) else None}\n"
                f"cluster: {describe_holders()}\ndriver log:\n{log_tail(log, 150)}") from None
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        stop_entrypoint(first)
    # Ray ends the dead driver's trial actors; wait until their CPUs are free again, so
    # that nothing of the killed search still writes while we look.
    from ray_jobs.cluster_gc import remove_leaked_placement_groups

    def cpus_free() -> bool:
        remove_leaked_placement_groups()
        return ray.available_resources().get("CPU", 0) >= 2

    wait_for(cpus_free, timeout_s=180, what="the killed search's workers to exit")
    before = _trial_states(storage)
    assert before, "no experiment state"
    finished = {t for t, s in before.items() if s == "TERMINATED"}
    assert 0 < len(finished) < SAMPLES, before
    assert not storage.exists("tune/mlp/best.json")
    files_before = _trial_files(storage)
    assert finished <= set(files_before), (finished, sorted(files_before))
    killed_at = time.time()

    second = start_entrypoint(["--job-id", JOB, "--storage", uri], ray_cluster, log)
    rc = finish_entrypoint(second, log, timeout_s=400)
    assert rc == 0, f"rerun exit status {rc}; log:\n{log_tail(log)}"

    after = _trial_states(storage)
    # The same search went on: no trial of a new search, every trial of the old one kept
    # its id, and the search still has num_samples trials, all finished.
    assert set(after) >= set(before) and len(after) == SAMPLES, (before, after)
    assert set(after.values()) == {"TERMINATED"}, after
    files_after = _trial_files(storage)
    assert set(files_after) == set(after), (sorted(files_after), after)
    for trial_id in finished:  # finished trials were not trained again
        assert files_after[trial_id] == files_before[trial_id], trial_id
        lines = files_after[trial_id][1].decode().strip().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == [0, 1], trial_id
    for trial_id in set(after) - finished:  # trained (again) by the rerun, from scratch
        rows = [json.loads(line) for line in files_after[trial_id][1].decode().splitlines()]
        assert rows and rows[-1]["epochs_run"] == 2 and rows[-1]["timestamp"] > killed_at

    # What the resumed search sampled: trial by trial, the configs an uninterrupted search
    # with the spec's seed draws (Tune restored its generator's RNG state).
    configs = [json.loads(files_after[t][0]) for t in sorted(files_after)]
    assert configs == _seeded_configs(spec["seed"], SAMPLES)

    best = storage.read_json("tune/mlp/best.json")
    assert best["trials"] == SAMPLES and best["finished_trials"] == SAMPLES, best
    assert 1 <= best["epochs"] <= 2 and best["symbols"] == ["AAPL"]
    assert best["params"] in [{k: c[k] for k in best["params"]} for c in configs]
    board = storage.read_table("results/leaderboard.parquet").to_pandas()
    for symbol in ("AAPL", "ABT"):
        mlp = board[(board["model"] == "mlp") & (board["symbol"] == symbol)]
        assert sorted(mlp["split"]) == ["test", "test"] and mlp["error"].isna().all()
    assert "tune mlp: resuming the interrupted search" in log.read_text(errors="replace")


# ---- a search that cannot be resumed: fresh (no Ray cluster: Tune's own restore code
# reads the stored state; the fresh Tuner is replaced by one that records and stops) ----

class _Stop(Exception):
    pass


def _search(monkeypatch, storage: JobStorage, spec: JobSpec, *, real_init: bool = False):
    """Call search_model with a `tune.Tuner` whose constructor (a fresh search) records
    its call and stops (after writing the experiment's tuner.pkl if `real_init`); its
    can_restore and restore are Tune's. Returns the recorded calls."""
    from ray import tune

    from ray_jobs.tune_search import search_model

    calls = []

    class Fresh(tune.Tuner):
        def __init__(self, *args, **kwargs):
            calls.append(kwargs)
            if real_init:
                super().__init__(*args, **kwargs)
            raise _Stop

    monkeypatch.setattr(tune, "Tuner", Fresh)
    with pytest.raises(_Stop):
        search_model("mlp", spec, storage, {"AAPL": None}, gpu=0, slots=1)
    return calls


def _spec(seed: int = 7) -> JobSpec:
    return JobSpec.from_dict(tiny_spec("fallback", ["mlp"], seed=seed, tune={
        "num_samples": 2, "symbols": ["AAPL"], "grace_period": 1}))


@pytest.mark.parametrize("damage", ["other-spec", "no-fingerprint", "corrupt-tuner",
                                    "corrupt-state", "no-trials"])
def test_unrestorable_search_starts_afresh(monkeypatch, tmp_path: Path, caplog,
                                           damage: str) -> None:
    storage = JobStorage(tmp_path.as_uri(), "fallback")
    exp = tmp_path / "jobs" / "fallback" / "ray" / "search-mlp"
    # a first (interrupted) search: its fingerprint and a real tuner.pkl written
    assert len(_search(monkeypatch, storage, _spec(), real_init=True)) == 1
    assert (exp / "tuner.pkl").is_file() and storage.exists("tune/mlp/search.json")
    (exp / "stale-trial").mkdir()
    state = exp / "experiment_state-2024-01-01_00-00-00.json"
    state.write_text(json.dumps({"trial_data": []}))
    spec = _spec()
    if damage == "other-spec":
        spec = _spec(seed=8)  # another seed samples other configs: not the same search
    elif damage == "no-fingerprint":  # a search started before fingerprints existed
        storage.delete_dir("tune/mlp")
    elif damage == "corrupt-tuner":
        (exp / "tuner.pkl").write_bytes(b"not a pickle")
    elif damage == "corrupt-state":
        state.write_text('{"trial_data": [')
    # (no-trials: an experiment state without any trial)
    with caplog.at_level(logging.WARNING, logger="quantray.tune"):
        calls = _search(monkeypatch, storage, spec)
    assert len(calls) == 1, "no fresh search"
    warned = [r.getMessage() for r in caplog.records if r.name == "quantray.tune"]
    assert any("is not resumed" in m and "starts afresh" in m for m in warned), warned
    assert not exp.exists(), "the unrestorable experiment was kept"
    fingerprint = storage.read_json("tune/mlp/search.json")
    assert fingerprint["spec"]["seed"] == spec.seed  # the fresh search's own


def test_a_storage_outage_at_restore_keeps_the_search(monkeypatch, tmp_path: Path) -> None:
    """Tune's own reads are not retried: a network error while the search is restored is
    the storage's, not a broken state, and removing the experiment would throw away its
    finished trials (hours of work). It is kept and the error raised (the model's units
    fail with it; a resume retries)."""
    from ray import tune

    storage = JobStorage(tmp_path.as_uri(), "fallback")
    exp = tmp_path / "jobs" / "fallback" / "ray" / "search-mlp"
    assert len(_search(monkeypatch, storage, _spec(), real_init=True)) == 1
    (exp / "experiment_state-2024-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": []}))

    def down(*_a, **_k):
        raise OSError("When reading 'search-mlp/tuner.pkl': AWS Error NETWORK_CONNECTION "
                      "during GetObject operation: curlCode: 7, Couldn't connect to server")

    monkeypatch.setattr(tune.Tuner, "restore", down)
    with pytest.raises(OSError, match="NETWORK_CONNECTION"):
        _search(monkeypatch, storage, _spec())
    assert (exp / "tuner.pkl").is_file(), "the search was removed over a storage outage"


@pytest.mark.parametrize("saved", ["nothing", "tuner"])
def test_search_that_saved_no_trial_starts_afresh_quietly(monkeypatch, tmp_path: Path,
                                                         caplog, saved: str) -> None:
    """An experiment folder without tuner.pkl (killed while Tune created it), or without
    an experiment state (killed before Tune saved one) holds no trial to resume: removed,
    fresh search, no warning."""
    storage = JobStorage(tmp_path.as_uri(), "fallback")
    _search(monkeypatch, storage, _spec(), real_init=saved == "tuner")
    exp = tmp_path / "jobs" / "fallback" / "ray" / "search-mlp"
    exp.mkdir(parents=True, exist_ok=True)
    assert (exp / "tuner.pkl").exists() == (saved == "tuner")
    with caplog.at_level(logging.INFO, logger="quantray.tune"):
        assert len(_search(monkeypatch, storage, _spec())) == 1
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "quantray.tune"]
    assert any("had saved no trial" in m for _, m in said), said
    assert all(level < logging.WARNING for level, _ in said), said
    assert not exp.exists()


def _write_states(storage: JobStorage, trials: dict[str, str], *, created: int,
                  finished: list[str]) -> None:
    """An experiment state holding `trials` (id suffix -> status) and a search generator
    state (Tune's own, saved by its public methods) that created `created` trials, of
    which those in `finished` ended."""
    from ray import tune
    from ray.tune.experiment import Experiment
    from ray.tune.search import BasicVariantGenerator

    def _trial(config):
        pass

    gen = BasicVariantGenerator(random_state=7, max_concurrent=1)
    gen.add_configurations([Experiment("search-mlp", _trial, num_samples=3,
                                       config={"x": tune.uniform(0, 1)})])
    gen.max_concurrent = 0  # make them all
    ids = [gen.next_trial().trial_id for _ in range(created)]
    for i in finished:
        gen.on_trial_complete(ids[int(i)])
    prefix = ids[0].split("_")[0]
    with tempfile.TemporaryDirectory() as tmp:
        gen.save_to_dir(tmp, session_str="2024-01-01_00-00-00")
        storage.upload_dir(tmp, EXP)
    trial_data = [[json.dumps({"trial_id": f"{prefix}_{n}", "status": s}), "{}"]
                  for n, s in trials.items()]
    storage.write_json(f"{EXP}/experiment_state-2024-01-01_00-00-00.json",
                       {"trial_data": trial_data})


@pytest.mark.parametrize("trials, created, finished, ok", [
    ({"00000": "TERMINATED", "00001": "RUNNING"}, 2, ["0"], True),  # one moment
    ({"00000": "TERMINATED", "00001": "PENDING"}, 1, [], False),  # generator behind: a
    ({"00000": "TERMINATED"}, 1, [], False),  # trial again, or one waited for forever
    ({"00000": "TERMINATED"}, 2, ["0"], False),  # generator ahead: a trial lost
])  # fmt: skip
def test_search_state_must_be_of_one_moment(tmp_path: Path, trials, created, finished,
                                            ok) -> None:
    """A resumable search: its experiment and generator states load, and were saved at the
    same moment (a kill between their uploads leaves them apart)."""
    from ray_jobs.tune_search import check_search_state

    storage = JobStorage(tmp_path.as_uri(), "gen")
    with pytest.raises(FileNotFoundError, match="basic-variant-state"):
        check_search_state(storage, EXP)
    _write_states(storage, trials, created=created, finished=finished)
    if ok:
        check_search_state(storage, EXP)
    else:
        with pytest.raises(ValueError, match="saved at different moments"):
            check_search_state(storage, EXP)
    storage.write_bytes(f"{EXP}/basic-variant-state-2024-01-01_00-00-01.json", b"{")
    with pytest.raises(Exception):  # noqa: B017 - whatever the loader raises
        check_search_state(storage, EXP)


def test_best_epoch_of_a_restarted_trial_counts_its_last_attempt() -> None:
    """A trial restarted by a resumed search may keep its first attempt's rows before the
    new ones in its result file: the best epoch is counted in the last attempt."""
    import pandas as pd

    from ray_jobs.tune_search import last_attempt

    hist = pd.DataFrame({"epoch": [0, 1, 0, 1, 2], "epochs_run": [1, 2, 1, 2, 3],
                         "val_loss": [0.5, 0.1, 0.6, 0.4, 0.3]})
    last = last_attempt(hist)
    assert list(last["epochs_run"]) == [1, 2, 3]
    assert last_attempt(hist.iloc[:2]).equals(hist.iloc[:2])
