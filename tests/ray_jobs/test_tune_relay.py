"""A search trial delivers every report of its Train run to Tune, the last one included,
before it returns (ray_jobs/tune_relay.py: Ray's own hand-off could lose it, which hung
the search or failed it for a missing metric)."""

from __future__ import annotations

import queue as stdlib_queue
import threading
import time
from typing import Any

import pytest
from ray.util.queue import Empty

from ray_jobs.tune_relay import fit_reporting


class _Queue:
    """`ray.util.queue.Queue`'s get/get_nowait/put over a local queue."""

    def __init__(self) -> None:
        self.q: stdlib_queue.Queue = stdlib_queue.Queue()

    def put(self, item: Any) -> None:
        self.q.put(item)

    def get(self, timeout: float) -> Any:
        try:
            return self.q.get(timeout=timeout)
        except stdlib_queue.Empty:
            raise Empty from None

    def get_nowait(self) -> Any:
        try:
            return self.q.get_nowait()
        except stdlib_queue.Empty:
            raise Empty from None


def test_reports_put_right_before_fit_returns_are_all_delivered_in_order() -> None:
    q = _Queue()
    reported: list[dict[str, Any]] = []
    fit_done = threading.Event()

    def fit() -> None:  # its controller reports 3 epochs, the last one as it returns
        for epoch in range(3):
            time.sleep(0.05)
            q.put({"epoch": epoch, "val_loss": 1.0 - epoch / 10})
        fit_done.set()

    def slow_report(metrics: dict[str, Any]) -> None:  # Tune takes its time with each
        time.sleep(0.3)
        reported.append(metrics)

    fit_reporting(fit, q, slow_report)
    assert fit_done.is_set()
    assert [r["epoch"] for r in reported] == [0, 1, 2]  # none lost, none late


def test_a_failed_fit_is_raised_after_the_reports_it_made() -> None:
    q = _Queue()
    reported: list[dict[str, Any]] = []

    def fit() -> None:
        q.put({"epoch": 0})
        raise RuntimeError("NaN loss")

    with pytest.raises(RuntimeError, match="NaN loss"):
        fit_reporting(fit, q, reported.append)
    assert reported == [{"epoch": 0}]


def test_a_trial_stopped_by_its_scheduler_ends_at_the_report_that_stops_it() -> None:
    """ASHA stops a trial by making its next report raise SystemExit (Ray's function
    trainable): that passes through, and no later report is made."""
    q = _Queue()
    reported: list[dict[str, Any]] = []

    def fit() -> None:
        for epoch in range(3):
            q.put({"epoch": epoch})
        time.sleep(0.5)

    def report(metrics: dict[str, Any]) -> None:
        if metrics["epoch"] == 1:
            raise SystemExit(0)
        reported.append(metrics)

    with pytest.raises(SystemExit):
        fit_reporting(fit, q, report)
    assert reported == [{"epoch": 0}]
