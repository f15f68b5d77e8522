"""What the process-level tests share: waiting on a condition and log tails (the
job-executor tests in tests/ray_jobs and the end-to-end test in tests/e2e)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], *, timeout_s: float, what: str, every_s: float = 0.2,
             alive: Callable[[], str | None] = lambda: None) -> T:  # fmt: skip
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout_s`.
    `alive` returns a reason to give up early (a process we depend on exited)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        reason = alive()
        if reason:
            raise AssertionError(f"gave up waiting for {what}: {reason}")
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or why there are none."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"
