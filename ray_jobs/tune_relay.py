"""The hand-off of a search trial's per-epoch reports from its Train run to Ray Tune.

Ray 2.60's `TuneReportCallback` passes each report from the Train controller to the trial
through a one-slot queue actor that the trial actor's MAIN thread drains while it waits
for results, and `TorchTrainer.fit()` returns as soon as the last report is IN that queue,
not when it was taken. The trial function then returned, and its thread posted the
trial's final result first; the main thread, taking the late report after that, either
blocked for good on the full one-slot result queue (the search hung, its driver printing
"0 running" for minutes) or ended the trial with a final result that had no metrics,
which ASHA's strict metric check turned into an error that failed the model's whole
search and every unit of it. A probe on a loaded 2-core machine hit one or the other in
both of its searches with `max_epochs: 1` (one report, right before `fit()` returns).

Here the controller puts each report in an unbounded queue of the trial's own
(`ReportRelay`), `fit()` runs in a helper thread, and the trial function itself drains the
queue and calls `ray.tune.report` for each report, from its own thread: the ordinary path
of a Tune function, in which every report is delivered before the function returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ray.train.v2.api.callback import UserCallback

POLL_S = 0.2


class ReportRelay(UserCallback):
    """Train callback (runs in the run's controller): each report's rank-0 metrics go to
    `queue` (a `ray.util.queue.Queue`); `put` returns once the queue actor holds them."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        self.queue.put(dict(metrics[0]))


def fit_reporting(fit: Callable[[], Any], queue: Any,
                  report: Callable[[dict[str, Any]], None]) -> None:
    """Run `fit` (a trainer's fit, whose `ReportRelay` fills `queue`) in a helper thread
    and `report` every item of `queue`, in order, from this thread, the last ones after
    `fit` returned; then raise what `fit` raised, if anything."""
    from ray.util.queue import Empty

    failure: list[BaseException] = []

    def run() -> None:
        try:
            fit()
        except BaseException as exc:  # re-raised in the trial's thread below
            failure.append(exc)

    thread = threading.Thread(target=run, name="trial-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        try:
            report(queue.get(timeout=POLL_S))
        except Empty:
            pass
    while True:  # fit() returned once its last put was accepted: all are in the queue
        try:
            report(queue.get_nowait())
        except Empty:
            break
    if failure:
        raise failure[0]
