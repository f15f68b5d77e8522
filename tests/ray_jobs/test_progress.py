"""ProgressTracker counts, ETA math and summary line; ProgressWriter publishes and stops."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from ray_jobs.progress import (
    MAX_LISTED_FAILURES,
    ProgressTracker,
    ProgressWriter,
    format_duration,
)
from ray_jobs.storage import JobStorage


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(total: int = 10) -> tuple[ProgressTracker, FakeClock]:
    clock = FakeClock()
    return ProgressTracker(total, job_id="j1", clock=clock, wall=lambda: 0.0), clock


def test_eta_from_the_rate_of_finished_units() -> None:
    tr, clock = make(10)
    assert tr.eta_s() is None  # nothing started
    clock.t += 5  # planning time does not count in the rate
    tr.set_phase("training")
    tr.unit_started("A__lstm__f0")
    tr.unit_started("B__lstm__f0")
    clock.t += 10
    assert tr.eta_s() is None  # nothing finished yet
    tr.unit_done("A__lstm__f0")
    tr.unit_failed("B__lstm__f0", "boom")
    # 2 units finished in 10 s since the first start -> 0.2 units/s; 8 left -> 40 s.
    assert tr.eta_s() == pytest.approx(40.0)
    clock.t += 10
    assert tr.eta_s() == pytest.approx(80.0)  # no progress for 10 more s: the rate halves

    d = tr.to_dict()
    assert d["units"] == {"total": 10, "done": 1, "failed": 1, "running": 0, "starting": 0,
                          "pending": 8, "skipped_on_resume": 0}  # fmt: skip
    tr.unit_starting("C__lstm__f0", run_name="run-0")  # starting up: not running, not pending
    tr.unit_started("D__lstm__f0")
    units = tr.to_dict()["units"]
    assert (units["running"], units["starting"], units["pending"]) == (1, 1, 6)
    assert sum(units[k] for k in ("done", "failed", "running", "starting", "pending")) == 10
    assert d["elapsed_s"] == 25.0 and d["eta_s"] == 80.0
    assert d["failures"] == [{"unit_id": "B__lstm__f0", "error": "boom"}]
    assert d["started_at"] == "1970-01-01T00:00:00+00:00"


def test_eta_is_at_least_what_a_long_running_unit_still_needs() -> None:
    """One 60-epoch unit whose kind's estimate says 13 s: the ETA follows the unit's own
    pace (seconds per epoch x epochs left, less the time since its latest epoch) instead
    of showing 13 s for its whole run."""
    tr, clock = make()
    tr.plan_units({"A__lstm__f0": "deep"}, prior_s={"deep": 13.0})
    tr.set_phase("training")
    tr.unit_started("A__lstm__f0", max_epochs=60)
    assert tr.eta_s() == pytest.approx(13.0)  # no epoch yet: the estimate
    clock.t += 10
    tr.unit_epoch("A__lstm__f0", 9, "val_loss", 1.0)  # 10 of 60 epochs in 10 s
    assert tr.eta_s() == pytest.approx(50.0)
    clock.t += 10  # no epoch event for 10 s: that time is gone from what is left
    assert tr.eta_s() == pytest.approx(40.0)
    clock.t += 30
    tr.unit_epoch("A__lstm__f0", 49, "val_loss", 0.9)  # 50 of 60 in 50 s
    assert tr.eta_s() == pytest.approx(13.0)  # 10 s left at its pace: the estimate is more
    tr.unit_epoch("A__lstm__f0", 59, "val_loss", 0.9)
    assert tr.eta_s() == pytest.approx(13.0)  # its last epoch: nothing to project


def test_resumed_units_count_as_done_but_not_in_the_rate() -> None:
    tr, clock = make(10)
    tr.skip_done(6)
    tr.unit_started("C__cnn__f0")
    clock.t += 30
    tr.unit_done("C__cnn__f0")
    # 1 unit in 30 s, 3 left -> 90 s (the 6 resumed units took no time now).
    assert tr.eta_s() == pytest.approx(90.0)
    assert tr.to_dict()["units"]["done"] == 7
    for u in ("D", "E", "F"):
        tr.unit_started(u)
        tr.unit_done(u)
    assert tr.eta_s() == 0.0


def test_a_unit_trained_again_is_counted_once() -> None:
    """A run fitted again after a storage outage trains units counted done already: the
    job showed 17 of 15 units done. A unit that failed and then ends done (or the other
    way) moves between the counts, listed under its latest outcome only."""
    tr, clock = make(3)
    for _ in range(2):
        tr.unit_started("A")
        clock.t += 10
        tr.unit_done("A")
    units = tr.to_dict()["units"]
    assert (units["done"], units["failed"], units["running"]) == (1, 0, 0)
    tr.unit_started("B")
    tr.unit_failed("B", "NaN loss")
    tr.unit_started("B")
    tr.unit_failed("B", "NaN loss again")
    d = tr.to_dict()
    assert (d["units"]["done"], d["units"]["failed"]) == (1, 1)
    assert d["failures"] == [{"unit_id": "B", "error": "NaN loss again"}]
    tr.unit_started("B")
    tr.unit_done("B")
    d = tr.to_dict()
    assert (d["units"]["done"], d["units"]["failed"], d["failures"]) == (2, 0, [])
    tr.unit_failed("A", "its status could not be stored")  # done, then failed after all
    d = tr.to_dict()
    assert (d["units"]["done"], d["units"]["failed"], d["units"]["pending"]) == (1, 1, 1)


def test_eta_sums_each_kind_of_unit_at_its_own_rate() -> None:
    """Linear units end in milliseconds, deep ones take seconds: one rate over both would
    promise the deep phase in no time. Each kind has its own rate; a kind none of whose
    units has ended yet uses its prior, and without one there is no ETA."""
    tr, clock = make()
    kinds = {f"S{i}__ols__f0": "linear" for i in range(6)}
    kinds.update({f"S{i}__lstm__f0": "deep" for i in range(6)})
    tr.plan_units(kinds, already_done={"S0__ols__f0", "S0__lstm__f0"}, prior_s={"deep": 50.0})
    assert tr.to_dict()["units"]["skipped_on_resume"] == 2 and tr.to_dict()["attempt"] == 0
    for i in range(1, 6):
        tr.unit_started(f"S{i}__ols__f0")
    clock.t += 1
    assert tr.eta_s() is None  # no linear unit has ended and the linear units have no prior
    for i in range(1, 5):
        tr.unit_done(f"S{i}__ols__f0")
    # linear: 1 left at 4 per s -> 0.25 s; deep: its prior for 5 units, 5 left -> 50 s
    assert tr.eta_s() == pytest.approx(50.25)
    tr.unit_failed("S5__lstm__f0", "data: too short")  # never ran: in no rate, one less left
    assert tr.eta_s() == pytest.approx(0.25 + 40.0)
    tr.unit_done("S5__ols__f0")
    tr.set_phase("tuning")
    assert tr.eta_s() is None  # a search: its trials are not units, no rate applies
    tr.set_phase("training")
    tr.kind_started("deep")  # the runs are launched
    clock.t += 30  # the first run's start-up
    tr.unit_started("S1__lstm__f0")
    clock.t += 10
    tr.unit_done("S1__lstm__f0")
    # deep: one unit trained 10 s, 40 s into the deep phase (30 s were the run's start-up):
    # 3 left x 10 s, as the prior says (3 x 10 s)
    assert tr.eta_s() == pytest.approx(30.0)
    tr.unit_started("S2__lstm__f0")
    clock.t += 4
    tr.unit_done("S2__lstm__f0")
    # 2 units of 7 s on average, one at a time -> 2 left x 7 s; the prior says 20 s for 2;
    # the measurement weighs 2 / (2 + max(1, 0.1 x 5))
    assert tr.eta_s() == pytest.approx(2 / 3 * 14.0 + 1 / 3 * 20.0)
    d = tr.to_dict()
    assert d["units"]["done"] == 9 and d["units"]["failed"] == 1 and d["units"]["pending"] == 2


def _deep_job(n: int, prior_s: float, start_up_s: float, first: int):
    """A tracker of `n` deep units planned at `prior_s`, launched at 0; the first `first`
    start training after `start_up_s`. Returns (tracker, clock, unit ids)."""
    tr, clock = make()
    units = [f"S{i}__lstm__f0" for i in range(n)]
    tr.plan_units(dict.fromkeys(units, "deep"), prior_s={"deep": prior_s})
    tr.kind_started("deep")
    clock.t = start_up_s
    for u in units[:first]:
        tr.unit_started(u)
    return tr, clock, units


def test_eta_does_not_jump_when_the_first_deep_units_end() -> None:
    """100 deep units on 2 slots, planned at 300 s. The runs start 17 s in, their first
    units end at 20 s: counted from the launch that rate says 980 s for the other 98; the
    units' own time (3 s each, 2 at once) says 147 s, and the ETA moves from the plan
    towards it, never above the plan."""
    tr, clock, units = _deep_job(100, 300.0, start_up_s=17.0, first=2)
    clock.t = 20.0
    etas = []
    for i in range(0, 60, 2):  # two runs, a unit each every 3 s
        for u in units[i : i + 2]:
            tr.unit_done(u)
        etas.append(tr.eta_s())
        for u in units[i + 2 : i + 4]:
            tr.unit_started(u)
        clock.t += 3.0
    assert etas[0] == pytest.approx((2 * 147 + 10 * 294) / 12)  # ~270 s, not 980
    assert all(a > b for a, b in zip(etas, etas[1:], strict=False))  # it only falls
    assert etas[-1] == pytest.approx((60 * 60 + 10 * 120) / 70)  # 40 left: 60 s measured


def test_a_first_wave_ending_together_is_not_a_rate() -> None:
    """8 deep units on 4 slots: after a 10 s start-up, 4 units train 10 s and end within
    0.15 s of each other. Counted from the first unit's end, 3 units in 0.15 s made the
    ETA collapse to 4 s with 10 s left; by the units' own time it says ~10 s."""
    tr, clock, units = _deep_job(8, 30.0, start_up_s=10.0, first=4)
    clock.t = 20.0
    for u in units[:4]:
        clock.t += 0.05
        tr.unit_done(u)
    for u in units[4:]:
        tr.unit_started(u)
    measured = 4 * 10.125 / 4  # 4 left x the mean 10.125 s, 4 at once
    assert tr.eta_s() == pytest.approx(0.8 * measured + 0.2 * 15.0)  # ~11 s


def test_progress_carries_the_attempt() -> None:
    tr = ProgressTracker(3, job_id="j1", attempt=2)
    assert tr.to_dict()["attempt"] == 2


def test_running_units_carry_epoch_and_metric_and_summary_line() -> None:
    tr, clock = make(4)
    tr.set_phase("training")
    tr.unit_started("AAPL__lstm__f0", run_name="run__lstm__f0__g000-abc", max_epochs=20)
    clock.t += 3
    tr.unit_started("MSFT__lstm__f0")
    tr.unit_epoch("AAPL__lstm__f0", 3, "val_loss", 0.81234)
    clock.t += 62
    tr.unit_done("MSFT__lstm__f0")
    (running,) = tr.to_dict()["running"]
    assert running == {"unit_id": "AAPL__lstm__f0", "run_name": "run__lstm__f0__g000-abc",
                       "epoch": 3, "max_epochs": 20, "metric": "val_loss", "value": 0.81234,
                       "running_s": 65.0}  # fmt: skip
    # 1 done in 65 s, 3 left -> 195 s.
    assert tr.summary_line() == (
        "[training] 1/4 done, 0 failed, 1 running | elapsed 1m05s | ETA 3m15s"
        " | AAPL__lstm__f0 epoch 3 val_loss=0.8123"
    )
    with pytest.raises(KeyError, match="unit_started first"):
        tr.unit_epoch("NOPE", 1, "val_loss", 1.0)
    with pytest.raises(ValueError, match="phase"):
        tr.set_phase("trainning")


def test_format_duration() -> None:
    assert format_duration(None) == "?"
    assert format_duration(9.4) == "9s"
    assert format_duration(125) == "2m05s"
    assert format_duration(3725.2) == "1h02m05s"


def test_tracker_is_thread_safe() -> None:
    tr, _ = make(4000)

    def work(k: int) -> None:
        for i in range(1000):
            uid = f"S{k}_{i}"
            tr.unit_started(uid)
            tr.unit_epoch(uid, 0, "val_loss", 1.0)
            tr.unit_done(uid)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    d = tr.to_dict()
    assert d["units"]["done"] == 4000 and d["running"] == []


def test_writer_publishes_periodically_and_on_stop(tmp_path: Path) -> None:
    store = JobStorage(str(tmp_path), "j1")
    tr = ProgressTracker(3, job_id="j1")
    path = tmp_path / "jobs" / "j1" / "progress.json"
    writer = ProgressWriter(tr, store, interval_s=0.02).start()
    tr.set_phase("training")
    deadline = threading.Event()
    for _ in range(200):  # wait for at least two periodic writes
        if writer.writes >= 2:
            break
        deadline.wait(0.01)
    assert writer.writes >= 2
    assert json.loads(path.read_text())["phase"] == "training"
    tr.unit_started("a")
    tr.unit_done("a")
    tr.set_phase("succeeded")
    writer.stop()
    final = json.loads(path.read_text())
    assert final["phase"] == "succeeded" and final["units"]["done"] == 1
    assert not writer._thread.is_alive()


def test_writer_survives_a_failed_periodic_write_and_raises_on_the_final_one() -> None:
    class Sink:
        def __init__(self) -> None:
            self.fail, self.got = True, []

        def write_progress(self, progress: dict) -> None:
            if self.fail:
                raise OSError("storage down")
            self.got.append(progress)

    sink = Sink()
    writer = ProgressWriter(ProgressTracker(1), sink, interval_s=0.01).start()
    for _ in range(200):
        if writer.last_error is not None:
            break
        threading.Event().wait(0.01)
    assert isinstance(writer.last_error, OSError)
    assert writer._thread.is_alive()  # still publishing
    with pytest.raises(OSError, match="storage down"):
        writer.stop()
    sink.fail = False
    with ProgressWriter(ProgressTracker(1), sink, interval_s=10):
        pass
    assert len(sink.got) == 1  # the final write of the context manager


def test_progress_lists_at_most_50_running_units_but_counts_them_all() -> None:
    """A 505-symbol linear job puts all its 1,515 units in flight at once (chunk tasks):
    progress.json listed every one (181 KB, rewritten every 2 s). It lists 50 now, the
    training ones (with an epoch) first, then the oldest, and counts all of them."""
    tr, clock = make(1520)
    tr.set_phase("preparing")
    for i in range(1515):
        tr.unit_started(f"S{i:04d}__ols__f0")
    clock.t += 30
    tr.unit_started("ZZZ__lstm__f0", max_epochs=10)
    tr.unit_epoch("ZZZ__lstm__f0", 2, "val_loss", 0.9)
    d = tr.to_dict()
    assert d["units"]["running"] == 1516 and d["units"]["pending"] == 4
    listed = [r["unit_id"] for r in d["running"]]
    assert len(listed) == 50 and listed == sorted(listed)
    assert "ZZZ__lstm__f0" in listed  # the one training is listed, though the newest
    assert set(listed) - {"ZZZ__lstm__f0"} == {f"S{i:04d}__ols__f0" for i in range(49)}
    assert len(json.dumps(d)) < 12_000
    assert tr.summary_line().startswith("[preparing] 0/1520 done, 0 failed, 1516 running")
    assert tr.summary_line().endswith("ZZZ__lstm__f0 epoch 2 val_loss=0.9")


def test_progress_lists_the_latest_failures_only_but_counts_them_all() -> None:
    """progress.json is rewritten every 2 s and read on every status poll: with thousands
    of failed units its `failures` list keeps only the latest MAX_LISTED_FAILURES (both
    ways a unit can fail), while the failed count holds every one."""
    n = MAX_LISTED_FAILURES + 5
    tr, _ = make(n + 2)
    tr.set_phase("training")
    for i in range(n):
        tr.unit_started(f"S{i:03d}__lstm__f0")
        tr.unit_failed(f"S{i:03d}__lstm__f0", f"boom {i}")
    d = tr.to_dict()
    assert d["units"]["failed"] == n
    assert [f["unit_id"] for f in d["failures"]] == [f"S{i:03d}__lstm__f0"
                                                   for i in range(5, n)]  # fmt: skip
    tr.unit_started("Z__ols__f0")
    tr.unit_done("Z__ols__f0")
    tr.done_unit_failed("Z__ols__f0", "its chunk task died")
    d = tr.to_dict()
    assert d["units"]["failed"] == n + 1 and len(d["failures"]) == MAX_LISTED_FAILURES
    assert d["failures"][-1] == {"unit_id": "Z__ols__f0", "error": "its chunk task died"}


class _CountingDict(dict):
    gets = 0

    def get(self, *args):  # type: ignore[override]
        _CountingDict.gets += 1
        return super().get(*args)


def test_starting_a_unit_costs_the_same_with_thousands_running() -> None:
    """unit_started summed over every running unit to find the most running at once: the
    12,120 units of a 505-symbol, 8-fold linear job took 12 s to start (in the driver,
    holding the tracker's lock). It keeps a count per kind now; the counts stay right when
    a unit is started twice (a restarted run) or the plan comes after units started."""
    tr, clock = make(0)
    n = 3000
    tr.plan_units({f"S{i}__ols__f0": "linear" for i in range(n)} | {"D__lstm__f0": "deep"},
                  prior_s={"deep": 100.0})  # fmt: skip
    tr._kind_of = _CountingDict(tr._kind_of)
    for i in range(n):
        tr.unit_started(f"S{i}__ols__f0")
    assert _CountingDict.gets <= 4 * n  # was n * (n + 1) / 2 + n: 4.5 million
    tr.unit_started("D__lstm__f0")
    tr.unit_started("D__lstm__f0")  # restarted: still one running
    clock.t += 10
    tr.unit_done("D__lstm__f0")
    assert tr._kinds["deep"].most_running == 1 and tr._kinds["deep"].running == 0
    assert tr._kinds["linear"].most_running == n and tr.to_dict()["units"]["running"] == n
    late, _ = make(0)
    late.unit_started("A__lstm__f0")
    late.unit_started("B__lstm__f0")
    late.plan_units({"A__lstm__f0": "deep", "B__lstm__f0": "deep", "C__lstm__f0": "deep"},
                    prior_s={"deep": 30.0})  # fmt: skip
    late.unit_done("A__lstm__f0")
    assert late._kinds["deep"].running == 1 and late._kinds["deep"].most_running == 2


def test_eta_counts_the_gaps_between_waves_of_deep_runs() -> None:
    """12 deep units, 2 run slots, 4 units a wave: each wave's runs start up for 20 s
    before their units train (3 s each, 2 at once). Measured by the units' own time alone,
    the ETA froze through each start-up gap and left the next ones out (a 3-wave job said
    2m18s with 5m53s to go). The gap now counts: the ETA grows while nothing runs, and
    after two waves it holds one more gap per 8 units ended."""
    tr, clock, units = _deep_job(12, 60.0, start_up_s=20.0, first=2)

    def wave(first: int) -> None:  # units first..first+3: 2 at a time, 3 s each
        for i in (first, first + 2):
            if i != 0:
                for u in units[i : i + 2]:
                    tr.unit_started(u)
            clock.t += 3.0
            for u in units[i : i + 2]:
                tr.unit_done(u)

    wave(0)  # ends at 26 s
    at_end_of_wave = tr.eta_s()
    clock.t += 10.0  # the next runs start up: nothing runs
    in_the_gap = tr.eta_s()
    assert in_the_gap > at_end_of_wave  # not frozen while nothing happens
    # 8 left x (3 s / 2 at once + 10 s idle / 4 ended), blended 4 / (4 + 1.2) with the plan
    w = 4 / 5.2
    assert in_the_gap == pytest.approx(w * 8 * (1.5 + 2.5) + (1 - w) * 40.0)
    clock.t += 10.0
    wave(4)
    # 4 left x (1.5 s + 20 s idle / 8 ended); the units' own time alone said 4 x 1.5 = 6 s
    w = 8 / 9.2
    assert tr.eta_s() == pytest.approx(w * 4 * (1.5 + 2.5) + (1 - w) * 20.0)
    clock.t += 20.0
    wave(8)
    assert tr.eta_s() == 0.0
