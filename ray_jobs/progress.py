"""Job progress: a thread-safe tracker, and a writer that publishes it as `progress.json`.

The driver feeds the tracker (phase changes, units starting, epochs, units finishing); a
`ProgressWriter` thread rewrites `progress.json` atomically through `JobStorage` every few
seconds and logs a one-line summary, so the service can answer a status poll from storage
alone.

ETA = units left / rate, with rate = units finished in this session / time since the first
unit of this session started. Units found finished on resume count as done but not in the
rate (they took no time now). No ETA until a unit has finished.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)

PHASES = ("queued", "planning", "preparing", "training", "tuning", "reporting",
          "succeeded", "failed", "stopped")  # fmt: skip
MAX_LISTED_FAILURES = 50  # progress.json lists the latest failures; results keep them all


@dataclass
class _Running:
    started: float
    run_name: str | None
    epoch: int | None = None
    max_epochs: int | None = None
    metric: str | None = None
    value: float | None = None


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
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._clock, self._wall = clock, wall
        self.job_id = job_id
        self._t0, self._started_at = clock(), wall()
        self._first_unit_t: float | None = None
        self._phase, self._message = "planning", ""
        self._total, self._done, self._skipped = total, 0, 0
        self._failed: list[dict[str, str]] = []
        self._n_failed = 0
        self._running: dict[str, _Running] = {}

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
            self._total = total

    def skip_done(self, n: int) -> None:
        """`n` units were already finished by an earlier attempt (resume)."""
        with self._lock:
            self._skipped += n

    def unit_started(
        self, unit_id: str, *, run_name: str | None = None, max_epochs: int | None = None
    ) -> None:
        with self._lock:
            now = self._clock()
            if self._first_unit_t is None:
                self._first_unit_t = now
            self._running[unit_id] = _Running(now, run_name, max_epochs=max_epochs)

    def unit_epoch(self, unit_id: str, epoch: int, metric: str, value: float) -> None:
        """A running unit finished `epoch`; `metric`=`value` is its latest validation score."""
        with self._lock:
            r = self._running.get(unit_id)
            if r is None:
                raise KeyError(f"unit_epoch({unit_id!r}): call unit_started first")
            r.epoch, r.metric, r.value = epoch, metric, float(value)

    def unit_done(self, unit_id: str) -> None:
        with self._lock:
            self._running.pop(unit_id, None)
            self._done += 1

    def unit_failed(self, unit_id: str, error: str) -> None:
        with self._lock:
            self._running.pop(unit_id, None)
            self._n_failed += 1
            self._failed.append({"unit_id": unit_id, "error": error})
            del self._failed[:-MAX_LISTED_FAILURES]

    # ---- views --------------------------------------------------------------------------
    def eta_s(self) -> float | None:
        with self._lock:
            return self._eta(self._clock())

    def _eta(self, now: float) -> float | None:
        if self._phase == "stopped":  # nothing more will run
            return None
        left = self._total - self._skipped - self._done - self._n_failed
        if left <= 0:
            return 0.0
        finished = self._done + self._n_failed
        if finished == 0 or self._first_unit_t is None or now <= self._first_unit_t:
            return None
        return left * (now - self._first_unit_t) / finished

    def to_dict(self) -> dict[str, Any]:
        """The content of `progress.json`."""
        with self._lock:
            now = self._clock()
            running = [
                {"unit_id": u, "run_name": r.run_name, "epoch": r.epoch,
                 "max_epochs": r.max_epochs, "metric": r.metric, "value": r.value,
                 "running_s": round(now - r.started, 1)}
                for u, r in sorted(self._running.items())
            ]  # fmt: skip
            done = self._done + self._skipped
            eta = self._eta(now)
            return {
                "job_id": self.job_id,
                "phase": self._phase,
                "message": self._message,
                "units": {
                    "total": self._total,
                    "done": done,
                    "failed": self._n_failed,
                    "running": len(running),
                    "pending": max(0, self._total - done - self._n_failed - len(running)),
                    "skipped_on_resume": self._skipped,
                },  # fmt: skip
                "running": running,
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
            f"{u['running']} running | elapsed {format_duration(d['elapsed_s'])} | "
            f"ETA {format_duration(d['eta_s'])}"
        )
        latest = [r for r in d["running"] if r["epoch"] is not None]
        if latest:
            r = max(latest, key=lambda r: r["running_s"])  # the longest-running unit
            line += f" | {r['unit_id']} epoch {r['epoch']} {r['metric']}={r['value']:.4g}"
        return line


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


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
