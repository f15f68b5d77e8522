"""The driver's symbol list: a symbol whose rows are partly spelled with spaces ('AAPL '
beside 'AAPL') fails with that reason rather than training on part of its history, whether
the spec names it or takes the dataset's first N."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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
