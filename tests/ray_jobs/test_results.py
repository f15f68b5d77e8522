"""The summary of a walk-forward job: a symbol's folds are averaged first, so the mean and
std are over symbols (as the README says) and wins are per symbol."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ray_jobs.results import SUMMARY_METRICS, summarize


def frame(acc: dict[tuple[str, str, int], float]) -> pd.DataFrame:
    rows = []
    for (symbol, model, fold), value in acc.items():
        row = dict.fromkeys(SUMMARY_METRICS, np.nan)
        row.update(symbol=symbol, model=model, horizon=1, fold=fold, split="test", error=None,
                   accuracy=value, macro_f1=value, p_value=0.001 if value > 0.5 else 0.5)
        rows.append(row)
    return pd.DataFrame(rows)


def test_walk_forward_folds_are_averaged_per_symbol_before_the_spread() -> None:
    acc = {("AAA", "ols", 0): 0.50, ("AAA", "ols", 1): 0.60, ("AAA", "ols", 2): 0.70,
           ("BBB", "ols", 0): 0.40, ("BBB", "ols", 1): 0.40, ("BBB", "ols", 2): 0.40,
           # mlp wins AAA on one fold only (0.75 > 0.70) but loses on average
           ("AAA", "mlp", 0): 0.45, ("AAA", "mlp", 1): 0.45, ("AAA", "mlp", 2): 0.75,
           ("BBB", "mlp", 0): 0.50, ("BBB", "mlp", 1): 0.50, ("BBB", "mlp", 2): 0.50}  # fmt: skip
    summary = summarize(frame(acc))
    ols = next(e for e in summary["models"] if e["model"] == "ols")
    assert ols["n_symbols"] == 2 and ols["n_folds"] == 3
    assert ols["accuracy"]["mean"] == pytest.approx(0.5)  # (0.6 + 0.4) / 2
    assert ols["accuracy"]["std"] == pytest.approx(np.std([0.6, 0.4], ddof=1))
    assert ols["share_significant_1pct"] == pytest.approx(2 / 6)  # over symbol x fold tests
    assert summary["wins"] == {"1": {"ols": 1, "mlp": 1}}  # AAA: ols 0.60 vs mlp 0.55
