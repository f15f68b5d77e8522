"""The Tune search's progress line (`ray_jobs.tune_progress.TrialProgress`), fed the
callbacks Tune's controller makes, with stand-in trials (no Ray run)."""

from __future__ import annotations

from types import SimpleNamespace

from ray_jobs.tune_progress import TrialProgress


def _trial(tid: str, status: str = "PENDING") -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid, status=status)


def test_the_line_counts_ended_running_and_early_stopped_trials_and_the_best_value() -> None:
    said: list[str] = []
    cb = TrialProgress("lstm", 4, "val_macro_f1", "max", max_epochs=5, say=said.append)
    a, b, c, d = (_trial(t) for t in "abcd")
    trials = [a, b, c, d]
    # Tune tells the callbacks of a start before it sets the trial's status to RUNNING
    cb.on_trial_start(0, trials, a)
    assert said[-1] == "lstm: 0 of 4 trials ended, 1 running"
    a.status = "RUNNING"
    cb.on_trial_start(0, trials, b)
    assert said[-1] == "lstm: 0 of 4 trials ended, 2 running"
    b.status = "RUNNING"
    cb.on_trial_result(1, trials, a, {"val_macro_f1": 0.31, "epochs_run": 1})
    cb.on_trial_result(2, trials, b, {"val_macro_f1": 0.42, "epochs_run": 1})
    cb.on_trial_result(3, trials, a, {"val_macro_f1": 0.35, "epochs_run": 2})
    assert said[-1] == "lstm: 0 of 4 trials ended, 2 running; best val_macro_f1 0.42 (epoch 1)"
    # ASHA stops a after 2 of 5 epochs: Tune tells the callbacks before it sets the status
    cb.on_trial_complete(4, trials, a)
    assert said[-1].startswith("lstm: 1 of 4 trials ended (1 stopped early), 1 running")
    a.status, c.status = "TERMINATED", "RUNNING"
    for epoch in range(1, 6):
        cb.on_trial_result(5, trials, b, {"val_macro_f1": 0.40, "epochs_run": epoch})
    cb.on_trial_complete(6, trials, b)  # all 5 epochs: ended, not stopped early
    b.status = "TERMINATED"
    cb.on_trial_error(7, trials, c)
    assert said[-1] == ("lstm: 3 of 4 trials ended (1 stopped early, 1 failed), 0 running; "
                        "best val_macro_f1 0.42 (epoch 1)")


def test_a_loss_is_minimised_and_a_nan_is_no_best() -> None:
    said: list[str] = []
    cb = TrialProgress("gru", 2, "val_loss", "min", max_epochs=3, say=said.append)
    a = _trial("a", "RUNNING")
    cb.on_trial_result(0, [a], a, {"val_loss": float("nan"), "epochs_run": 1})
    assert "best" not in said[-1]
    cb.on_trial_result(1, [a], a, {"val_loss": 0.9, "epochs_run": 2})
    cb.on_trial_result(2, [a], a, {"val_loss": 1.1, "epochs_run": 3})
    assert said[-1].endswith("best val_loss 0.9 (epoch 2)")


def test_a_failing_progress_sink_does_not_stop_the_search() -> None:
    def broken(_: str) -> None:
        raise OSError("storage down")

    cb = TrialProgress("mlp", 1, "val_loss", "min", max_epochs=1, say=broken)
    a = _trial("a", "RUNNING")
    cb.on_trial_start(0, [a], a)  # no exception
    cb.on_trial_result(1, [a], a, {"val_loss": 0.5, "epochs_run": 1})
    assert cb.best == (0.5, 1)


def test_it_pickles_without_its_sink_as_tune_saves_it_with_the_experiment() -> None:
    import threading

    import ray.cloudpickle as pickle

    lock = threading.Lock()  # the job's tracker holds locks: not picklable
    cb = TrialProgress("mlp", 2, "val_loss", "min", max_epochs=1,
                       say=lambda m, lock=lock: None)
    copy = pickle.loads(pickle.dumps(cb))
    assert copy.say is None and copy.model == "mlp"
    a = _trial("a", "RUNNING")
    copy.on_trial_start(0, [a], a)  # a no-op, no error


def test_a_resumed_search_counts_its_kept_trials() -> None:
    """After a resume the callback is new: it takes the restored trials' best value and
    epochs from Tune's results, so the line does not forget the kept trials."""
    import pandas as pd

    said: list[str] = []
    cb = TrialProgress("lstm", 3, "val_macro_f1", "max", max_epochs=4, say=said.append)
    kept = SimpleNamespace(metrics={"trial_id": "a"}, metrics_dataframe=pd.DataFrame(
        {"val_macro_f1": [0.30, 0.52], "epochs_run": [1, 2]}))  # ASHA stopped it at 2 of 4
    cb.seed([kept, SimpleNamespace(metrics={}, metrics_dataframe=None)])
    a, b = _trial("a", "TERMINATED"), _trial("b", "RUNNING")
    cb.on_trial_start(0, [a, b], b)
    assert said[-1] == ("lstm: 1 of 3 trials ended (1 stopped early), 1 running; best "
                        "val_macro_f1 0.52 (epoch 2)")


def test_a_final_result_told_only_at_the_trials_end_counts() -> None:
    """Tune may pass a trial's last result to on_trial_complete only (its last_result): the
    line's best value lagged the search's own best by that result."""
    said: list[str] = []
    cb = TrialProgress("gru", 1, "val_loss", "min", max_epochs=2, say=said.append)
    a = _trial("a", "RUNNING")
    cb.on_trial_result(0, [a], a, {"val_loss": 1.094, "epochs_run": 1})
    a.last_result = {"val_loss": 1.0932, "epochs_run": 2}
    cb.on_trial_complete(1, [a], a)
    assert said[-1] == "gru: 1 of 1 trials ended, 0 running; best val_loss 1.093 (epoch 2)"
