"""Live progress while a job runs: linear units count as running when their chunk task
reaches their symbol (not at submission) and end a symbol at a time; a deep run's next unit
is listed as starting while the run starts up; the deep prior counts down through that
start-up instead of freezing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ray_jobs.planner import Unit, plan
from ray_jobs.progress import ProgressTracker
from ray_jobs.spec import JobSpec
from ray_jobs.storage import JobStorage
from tests.ray_jobs._jobs import TINY_DATES


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _tracker() -> tuple[ProgressTracker, FakeClock]:
    clock = FakeClock()
    return ProgressTracker(job_id="j", clock=clock, wall=lambda: 0.0), clock


# ---- deep runs starting up -----------------------------------------------------------------
def test_a_starting_run_lists_its_next_unit_as_starting_outside_the_rates() -> None:
    """While a run's worker group starts up its next unit is listed as starting (the log
    said "0 running" and nothing else for minutes); it counts as running, and in the
    rate, only once its worker trains it."""
    tr, clock = _tracker()
    units = ["A__lstm__f0", "B__lstm__f0"]
    tr.plan_units(dict.fromkeys(units, "deep"), prior_s={"deep": 100.0})
    tr.set_phase("training")
    tr.kind_started("deep")
    tr.unit_starting("A__lstm__f0", run_name="run-0")
    tr.unit_starting("A__lstm__f0", run_name="run-0")  # the run restarts: listed once
    clock.t += 30
    d = tr.to_dict()
    assert d["units"]["running"] == 0 and d["running"] == []
    assert d["starting"] == [{"unit_id": "A__lstm__f0", "run_name": "run-0",
                              "starting_s": 30.0}]  # fmt: skip
    assert d["units"]["pending"] == 1  # B: not started, A: starting
    assert "0 running, 1 starting" in tr.summary_line()
    tr.unit_started("A__lstm__f0", max_epochs=5)  # its worker trains it: the run is named
    clock.t += 10
    d = tr.to_dict()
    assert d["starting"] == [] and d["units"]["running"] == 1
    assert d["running"][0]["run_name"] == "run-0" and d["running"][0]["running_s"] == 10.0
    assert "1 running |" in tr.summary_line()
    tr.unit_done("A__lstm__f0")
    # measured from its training start (10 s), not from the run's start (40 s):
    # 1 left x 10 s, weighing 1 / (1 + 1) against the prior's 50 s for 1 unit
    assert tr.eta_s() == pytest.approx(0.5 * 10.0 + 0.5 * 50.0)


def test_a_unit_that_ends_while_its_run_starts_is_in_no_rate() -> None:
    tr, clock = _tracker()
    tr.plan_units({"A__lstm__f0": "deep", "B__lstm__f0": "deep"}, prior_s={"deep": 100.0})
    tr.kind_started("deep")
    tr.unit_starting("A__lstm__f0", run_name="run-0")
    clock.t += 5
    tr.unit_failed("A__lstm__f0", "run run-0: worker died")  # never trained
    d = tr.to_dict()
    assert d["starting"] == [] and d["units"]["failed"] == 1
    assert tr.eta_s() == pytest.approx(50.0 - 5.0)  # no rate: the prior, less the start-up


def test_the_deep_prior_counts_down_through_the_runs_start_up() -> None:
    """The ETA froze at the prior (29 s) for the 3 minutes the runs took to start on a busy
    machine. It now counts down while the runs start up; a start-up longer than the whole
    prior leaves no ETA (not 0 s) until a unit ends."""
    tr, clock = _tracker()
    units = [f"S{i}__mlp__f0" for i in range(4)]
    tr.plan_units(dict.fromkeys(units, "deep"), prior_s={"deep": 30.0})
    tr.set_phase("preparing")
    assert tr.eta_s() == pytest.approx(30.0)
    clock.t += 20  # the deep runs are not launched yet: their prior holds
    assert tr.eta_s() == pytest.approx(30.0)
    tr.set_phase("training")
    tr.kind_started("deep")
    clock.t += 12
    assert tr.eta_s() == pytest.approx(18.0)
    clock.t += 18
    assert tr.eta_s() is None  # the start-up took the whole prior
    assert "ETA ?" in tr.summary_line()
    tr.unit_started(units[0])
    clock.t += 4
    tr.unit_done(units[0])  # measured now: 3 left x 4 s, blended 1 / (1 + 1) with the prior
    assert tr.eta_s() == pytest.approx(0.5 * 12.0 + 0.5 * 22.5)

    tr2, clock2 = _tracker()  # a start-up shorter than the prior: it stops counting down
    tr2.plan_units(dict.fromkeys(units, "deep"), prior_s={"deep": 30.0})
    tr2.kind_started("deep")
    clock2.t += 10
    tr2.unit_started(units[0])
    clock2.t += 15
    assert tr2.eta_s() == pytest.approx(20.0)  # the prior less its 10 s start-up


# ---- linear units: per symbol, from their chunk task ---------------------------------------
def _ids(symbol: str) -> list[str]:
    return [f"{symbol}__{m}__f0" for m in ("ols", "ridge", "lasso")]


def test_chunk_events_start_and_end_the_units_a_symbol_at_a_time() -> None:
    tr, clock = _tracker()
    tr.plan_units(dict.fromkeys(_ids("A") + _ids("B") + _ids("C"), "linear"))
    from ray_jobs.tasks import ChunkProgress

    progress = ChunkProgress(tr, relay=None)
    progress.apply({"type": "chunk", "start": _ids("A")})  # the task started: A first
    d = tr.to_dict()
    assert (d["units"]["running"], d["units"]["pending"]) == (3, 6)
    clock.t += 2
    progress.apply({"type": "chunk", "ended": dict.fromkeys(_ids("A")), "start": _ids("B")})
    d = tr.to_dict()
    assert (d["units"]["done"], d["units"]["running"]) == (3, 3)
    assert tr.eta_s() == pytest.approx(6 * 2.0 / 3)  # a rate after the first symbol
    ended = dict.fromkeys(_ids("B")) | {_ids("B")[2]: "lasso: NaN"}
    progress.apply({"type": "chunk", "ended": ended, "start": []})
    # the chunk's report: B again (counted once), and C, whose events never arrived
    for unit_id in _ids("B") + _ids("C"):
        progress.end(unit_id, None)
    progress.apply({"type": "chunk", "start": _ids("C")})  # late: C has ended
    d = tr.to_dict()
    assert d["units"] == {"total": 9, "done": 8, "failed": 1, "running": 0, "starting": 0,
                          "pending": 0, "skipped_on_resume": 0}  # fmt: skip
    assert d["failures"] == [{"unit_id": "B__lasso__f0", "error": "lasso: NaN"}]


def test_a_chunk_that_dies_after_its_units_were_counted_done_fails_them() -> None:
    """A task that died past its retries: the driver fails all its units (stored statuses
    say failed), including those the relay had already counted done."""
    tr, _ = _tracker()
    tr.plan_units(dict.fromkeys(_ids("A"), "linear"))
    from ray_jobs.tasks import ChunkProgress

    progress = ChunkProgress(tr, relay=None)
    progress.apply({"type": "chunk", "start": _ids("A")})
    progress.apply({"type": "chunk", "ended": dict.fromkeys(_ids("A")[:2]), "start": []})
    for unit_id in _ids("A"):
        progress.end(unit_id, "worker: died")
    d = tr.to_dict()["units"]
    assert (d["done"], d["failed"], d["running"]) == (0, 3, 0)


def _spec(symbols: list[str], models: list[str]) -> JobSpec:
    return JobSpec.from_dict({
        "name": "live", "dataset": {"uri": "sample:sp500", "symbols": symbols, **TINY_DATES},
        "target": {"kind": "direction", "horizons": [1, 5]}, "models": models,
        "preset": "fast",
    })  # fmt: skip


def test_a_chunk_task_relays_its_units_a_symbol_at_a_time(ray_cluster: str,
                                                         tmp_path: Path) -> None:
    import ray

    from ray_jobs.tasks import ProgressRelay, chunk_task

    spec = _spec(["AAPL", "ABT", "ACN"], ["ols", "ridge"])
    units = [Unit(s, m) for s in ("AAPL", "ABT", "ACN") for m in ("ols", "ridge")]
    relay = ProgressRelay.remote()
    refs = chunk_task.options(num_returns=4).remote(
        spec.to_dict(), ["AAPL", "ABT", "ACN"], [u.to_dict() for u in units], [],
        tmp_path.as_uri(), "live", relay)  # fmt: skip
    ray.get(refs[-1])
    events: list[dict[str, Any]] = []
    for _ in range(50):  # the pushes may land after the task's return
        events += ray.get(relay.drain.remote())
        if len(events) >= 4:
            break
    ids = {s: [f"{s}__ols__f0", f"{s}__ridge__f0"] for s in ("AAPL", "ABT", "ACN")}
    assert events == [
        {"type": "chunk", "start": ids["AAPL"]},
        {"type": "chunk", "ended": dict.fromkeys(ids["AAPL"]), "start": ids["ABT"]},
        {"type": "chunk", "ended": dict.fromkeys(ids["ABT"]), "start": ids["ACN"]},
        {"type": "chunk", "ended": dict.fromkeys(ids["ACN"]), "start": []},
    ]


class _Recording(ProgressTracker):
    """A tracker that records the most units running at once."""

    most = 0

    def unit_started(self, unit_id: str, **kw: Any) -> None:
        super().unit_started(unit_id, **kw)
        self.most = max(self.most, self.to_dict()["units"]["running"])


def test_linear_units_are_not_running_at_submission_and_end_per_symbol(
        ray_cluster: str, tmp_path: Path) -> None:
    """Submitting the chunk tasks marked every unit running (a 505-symbol job: "0/1515
    done, 1515 running" on 2 CPUs). Now none runs at submission, at most a symbol's units
    per chunk task run at once, and every unit ends done."""
    from ray_jobs.driver import _collect_chunks, _dispatch_chunks

    symbols = ["A", "AAL", "AAP", "AAPL", "ABBV", "ABC", "ABT", "ACN", "ADBE", "ADI", "ADM",
               "ADP", "ADS", "ADSK", "AEE", "AEP"]  # fmt: skip
    spec = _spec(symbols, ["ols", "ridge"])
    storage = JobStorage(tmp_path.as_uri(), "live")
    job_plan = plan(spec, symbols)
    tracker = _Recording(job_id="live")
    tracker.plan_units({u.unit_id: u.kind for u in job_plan.units})
    _, pending, progress = _dispatch_chunks(spec, job_plan, job_plan, symbols, storage,
                                            tracker)
    assert tracker.to_dict()["units"]["running"] == 0  # submitted, not running
    errors, _ = _collect_chunks(pending, spec, storage, progress, {})
    d = tracker.to_dict()["units"]
    assert errors == {} and (d["done"], d["failed"], d["running"]) == (32, 0, 0)
    # 8 chunks of 2 symbols on 2 CPUs: 2 units a task, 2 tasks at once (a push landing
    # late may overlap one more task's; a relay that starts late leaves the counting to
    # the reports, 1 at a time): far from the 32 that submission marked running
    assert 1 <= tracker.most <= 6, tracker.most
    assert len(progress.started) == 32  # every unit was seen starting, by event or report
