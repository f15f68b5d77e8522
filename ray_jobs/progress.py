"""Job progress: a thread-safe tracker, and a writer that publishes it as `progress.json`.

The driver feeds the tracker (phase changes, units starting, epochs, units finishing); a
`ProgressWriter` thread rewrites `progress.json` atomically through `JobStorage` every few
seconds and logs a one-line summary, so the service can answer a status poll from storage
alone.

ETA, per kind of unit (`plan_units`: linear units fit in chunk tasks in milliseconds, deep
units train for seconds to minutes, and the job runs the kinds one after the other), summed
over the kinds with units left: units left / rate, with rate = units of that kind that ran
and ended in this session / time since the first of them started (or since the kind was
started, `kind_started`: the deep runs' start-up counts). A kind none of whose units has
ended yet uses its prior (seconds for all its units of this session, e.g. the planner's
estimate for the deep runs) scaled to the units left, and without one there is no ETA yet.
A kind with a prior (the deep units) measures its units' own time instead: units left x
their mean start-to-end time / the most of them seen running at once (a deep unit starts
when its run's worker begins training it, after the run's start-up), blended with the
prior, the measurement weighing n / (n + PRIOR_SHARE x the kind's units) after n units
ended. The measurement adds the kind's idle time (none of its units running, e.g. while
the next wave of runs starts up: 90 s per wave under load) per unit ended: without it a
job of 3 waves showed its ETA frozen through each gap and 2-3x too short (2m18s with 5m53s
to go), since the units' own time leaves the next runs' start-up out.
Counted from the launch, the first deep unit's rate held its run's start-up
(10-15 s), which doubled the demo's ETA (2 min -> 4 min) when that unit ended; counted
from the first unit's end, a first wave of units ending together made it collapse.
Until one of its units ends, a kind's prior counts down through its start-up (from
`kind_started` to the first of its units training): a prior frozen through minutes of
deep runs starting up (29 s, for 3 minutes on a busy machine) said nothing; a start-up
longer than the whole prior leaves no ETA (`?`) until a unit ends, not 0 s.
A deep run's next unit is listed as starting from its run's start (`unit_starting`:
the `starting` list) while the run's worker group starts up, then
running once its worker trains it (`unit_started`): "0 running" and nothing else for the
minutes every run slot spent starting up on a busy machine hid the runs. Only training
units count as running and in the rates.
Units found finished on resume count as done but not in the rate (they took no time now),
and so do units failed without running (their data failed). No ETA during a Tune search
(its trials are not units). Every document carries the job's `attempt`, so a reader can
tell a resumed job's progress from its previous attempt's.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)

PHASES = ("queued", "planning", "preparing", "training", "tuning", "reporting",
          "succeeded", "failed", "stopped")  # fmt: skip
MAX_LISTED_FAILURES = 50  # progress.json lists the latest failures; results keep them all
# ... and at most this many running units (those training, then the oldest; `units.running`
# counts them all): a 505-symbol job's 1,515 linear units, all in flight in their chunk
# tasks, made a 181 KB progress.json rewritten every 2 s and read by every status poll.
MAX_LISTED_RUNNING = 50
# A kind's prior weighs as much as this share of its units in the measured rate's blend.
PRIOR_SHARE = 0.1


@dataclass
class _Running:
    started: float
    run_name: str | None
    epoch: int | None = None
    max_epochs: int | None = None
    metric: str | None = None
    value: float | None = None
    epoch_at: float | None = None  # when its latest epoch ended
    training: bool = True  # False: its run is starting up (`unit_starting`), not in rates


@dataclass
class _Kind:
    """Counts of one kind of unit, for its rate."""

    total: int = 0
    skipped: int = 0
    ended: int = 0  # done or failed, in this session
    ran: int = 0  # of those, how many had started (the rate's numerator)
    first_start: float | None = None
    first_training: float | None = None  # when the first of them started training
    busy_s: float = 0.0  # summed start-to-end seconds of the units that ran
    running: int = 0  # running now (a count: summing over the running units per start
    # took 12 s for the 12,120 units of a 505-symbol, 8-fold linear job)
    most_running: int = 0  # the most of them seen running at once
    idle_s: float = 0.0  # seconds none of them ran, between two of them (waves of runs)
    idle_since: float | None = None  # none has run since (after one ended)
    prior_s: float | None = None  # estimated seconds for all of this session's units

    def left(self) -> int:
        return self.total - self.skipped - self.ended


UNTYPED = "unit"  # the kind of a unit `plan_units` did not name


def format_duration(seconds: float | None) -> str:
    """`3725.2` -> `1h02m05s`; None -> `?`."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class ProgressTracker:
    """Counts and running units of one job. Every method is safe to call from any thread.

    `clock` measures durations (monotonic); `wall` stamps ISO times. Both injectable.
    """

    def __init__(
        self,
        total: int = 0,
        *,
        job_id: str = "",
        attempt: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._clock, self._wall = clock, wall
        self.job_id, self.attempt = job_id, attempt
        self._t0, self._started_at = clock(), wall()
        self._kinds: dict[str, _Kind] = {UNTYPED: _Kind(total=total)}
        self._kind_of: dict[str, str] = {}
        self._phase, self._message = "planning", ""
        self._done = 0
        self._failed: list[dict[str, str]] = []
        self._n_failed = 0
        self._running: dict[str, _Running] = {}
        self._outcomes: dict[str, str] = {}  # unit id -> "done" | "failed", ended in this run

    # ---- updates ------------------------------------------------------------------------
    def set_phase(self, phase: str, message: str = "") -> None:
        if phase not in PHASES:
            raise ValueError(f"phase {phase!r}: use one of {', '.join(PHASES)}")
        with self._lock:
            self._phase, self._message = phase, message

    def set_total(self, total: int) -> None:
        if total < 0:
            raise ValueError(f"total={total}: use 0 or more units")
        with self._lock:
            self._kinds = {UNTYPED: _Kind(total=total)}
            self._kind_of = {}
            self._recount_running()

    def skip_done(self, n: int) -> None:
        """`n` units were already finished by an earlier attempt (resume)."""
        with self._lock:
            self._kinds.setdefault(UNTYPED, _Kind()).skipped += n

    def plan_units(
        self,
        kinds: Mapping[str, str],
        already_done: Collection[str] = (),
        prior_s: Mapping[str, float] | None = None,
    ) -> None:
        """The job's units (unit id -> kind), those an earlier attempt finished, and per
        kind an optional estimate of the seconds its units of this session will take.
        Replaces `set_total` + `skip_done`, and gives each kind its own rate."""
        with self._lock:
            self._kind_of = dict(kinds)
            self._kinds = {}
            for unit_id, kind in kinds.items():
                k = self._kinds.setdefault(kind, _Kind())
                k.total += 1
                k.skipped += unit_id in already_done
            for kind, seconds in (prior_s or {}).items():
                if kind in self._kinds and seconds is not None and seconds >= 0:
                    self._kinds[kind].prior_s = float(seconds)
            self._recount_running()

    def _recount_running(self) -> None:
        """The kinds' running counts after they were replaced (units may run already)."""
        for unit_id, r in self._running.items():
            if not r.training:
                continue
            k = self._kind(unit_id)
            k.running += 1
            k.most_running = max(k.most_running, k.running)

    def kind_started(self, kind: str) -> None:
        """The units of `kind` start now (e.g. the deep runs are launched). A kind without a
        prior measures its rate from here, start-up included; one with a prior (the deep
        units) measures its units' own time (see the module docstring)."""
        with self._lock:
            k = self._kinds.setdefault(kind, _Kind())
            if k.first_start is None:
                k.first_start = self._clock()

    def _total(self) -> int:
        return sum(k.total for k in self._kinds.values())

    def _skipped(self) -> int:
        return sum(k.skipped for k in self._kinds.values())

    def _kind(self, unit_id: str) -> _Kind:
        return self._kinds.setdefault(self._kind_of.get(unit_id, UNTYPED), _Kind())

    def unit_starting(self, unit_id: str, *, run_name: str | None = None) -> None:
        """`unit_id` is next in a run that is starting up (its workers are not training it
        yet): listed in `starting`, not running and in no rate until `unit_started`. A
        no-op for a unit already listed (e.g. a run that restarts)."""
        with self._lock:
            if unit_id not in self._running:
                self._running[unit_id] = _Running(self._clock(), run_name, training=False)

    def unit_started(
        self, unit_id: str, *, run_name: str | None = None, max_epochs: int | None = None
    ) -> None:
        with self._lock:
            now = self._clock()
            k = self._kind(unit_id)
            if k.first_start is None:
                k.first_start = now
            if k.first_training is None:
                k.first_training = now
            before = self._running.get(unit_id)
            if before is None or not before.training:  # counted once, e.g. a run restarted
                if k.running == 0 and k.idle_since is not None:  # a gap between waves ends
                    k.idle_s += now - k.idle_since
                    k.idle_since = None
                k.running += 1
            if run_name is None and before is not None:
                run_name = before.run_name
            self._running[unit_id] = _Running(now, run_name, max_epochs=max_epochs)
            k.most_running = max(k.most_running, k.running)

    def unit_epoch(self, unit_id: str, epoch: int, metric: str, value: float) -> None:
        """A running unit finished `epoch`; `metric`=`value` is its latest validation score."""
        with self._lock:
            r = self._running.get(unit_id)
            if r is None:
                raise KeyError(f"unit_epoch({unit_id!r}): call unit_started first")
            r.epoch, r.metric, r.value = epoch, metric, float(value)
            r.epoch_at = self._clock()

    def _ended(self, unit_id: str) -> None:
        k = self._kind(unit_id)
        k.ended += unit_id not in self._outcomes  # a unit trained again ends once
        running = self._running.pop(unit_id, None)
        if running is not None and running.training:  # one only starting: in no rate
            now = self._clock()
            k.running -= 1
            k.ran += 1
            k.busy_s += max(0.0, now - running.started)
            if k.running == 0:  # none of its kind runs now: idle until the next one starts
                k.idle_since = now

    def unit_done(self, unit_id: str) -> None:
        """`unit_id` ended done. A unit that ends again (a run fitted again after a storage
        outage trains its units anew) is counted once: 17 of 15 units were done."""
        with self._lock:
            before = self._outcomes.get(unit_id)
            self._ended(unit_id)
            if before == "done":
                return
            if before == "failed":  # failed, then done when trained again
                self._n_failed -= 1
                self._failed = [f for f in self._failed if f["unit_id"] != unit_id]
            self._done += 1
            self._outcomes[unit_id] = "done"

    def unit_failed(self, unit_id: str, error: str) -> None:
        """`unit_id` failed with `error`; a unit that never started (its data failed)
        counts as failed but not in its kind's rate. A unit counted done before fails
        as `done_unit_failed` says; one that failed before is counted once, its latest
        error listed."""
        with self._lock:
            before = self._outcomes.get(unit_id)
            self._ended(unit_id)
            if before == "done":
                self._done -= 1
            if before != "failed":
                self._n_failed += 1
            self._outcomes[unit_id] = "failed"
            self._failed = [f for f in self._failed if f["unit_id"] != unit_id]
            self._failed.append({"unit_id": unit_id, "error": error})
            del self._failed[:-MAX_LISTED_FAILURES]

    def done_unit_failed(self, unit_id: str, error: str) -> None:
        """`unit_id`, counted done, is failed after all (its chunk task died past its
        retries, and its stored status says failed): one done less, one failed more."""
        self.unit_failed(unit_id, error)

    def outcome(self, unit_id: str) -> str | None:
        """"done" or "failed" for a unit that ended in this run, else None."""
        with self._lock:
            return self._outcomes.get(unit_id)

    # ---- views --------------------------------------------------------------------------
    def eta_s(self) -> float | None:
        with self._lock:
            return self._eta(self._clock())

    def _eta(self, now: float) -> float | None:
        if self._phase in ("stopped", "tuning"):  # nothing more will run / a search's
            return None  # trials are not units: no rate says how long it takes
        if self._total() - self._skipped() - self._done - self._n_failed <= 0:
            return 0.0
        eta = 0.0
        for k in self._kinds.values():
            left = k.left()
            if left <= 0:
                continue
            session = k.total - k.skipped
            prior = k.prior_s * left / session if k.prior_s is not None and session else None
            if prior is not None:  # the prior covers the runs' start-up; units their training
                if k.ran:
                    idle = k.idle_s + (now - k.idle_since if k.idle_since is not None else 0)
                    measured = left * ((k.busy_s / k.ran) / max(1, k.most_running)
                                       + idle / k.ran)
                    weight = k.ran / (k.ran + max(1.0, PRIOR_SHARE * session))
                    eta += weight * measured + (1 - weight) * prior
                elif k.first_start is not None:  # less its start-up so far (runs starting)
                    up_to = k.first_training if k.first_training is not None else now
                    left_s = prior - max(0.0, up_to - k.first_start)
                    if left_s <= 0:
                        return None  # the start-up alone took the prior: nothing measured
                    eta += left_s
                else:
                    eta += prior
            elif k.ran and k.first_start is not None and now > k.first_start:
                eta += left * (now - k.first_start) / k.ran
            else:
                return None
        return max(eta, self._longest_running_left(now))

    def _longest_running_left(self, now: float) -> float:
        """The most seconds a running unit still needs at its own pace (seconds per epoch
        up to its latest epoch x epochs left, less the time since that epoch; early
        stopping can only shorten it): one long unit whose kind's estimate or rate says
        less (no unit of it has ended yet) no longer shows one ETA for its whole run."""
        left = 0.0
        for r in self._running.values():
            if (r.epoch is None or r.epoch_at is None or not r.max_epochs
                    or r.epoch + 1 >= r.max_epochs):  # fmt: skip
                continue
            done = r.epoch + 1
            pace = (r.epoch_at - r.started) / done
            left = max(left, pace * (r.max_epochs - done) - (now - r.epoch_at))
        return left

    def to_dict(self) -> dict[str, Any]:
        """The content of `progress.json`."""
        with self._lock:
            now = self._clock()
            training = [(u, r) for u, r in self._running.items() if r.training]
            listed = sorted(training,  # those with an epoch first, then the oldest
                            key=lambda ur: (ur[1].epoch is None, ur[1].started, ur[0]))
            running = [
                {"unit_id": u, "run_name": r.run_name, "epoch": r.epoch,
                 "max_epochs": r.max_epochs, "metric": r.metric, "value": r.value,
                 "running_s": round(now - r.started, 1)}
                for u, r in sorted(listed[:MAX_LISTED_RUNNING])
            ]  # fmt: skip
            starting = [  # one per run starting up: at most the run slots
                {"unit_id": u, "run_name": r.run_name, "starting_s": round(now - r.started, 1)}
                for u, r in sorted((u, r) for u, r in self._running.items() if not r.training)
            ][:MAX_LISTED_RUNNING]
            n_running = len(training)
            n_starting = len(self._running) - n_running
            total, skipped = self._total(), self._skipped()
            done = self._done + skipped
            eta = self._eta(now)
            return {
                "job_id": self.job_id,
                "attempt": self.attempt,
                "phase": self._phase,
                "message": self._message,
                "units": {
                    "total": total,
                    "done": done,
                    "failed": self._n_failed,
                    "running": n_running,
                    "starting": n_starting,  # deep units whose run is starting up
                    "pending": max(0, total - done - self._n_failed - n_running - n_starting),
                    "skipped_on_resume": skipped,
                },  # fmt: skip
                "running": running,
                "starting": starting,
                "failures": list(self._failed),
                "elapsed_s": round(now - self._t0, 1),
                "eta_s": None if eta is None else round(eta, 1),
                "started_at": _iso(self._started_at),
                "updated_at": _iso(self._wall()),
            }

    def summary_line(self) -> str:
        """One line for the driver log, e.g.
        `[training] 412/1020 done, 3 failed, 4 running | elapsed 12m03s | ETA 17m40s`."""
        d = self.to_dict()
        u = d["units"]
        line = (
            f"[{d['phase']}] {u['done']}/{u['total']} done, {u['failed']} failed, "
            f"{u['running']} running"
            + (f", {len(d['starting'])} starting" if d["starting"] else "")
            + f" | elapsed {format_duration(d['elapsed_s'])} | "
            f"ETA {format_duration(d['eta_s'])}"
        )
        if d["phase"] == "tuning" and d["message"]:  # the search's trials and best value
            line += f" | {d['message']}"
        latest = [r for r in d["running"] if r["epoch"] is not None]
        if latest:
            r = max(latest, key=lambda r: r["running_s"])  # the longest-running unit
            line += f" | {r['unit_id']} epoch {r['epoch']} {r['metric']}={r['value']:.4g}"
        return line


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


class EventRelay:
    """Progress events from the chunk tasks and the deep runs to the driver, as the Ray
    actor `ray_jobs.tasks.ProgressRelay`. Defined here, whose imports are the standard
    library's only: its worker starts without loading pandas and the data layer (1.2 s
    of CPU next to a 10 s linear sweep on 2 CPUs)."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []

    def push(self, event: dict[str, Any]) -> None:
        self._events.append(event)

    def drain(self) -> list[dict[str, Any]]:
        events, self._events = self._events, []
        return events


class ProgressSink(Protocol):
    def write_progress(self, progress: dict[str, Any]) -> None: ...


class ProgressWriter:
    """Background thread: every `interval_s`, write `tracker.to_dict()` to `sink` (a
    `JobStorage`) and log the summary line. `stop()` writes once more, then joins.

    A failed periodic write (after the storage's own retries) is logged and kept in
    `last_error`; the next tick tries again. A failed final write raises.
    """

    def __init__(
        self,
        tracker: ProgressTracker,
        sink: ProgressSink,
        *,
        interval_s: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s={interval_s}: use a positive number of seconds")
        self.tracker, self.sink, self.interval_s = tracker, sink, interval_s
        self.log = logger or log
        self.writes = 0
        self.last_error: Exception | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ProgressWriter:
        if self._thread is not None:
            raise RuntimeError("ProgressWriter already started")
        self._thread = threading.Thread(target=self._loop, name="progress-writer", daemon=True)
        self._thread.start()
        return self

    def write_now(self) -> None:
        self.sink.write_progress(self.tracker.to_dict())
        self.writes += 1
        self.log.info("%s", self.tracker.summary_line())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.write_now()
            except Exception as exc:  # keep publishing; the driver's work goes on
                self.last_error = exc
                self.log.warning("progress.json write failed (will retry): %s", exc)

    def stop(self) -> None:
        """Stop the thread and write the final state (raises if that write fails)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.write_now()

    def __enter__(self) -> ProgressWriter:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.stop()
            return
        try:  # the driver's own error is the one to see; a failed final write is logged
            self.stop()
        except Exception as exc:
            self.log.error("final progress.json write failed: %s", exc)
