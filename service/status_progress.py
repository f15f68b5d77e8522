"""progress.json for status reads (GET /v1/jobs/{id}, cancel, resume) that stay fast while
the job storage does not answer.

A read of an S3 object whose endpoint hangs takes ~10 s (the AWS SDK's 3 s request timeout,
three attempts), and every status poll paid it. Here a read gets `budget_s`; one that fails
or runs out marks the storage unreachable, and for the next `retry_after_s` no read is
tried: each status answers at once with the progress this process last read for the job
(if any) and a `progress_error` that says the storage does not answer, since when, and how
old the progress shown is. A read still running in the background updates that progress
(and clears the mark) when it ends. The dispatcher keeps its own blocking reads: it settles
final statuses and must not act on a stale progress.json.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime

from service.job_files import JobFiles, Progress

STATUS_READ_BUDGET_S = 2.0
RETRY_AFTER_S = 5.0
CACHE_ENTRIES = 4096


class StatusProgress:
    def __init__(
        self,
        files: JobFiles,
        *,
        budget_s: float = STATUS_READ_BUDGET_S,
        retry_after_s: float = RETRY_AFTER_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.files, self.budget_s, self.retry_after_s, self.clock = (
            files, budget_s, retry_after_s, clock)  # fmt: skip
        self._lock = threading.Lock()
        self._last: OrderedDict[tuple[str, int], tuple[Progress | None, float]] = OrderedDict()
        self._down: tuple[float, str] | None = None  # (since, why)
        self._retry_at = 0.0
        # Reads that outlive their budget keep a worker until pyarrow gives up; two suffice
        # since no new read starts while the storage is marked down.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="status-progress")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def read(self, job_id: str, attempt: int) -> tuple[Progress | None, str | None]:
        """(progress, progress_error): the file's content now, or while the storage does not
        answer the last one read for this job and attempt, with the error saying so. A
        progress.json that is not valid gives (None, why), as before."""
        key = (job_id, attempt)
        with self._lock:
            skip = self._down is not None and self.clock() < self._retry_at
        if skip:
            return self._stale(key)
        future = self._pool.submit(self.files.read_progress, job_id, attempt)
        future.add_done_callback(lambda f: self._settled(key, f))
        try:
            progress = future.result(timeout=self.budget_s)
        except FutureTimeout:
            self._mark_down(f"no answer within {self.budget_s:g} s")
            return self._stale(key)
        except ValueError as exc:  # not JSON, or wrong fields: not an outage
            return None, str(exc)
        except OSError as exc:
            self._mark_down(str(exc))
            return self._stale(key)
        return progress, None

    def _settled(self, key: tuple[str, int], future: Future) -> None:
        """A read ended (within its budget or after it): remember what it read."""
        if future.cancelled():
            return
        exc = future.exception()
        if isinstance(exc, OSError):
            self._mark_down(str(exc))
            return
        if exc is not None:
            return
        with self._lock:
            self._down = None
            self._last[key] = (future.result(), self.clock())
            self._last.move_to_end(key)
            while len(self._last) > CACHE_ENTRIES:
                self._last.popitem(last=False)

    def _mark_down(self, why: str) -> None:
        with self._lock:
            now = self.clock()
            since = self._down[0] if self._down is not None else now
            self._down = (since, why)
            self._retry_at = now + self.retry_after_s

    def _stale(self, key: tuple[str, int]) -> tuple[Progress | None, str]:
        with self._lock:
            down = self._down
            last = self._last.get(key)
            now = self.clock()
        since, why = down if down is not None else (now, "unknown error")
        head = (f"the job storage ({self.files.storage_uri}) does not answer since "
                f"{_iso(since)} ({why})")  # fmt: skip
        if last is None:
            return None, f"{head}; no progress of this job was read before it went down"
        progress, read_at = last
        shown = "the progress shown" if progress is not None else "no progress.json then"
        return progress, (f"{head}; {shown} was read at {_iso(read_at)}, "
                          f"{max(0, round(now - read_at))} s ago")  # fmt: skip


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
