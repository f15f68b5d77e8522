"""The driver's symbol list: a symbol whose rows are partly spelled with spaces ('AAPL '
beside 'AAPL') fails with that reason rather than training on part of its history, whether
the spec names it or takes the dataset's first N."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from ray_jobs.driver import resolve_symbols
from ray_jobs.spec import JobSpec
from tests.data.conftest import make_bars
from tests.ray_jobs._jobs import tiny_spec


def _split_history(tmp_path: Path) -> Path:
    bars = make_bars(("AAPL", "MSFT", "ABT"), n=40)
    late_aapl = (bars["symbol"] == "AAPL") & (bars.groupby("symbol").cumcount() >= 20)
    bars.loc[late_aapl, "symbol"] = "AAPL "  # the second half of AAPL, padded
    path = tmp_path / "bars.parquet"
    bars.to_parquet(path)
    return path


def test_a_named_symbol_with_a_padded_twin_fails_with_the_reason(tmp_path: Path) -> None:
    path = _split_history(tmp_path)
    spec = JobSpec.from_dict(tiny_spec("pad", ["ols"], dataset={
        "uri": str(path), "symbols": ["AAPL", "MSFT"]}))  # fmt: skip
    symbols, missing = resolve_symbols(spec)
    assert symbols == ["AAPL", "MSFT"] and list(missing) == ["AAPL"]
    assert missing["AAPL"].startswith("data: ")
    assert "history is split between spellings" in missing["AAPL"] and "'AAPL '" in missing["AAPL"]


def test_symbols_n_leaves_out_the_padded_symbol_and_its_twin(tmp_path: Path) -> None:
    path = _split_history(tmp_path)
    spec = JobSpec.from_dict(tiny_spec("pad", ["ols"], dataset={"uri": str(path), "symbols": 4}))
    symbols, left_out = resolve_symbols(spec)
    assert symbols == ["ABT", "MSFT"]
    assert sorted(left_out) == ["AAPL", "AAPL "]
    assert "history is split" in left_out["AAPL"]
    assert pd.Series(list(left_out.values())).str.startswith("data: ").all()


def test_a_named_symbol_the_file_spells_otherwise_gets_the_files_spelling(tmp_path: Path) -> None:
    """`symbols: [brk.b]` on a file that spells it 'BRK.B' said only "not in dataset";
    `quantray train` names the file's spelling, and now the job does too."""
    path = tmp_path / "bars.parquet"
    make_bars(("BRK.B", "MSFT"), n=40).to_parquet(path)
    spec = JobSpec.from_dict(tiny_spec("case", ["ols"], dataset={
        "uri": str(path), "symbols": ["brk.b", "MSFT"]}))  # fmt: skip
    symbols, missing = resolve_symbols(spec)
    assert symbols == ["brk.b", "MSFT"] and list(missing) == ["brk.b"]
    assert missing["brk.b"] == (
        f"symbol 'brk.b' is not in dataset {path}; the file spells 'BRK.B': symbols match "
        "exactly, case and spaces included")


def test_symbols_left_out_of_the_first_n_are_named_in_the_drivers_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`symbols: N` leaving out a 120-character name and an unusable one reported them in
    summary.json only; the driver's log said "2 symbols". Now it names each and why."""
    long = "X" * 120
    path = tmp_path / "bars.parquet"
    make_bars(("AAA", "BBB", long, "日本株"), n=5).to_parquet(path)
    spec = JobSpec.from_dict(tiny_spec("n", ["ols"], dataset={"uri": str(path), "symbols": 4}))
    with caplog.at_level(logging.INFO, logger="quantray.driver"):
        symbols, left_out = resolve_symbols(spec)
    assert symbols == ["AAA", "BBB"] and sorted(left_out) == [long, "日本株"]
    lines = [r.getMessage() for r in caplog.records if r.name == "quantray.driver"]
    assert lines[0] == ("2 of the job's 4 symbols are left out (summary.json's data_errors "
                        "lists each):")
    assert lines[1:] == [f"  {left_out[long]}", f"  {left_out['日本株']}"]
    assert f"symbol '{long}' left out: longer than 32 characters" in lines[1]
    assert "'日本株' left out: has no ASCII letter or digit" in lines[2]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_the_log_of_many_left_out_symbols_is_capped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ray_jobs.driver import LEFT_OUT_LOGGED

    longs = [f"{i:02d}" + "L" * 40 for i in range(LEFT_OUT_LOGGED + 5)]
    path = tmp_path / "bars.parquet"
    make_bars(("AAA", *longs), n=3).to_parquet(path)
    spec = JobSpec.from_dict(tiny_spec("cap", ["ols"], dataset={
        "uri": str(path), "symbols": ["AAA"]}))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="quantray.driver"):
        resolve_symbols(spec)  # none left out: nothing logged
    assert caplog.records == []
    spec = JobSpec.from_dict(tiny_spec("cap", ["ols"], dataset={
        "uri": str(path), "symbols": len(longs) + 1}))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="quantray.driver"):
        symbols, left_out = resolve_symbols(spec)
    assert symbols == ["AAA"] and len(left_out) == LEFT_OUT_LOGGED + 5
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith(f"{LEFT_OUT_LOGGED + 5} of the job's {LEFT_OUT_LOGGED + 6} "
                               "symbols are left out")
    assert len(lines) == 1 + LEFT_OUT_LOGGED + 1
    assert lines[-1] == "  ... and 5 more (see summary.json's data_errors)"


def test_a_named_symbol_absent_from_the_file_is_named_in_the_drivers_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bars.parquet"
    make_bars(("BRK.B", "MSFT"), n=5).to_parquet(path)
    spec = JobSpec.from_dict(tiny_spec("named", ["ols"], dataset={
        "uri": str(path), "symbols": ["brk.b", "MSFT"]}))  # fmt: skip
    with caplog.at_level(logging.INFO, logger="quantray.driver"):
        _, missing = resolve_symbols(spec)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["1 of the job's 2 symbols are left out (summary.json's data_errors lists "
                     "each):", f"  {missing['brk.b']}"]
