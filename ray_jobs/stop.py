"""Stopping a job: SIGTERM/SIGINT (what `ray job stop` and the API's cancel send) becomes
`JobCancelled` in the driver's main thread, and the driver writes what it has finished.

The handler also records the request. Raised inside one of Ray's C calls (a `ray.get`),
the exception can come out as a `SystemError` ("returned a result with an exception set"),
and an `except Exception` meant for a task's failure may then swallow it; `as_cancel`
recognises it by the record, and `check_stop`, called by the driver's waiting loops,
raises a swallowed request within a second.
"""

from __future__ import annotations

import signal
import threading
import weakref
from typing import Any


class JobCancelled(BaseException):  # noqa: N818 - a stop request, not a failure
    """A stop request. A BaseException, as KeyboardInterrupt is, so that no
    `except Exception` records it as a unit's error."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


# progress.json's message in the "stopped" phase, before and after the driver has written
# the ended units' results (the service tells a driver killed in between by them)
WRITING_RESULTS = "writing the finished units' results"
RESULTS_WRITTEN = "the finished units' results are written"

_requested: JobCancelled | None = None
_deferred = False  # the final report is being written: a request is recorded only


def request_stop(signum: int, _frame: Any = None) -> None:
    """The entrypoint's SIGTERM/SIGINT handler: record the stop, raise `JobCancelled`."""
    global _requested
    _requested = JobCancelled(signum)
    raise _requested


def record_stop(signum: int, _frame: Any = None) -> None:
    """The handler while the job writes its final results (`defer_stops`): record the stop
    request and let the writing finish (seconds, within Ray's stop grace period): raised
    there, it cut the leaderboard short, and the partial rewrite that followed lost the
    ensemble rows already written."""
    global _requested
    _requested = JobCancelled(signum)


def defer_stops() -> None:
    """From here on a stop request is recorded, not raised (see `record_stop`); only where
    the entrypoint's `request_stop` handles the signals (the main thread of a driver)."""
    import threading

    global _deferred
    _deferred = True  # check_stop and as_cancel's record stay quiet from here on
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(sig) is request_stop:
            signal.signal(sig, record_stop)


def reset() -> None:
    """Forget an earlier request (a new job in the same process)."""
    global _requested, _deferred
    _requested, _deferred = None, False


def as_cancel(exc: BaseException) -> JobCancelled | None:
    """The stop request behind `exc` (itself, one in its chain, or the recorded one)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, JobCancelled):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None if _deferred else _requested


def requested() -> bool:
    """Whether a stop was requested, also one only recorded while stops are deferred."""
    return _requested is not None


def sleep_unless_stopped(seconds: float) -> bool:
    """Sleep `seconds` in short steps; False as soon as a stop is requested (a deferred one
    too), so that a retry's wait never outlasts Ray's stop grace."""
    import time

    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if requested():
            return False
        time.sleep(min(0.5, left))
    return not requested()


def check_stop() -> None:
    """Raise the recorded stop request, if any (one an `except` may have swallowed), unless
    stops are deferred (`defer_stops`)."""
    if _requested is not None and not _deferred:
        raise _requested


_ray_threads: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def calls_ray(thread: threading.Thread) -> threading.Thread:
    """Register a thread of this process that makes Ray calls of its own (the deep runs'
    Tune controller); returns it. While one is alive, the driver does not shut Ray down
    (see `threads_in_ray`)."""
    _ray_threads.add(thread)
    return thread


def threads_in_ray() -> list[str]:
    """The names of the registered threads still alive. A `ray.shutdown()` while one of
    them is inside a Ray call ended a stopped driver whose results were written with
    status 1 (the core worker's "has already been shutdown ... The process will exit") or
    a SIGSEGV, instead of 128 + the signal; such a driver leaves the disconnect to its
    process's exit (`ray_jobs.run.exit_promptly`)."""
    return sorted(t.name for t in list(_ray_threads) if t.is_alive())


def disconnect(ray_module: Any) -> None:
    """`ray.shutdown()` for good: no later Ray call of another thread of this process (the
    deep runs' Tune controller) connects it to the cluster again. Ray's auto-connect did:
    a cancelled driver logged "Connecting to existing Ray cluster" after its shutdown, and
    its Tune controller could go on scheduling trials. Such a call now raises instead."""
    try:
        import ray._private.auto_init_hook as hook  # Ray 2.60: RAY_ENABLE_AUTO_CONNECT=0

        hook.enable_auto_connect = False
    except (ImportError, AttributeError):  # another Ray: shut down as before
        pass
    ray_module.shutdown()
