"""Data checks seen from a job on a local Ray (2 CPUs): a symbol with a long gap between
its bars is kept, with a warning in the driver's log and in summary.json's
`data_warnings`; a job none of whose symbols is usable exits 2 (bad input), its data
errors in summary.json."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests._support import log_tail
from tests.ray_jobs._jobs import TINY_DATES, finish_entrypoint, start_spec, tiny_spec


def _sample(symbols: list[str]) -> pd.DataFrame:
    from data.loading import load_bars

    return load_bars("sample:sp500", symbols=symbols, **TINY_DATES)


@pytest.mark.timeout(600)
def test_long_gap_is_a_warning_in_the_log_and_summary(ray_cluster: str, tmp_path: Path) -> None:
    bars = _sample(["AAPL", "ABT"])
    hole = bars.index[bars["symbol"].eq("ABT")][200:285]  # ~4 months of ABT's rows missing
    after, before = bars.loc[hole[0] - 1, "date"], bars.loc[hole[-1] + 1, "date"]
    data = tmp_path / "bars.parquet"
    bars.drop(index=hole).to_parquet(data, index=False)
    spec = tiny_spec("gap-warning", ["ols"], dataset={"uri": str(data), "symbols": ["AAPL", "ABT"]})
    proc, storage, log = start_spec(spec, tmp_path, ray_cluster)
    rc = finish_entrypoint(proc, log, timeout_s=500)
    assert rc == 0, f"exit status {rc}, expected 0 (a warning fails nothing):\n{log_tail(log)}"

    summary = storage.read_json("results/summary.json")
    assert summary["data_errors"] == {} and summary["failed_units"] == []
    assert list(summary["data_warnings"]) == ["ABT"]
    gap = f"{after:%Y-%m-%d} -> {before:%Y-%m-%d}"
    assert "1 gap between consecutive bars longer than 10 days" in summary["data_warnings"]["ABT"]
    assert gap in summary["data_warnings"]["ABT"]
    assert "data warning for ABT (kept): data: symbol 'ABT': 1 gap" in log.read_text()
    # the driver's log is also in the job's storage (Ray forgets it when its head restarts)
    stored = storage.read_bytes("logs/driver-0.log").decode()
    assert "data warning for ABT (kept): data: symbol 'ABT': 1 gap" in stored
    assert stored.rstrip().endswith(f"job {storage.job_id}: results at "
                                    f"{storage.uri_of('results')}")


@pytest.mark.timeout(600)
def test_no_usable_symbol_exits_2(ray_cluster: str, tmp_path: Path) -> None:
    bars = _sample(["AAPL", "ABT"])
    tiny = bars[bars["symbol"] == "AAPL"].tail(80).assign(symbol="TINY")  # too short
    flat = bars[bars["symbol"] == "ABT"].assign(symbol="FLAT", open=42.0, high=42.0, low=42.0,
                                                 close=42.0)  # no returns
    data = tmp_path / "bars.parquet"
    pd.concat([tiny, flat], ignore_index=True).to_parquet(data, index=False)
    spec = tiny_spec("no-usable", ["ols", "mlp"],
                     dataset={"uri": str(data), "symbols": ["FLAT", "TINY"]})
    proc, storage, log = start_spec(spec, tmp_path, ray_cluster)
    rc = finish_entrypoint(proc, log, timeout_s=500)
    text = log.read_text()
    assert rc == 2, f"exit status {rc}, expected 2 (no usable symbol):\n{log_tail(log)}"
    assert "error: the job's dataset cannot be used: no usable symbol: all 2 symbols" in text
    assert "'FLAT': the close is the same on all" in text  # the first symbol's reason
    assert ("error: the job's dataset cannot be used: no usable symbol"
            in storage.read_bytes("logs/driver-0.log").decode())

    summary = storage.read_json("results/summary.json")  # the reasons are kept
    assert set(summary["data_errors"]) == {"FLAT", "TINY"}
    assert "80 rows" in summary["data_errors"]["TINY"]
    assert {u["unit_id"] for u in summary["failed_units"]} == {
        f"{s}__{m}__f0" for s in ("FLAT", "TINY") for m in ("ols", "mlp")
    }
    progress = storage.read_progress()
    assert progress["phase"] == "failed" and "no usable symbol" in progress["message"]


@pytest.mark.timeout(600)
def test_symbols_left_out_of_the_first_n_are_named_in_the_drivers_log(
        ray_cluster: str, tmp_path: Path) -> None:
    """`symbols: 4` over a 120-character name and one without an ASCII letter: the job
    trains the other 2, and its log named neither, only "2 symbols" (summary.json's
    data_errors did). The driver's log, and its stored copy, now name each and why."""
    bars = _sample(["AAPL", "ABT"])
    long = "X" * 120
    odd = pd.concat([bars, bars[bars["symbol"] == "AAPL"].assign(symbol=long),
                     bars[bars["symbol"] == "ABT"].assign(symbol="日本株")], ignore_index=True)
    data = tmp_path / "bars.parquet"
    odd.to_parquet(data, index=False)
    spec = tiny_spec("left-out", ["ols"], dataset={"uri": str(data), "symbols": 4, **TINY_DATES})
    proc, storage, log = start_spec(spec, tmp_path, ray_cluster)
    rc = finish_entrypoint(proc, log, timeout_s=500)
    assert rc == 0, f"exit status {rc}, expected 0 (the 2 others trained):\n{log_tail(log)}"
    summary = storage.read_json("results/summary.json")
    assert set(summary["data_errors"]) == {long, "日本株"}
    stored = storage.read_bytes("logs/driver-0.log").decode()
    for text in (log.read_text(), stored):
        assert "2 of the job's 4 symbols are left out (summary.json's data_errors" in text
        assert f"data: symbol '{long}' left out: longer than 32 characters" in text
        assert "data: symbol '日本株' left out: has no ASCII letter or digit" in text
