"""The driver's log, kept in the job's storage as well as in Ray.

Ray keeps a job's driver log on its head: after the head restarts, or for an earlier
attempt of a resumed job, Ray has no record of it and the service could show nothing,
though failure messages send the user to the log. So the driver also copies its log
records (quantray's progress lines, warnings and errors, and Ray's own) to
`logs/driver-{attempt}.log` under the job: rewritten by a background thread 1, 3 and 7 s
after the start, then every `every_s`, and once more when the driver ends. Best effort: a
failed write is reported on stderr once and retried at the next flush; the job goes on.

Only what the driver process logs is kept (workers' output reaches Ray's log through
`log_to_driver`, not through logging), and at most `MAX_BYTES`: past that the oldest
lines go first, with a line saying how many were dropped.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
from typing import Protocol

MAX_BYTES = 4 << 20  # the stored copy keeps the latest 4 MiB of lines


def log_path(attempt: int) -> str:
    """Where attempt `attempt`'s driver log lies, relative to the job's prefix."""
    return f"logs/driver-{int(attempt)}.log"


class _Sink(Protocol):
    def write_bytes(self, rel: str, data: bytes) -> None: ...


class StoredLog(logging.Handler):
    """A logging handler that keeps the formatted records and writes them to `sink`."""

    def __init__(self, sink: _Sink, attempt: int, *, every_s: float = 10.0,
                 max_bytes: int = MAX_BYTES) -> None:  # fmt: skip
        super().__init__(level=logging.INFO)
        self.sink, self.rel = sink, log_path(attempt)
        self.every_s, self.max_bytes = every_s, max_bytes
        self._lines: collections.deque[str] = collections.deque()
        self._size = self._dropped = self._written = 0
        self._lock_lines = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._failed = False
        self._thread = threading.Thread(target=self._loop, name="driver-log", daemon=True)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)
            return
        with self._lock_lines:
            self._lines.append(line)
            self._size += len(line)
            while self._size > self.max_bytes and len(self._lines) > 1:
                self._size -= len(self._lines.popleft())
                self._dropped += 1

    def text(self) -> str:
        with self._lock_lines:
            head = (f"[{self._dropped} earlier lines dropped: the stored log keeps the latest "
                    f"{self.max_bytes >> 20} MiB]\n" if self._dropped else "")
            return head + "".join(self._lines)

    def flush(self) -> None:
        """Write the log as it is now (skipped when nothing was logged since the last)."""
        with self._flush_lock:
            with self._lock_lines:
                count = self._dropped + len(self._lines)
            if count == self._written:
                return
            try:
                self.sink.write_bytes(self.rel, self.text().encode("utf-8"))
            except Exception as exc:  # noqa: BLE001 - best effort, see the module docstring
                if not self._failed:
                    print(f"warning: could not store the driver log ({exc}); retrying",
                          file=sys.stderr)
                self._failed = True
                return
            self._written = count

    def _loop(self) -> None:
        # 1 s, 2 s, 4 s ... then every `every_s`: a driver killed in its first seconds (a
        # bad node, a kill during data preparation) still leaves its log behind
        wait = min(1.0, self.every_s)
        while not self._stop.wait(wait):
            self.flush()
            wait = min(2 * wait, self.every_s)

    def start(self) -> StoredLog:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.every_s + 5)
        self.flush()
        super().close()
