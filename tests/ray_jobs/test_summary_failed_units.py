"""The job summary over a leaderboard that holds a failed unit and ensembles (pure pandas,
no Ray): a failed unit is listed with its error and counts in no mean, symbol count or
win; ensembles are scored but win nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
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


def test_ensemble_rows_carry_their_members_summed_fit_statistics() -> None:
    """A job's ensemble rows had no train_seconds/params where `quantray train`'s have the
    members' sums (models.ensemble): the leaderboard fills them from the member rows."""
    def unit(symbol: str, model: str, seconds: float | None, params: int | None,
             fold: int = 0) -> list[dict]:
        out = []
        for split in ("val", "test"):
            row = _scored(symbol, model, split, 0.5)
            row.update(train_seconds=seconds, params=params, fold=fold)
            out.append(row)
        return out

    rows = unit("AAA", "ols", 1.0, 5) + unit("AAA", "lstm", 2.5, 100)
    rows += error_rows("AAA", "ridge", (1,), ValueError("singular"))  # no member
    rows += unit("AAA", "ols", 4.0, 7, fold=1) + unit("AAA", "lstm", 1.0, 1, fold=1)
    rows += unit("BBB", "ols", 1.0, None) + unit("BBB", "lstm", 2.0, 50)  # params unknown
    for symbol, fold in (("AAA", 0), ("AAA", 1), ("BBB", 0)):
        for name in ("ensemble_equal", "ensemble_f1"):
            row = _scored(symbol, name, "test", 0.6)
            row["fold"] = fold
            rows.append(row)
    frame = leaderboard_frame(rows, LEADERBOARD_COLUMNS)
    ens = frame[frame["model"].str.startswith("ensemble_")]
    got = {(r.symbol, r.fold, r.model): (r.train_seconds, r.params) for r in ens.itertuples()}
    assert got[("AAA", 0, "ensemble_equal")] == (3.5, 105)
    assert got[("AAA", 0, "ensemble_f1")] == (3.5, 105)
    assert got[("AAA", 1, "ensemble_equal")] == (5.0, 8)
    seconds, params = got[("BBB", 0, "ensemble_equal")]
    assert seconds == 3.0 and params is pd.NA
    # the members' own rows are unchanged
    ols = frame[(frame["symbol"] == "AAA") & (frame["model"] == "ols") & (frame["fold"] == 0)]
    assert set(ols["params"]) == {5} and set(ols["train_seconds"]) == {1.0}


def test_an_ensemble_row_sums_its_linear_members_params_at_its_horizon() -> None:
    """A linear model is a regression per horizon, its rows' params that horizon's own
    (lasso may shrink one to its intercept): an ensemble's row sums them at its horizon."""
    rows = []
    for h, ols_params in ((1, 17), (5, 1)):
        for model, params in (("ols", ols_params), ("lstm", 100)):
            row = empty_row("AAA", model, h, "test", 0)
            row.update(train_seconds=1.0, params=params)
            rows.append(row)
        rows.append(empty_row("AAA", "ensemble_equal", h, "test", 0))
    frame = leaderboard_frame(rows, LEADERBOARD_COLUMNS)
    ens = frame[frame["model"] == "ensemble_equal"].set_index("horizon")
    assert ens.loc[1, "params"] == 117 and ens.loc[5, "params"] == 101
