"""What a Tune search is doing, for the job's progress: a Tune callback (it runs in the
driver, where Tune's controller runs) that tells, on every trial start, result and end, how
many of the search's trials have ended, how many run, and the best value of the search's
metric so far: "lstm: 2 of 4 trials ended (1 stopped early), 1 running; best val_macro_f1
0.4123 (epoch 3)". Before, a search of several minutes showed its phase only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ray.tune import Callback


class TrialProgress(Callback):
    """Calls `say(message)` whenever a trial of the search starts, reports or ends.

    `total` is the number of trials the search samples; `metric` and `mode` are the
    search's. Trials that ASHA stopped before their last epoch count as "stopped early"."""

    def __init__(self, model: str, total: int, metric: str, mode: str, max_epochs: int,
                 say: Callable[[str], None]) -> None:
        self.model, self.total, self.metric = model, total, metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.max_epochs, self.say = max_epochs, say
        self.best: tuple[float, int] | None = None  # (value, epochs) of the best result
        self.epochs: dict[str, int] = {}  # trial id -> epochs reported

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its RunConfig, callbacks included, with the experiment (tuner.pkl):
        # the sink (the job's progress tracker, with its locks) stays in this process
        return {**self.__dict__, "say": None}

    def seed(self, results: Any) -> None:
        """Take the best value and the epochs of a restored search's trials (a Tune
        `ResultGrid`), so that the line after a resume counts the kept trials too."""
        for r in results:
            hist, tid = r.metrics_dataframe, (r.metrics or {}).get("trial_id")
            if hist is None or self.metric not in hist:
                continue
            epochs = hist["epochs_run"] if "epochs_run" in hist else range(1, len(hist) + 1)
            for value, n in zip(hist[self.metric], epochs, strict=True):
                self._result(tid, {self.metric: value, "epochs_run": n})

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._tell(trials, now=(trial, "RUNNING"))  # Tune sets it after its callbacks

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                        result: dict[str, Any], **info: Any) -> None:
        self._result(trial.trial_id, result)
        self._tell(trials)

    def _result(self, trial_id: Any, result: dict[str, Any]) -> None:
        epochs = result.get("epochs_run")
        if isinstance(epochs, int | float) and trial_id is not None:
            self.epochs[trial_id] = max(self.epochs.get(trial_id, 0), int(epochs))
        value = result.get(self.metric)
        if isinstance(value, int | float) and math.isfinite(value):
            if self.best is None or self.sign * value > self.sign * self.best[0]:
                self.best = (float(value), int(epochs or 0))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                          **info: Any) -> None:
        # a trial's final result may reach the callbacks here only, not as a result first
        self._result(trial.trial_id, getattr(trial, "last_result", None) or {})
        self._tell(trials, now=(trial, "TERMINATED"))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._tell(trials, now=(trial, "ERROR"))

    def message(self, trials: list[Any], now: tuple[Any, str] | None = None) -> str:
        """The progress line for the trials' states (`now`: (a trial whose start or end is
        being told, its new status), as Tune sets the status after its callbacks)."""
        states = {t.trial_id: t.status for t in trials}
        if now is not None:
            states[now[0].trial_id] = now[1]
        done = [t for t, s in states.items() if s in ("TERMINATED", "ERROR")]
        failed = sum(1 for t in done if states[t] == "ERROR")
        early = sum(1 for t in done if states[t] == "TERMINATED"
                    and 0 < self.epochs.get(t, self.max_epochs) < self.max_epochs)
        running = sum(1 for s in states.values() if s == "RUNNING")
        notes = [f"{early} stopped early"] if early else []
        notes += [f"{failed} failed"] if failed else []
        line = (f"{self.model}: {len(done)} of {self.total} trials ended"
                + (f" ({', '.join(notes)})" if notes else "") + f", {running} running")
        if self.best is not None:
            line += f"; best {self.metric} {self.best[0]:.4g} (epoch {self.best[1]})"
        return line

    def _tell(self, trials: list[Any], now: tuple[Any, str] | None = None) -> None:
        if self.say is None:  # unpickled with a restored experiment: replaced by a new one
            return
        try:
            self.say(self.message(trials, now))
        except Exception:  # noqa: BLE001 - progress only: the search goes on
            pass
