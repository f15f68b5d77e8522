"""The job summary over a leaderboard that holds a failed unit and ensembles (pure pandas,
no Ray): a failed unit is listed with its error and counts in no mean, symbol count or
win; ensembles are scored but win nothing."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics import LEADERBOARD_COLUMNS, empty_row, error_rows
from ray_jobs.results import leaderboard_frame, summarize


def _scored(symbol: str, model: str, split: str, f1: float) -> dict:
    row = empty_row(symbol, model, 1, split, 0)
    row.update(accuracy=f1, macro_f1=f1, baseline_accuracy=0.4, p_value=0.5, mcc=0.0)
    return row


def test_a_failed_unit_is_listed_and_counts_in_no_score() -> None:
    rows = [_scored(s, "ols", split, f1) for s, f1 in (("AAA", 0.5), ("BBB", 0.3))
            for split in ("val", "test")]
    rows += [_scored("AAA", "ensemble_equal", "test", 0.9)]  # an ensemble wins nothing
    rows += error_rows("CCC", "ols", (1,), RuntimeError("NaN loss"))  # a failed unit
    rows += [_scored("CCC", "lstm", "test", 0.2)]
    rows += error_rows("DDD", "ols", (1,), ValueError("too little data"))  # nothing scored
    frame = leaderboard_frame(rows, LEADERBOARD_COLUMNS)
    summary = summarize(frame)
    assert summary["failed_units"] == [("CCC", "ols", "RuntimeError: NaN loss"),
                                       ("DDD", "ols", "ValueError: too little data")]
    by = {e["model"]: e for e in summary["models"]}
    assert by["ols"]["n_symbols"] == 2  # CCC's failed ols is not a scored symbol
    assert by["ols"]["macro_f1"]["mean"] == pytest.approx(0.4)
    assert by["ols"]["macro_f1"]["std"] == pytest.approx(np.std([0.5, 0.3], ddof=1))
    assert by["ensemble_equal"]["n_symbols"] == 1
    # wins per symbol among the real models: AAA and BBB to ols, CCC to lstm (ols failed)
    assert summary["wins"] == {"1": {"ols": 2, "lstm": 1}}
    assert summary["symbols"] == 4 and summary["rows"] == len(rows)
    assert summary["symbols_scored"] == 3  # DDD has only its failed unit
