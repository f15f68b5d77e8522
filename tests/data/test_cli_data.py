"""`quantray data inspect|prepare` through service.cli.main."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from service.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["data", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_one_line_error(rc: int, out: str, err: str, words: str) -> None:
    assert rc == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and words in err


def test_inspect_prints_overview_and_validation_report(capsys, bars, write_frame):
    df = bars(("AAA", "BBB", "CCC"), n=120)
    df = df.drop(index=df.index[(df["symbol"] == "CCC")][30:])  # CCC: 30 rows
    df.loc[df.index[df["symbol"] == "BBB"][40], "volume"] = 0
    path = write_frame(df, "csv")

    rc, out, err = _run(capsys, "inspect", path, "--min-rows", "100")
    assert rc == 0, err
    assert "symbols: 3" in out
    assert "rows: 270" in out
    assert "date range: 2020-01-01 .. 2020-06-16" in out
    assert "rows per symbol: min 30, median 120, max 120" in out
    assert "shortest: CCC 30" in out
    assert "3 symbols in, 2 kept, 1 dropped" in out
    assert "dropped CCC: symbol 'CCC': 30 rows, at least 100" in out
    bbb = next(line for line in out.splitlines() if line.startswith("BBB "))
    assert bbb.split() == ["BBB", "0", "0", "0", "0", "1"]


def test_inspect_json_on_the_sample(capsys):
    rc, out, _ = _run(capsys, "inspect", "sample:sp500", "--symbols", "AOS,AAPL", "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["symbols"] == 2 and info["rows"] == 2 * 1259
    assert (info["start"], info["end"]) == ("2013-02-08", "2018-02-07")
    assert info["validation"]["repairs"] == {"AOS": {"bracket_widened": 1}}


def test_inspect_reports_bad_prints_and_gap_warnings(capsys, bars, write_frame, sp500_shared):
    rc, out, _ = _run(capsys, "inspect", str(sp500_shared), "--symbols", "AOS,CHD", "--json")
    assert rc == 0
    dropped = json.loads(out)["validation"]["dropped"]
    assert list(dropped) == ["CHD"]  # a bad print in the shared file (left out of the sample)
    assert "2014-05-19 (open 18.77 outside low 33.695" in dropped["CHD"]
    rc, out, _ = _run(capsys, "inspect", "sample:sp500", "--json")
    assert rc == 0  # every symbol of the bundled sample passes: the demo trains them all
    report = json.loads(out)["validation"]
    assert report["dropped"] == {} and json.loads(out)["symbols"] == 102
    df = bars(("AAA", "BBB"), n=450)
    df = df.drop(index=df.index[df["symbol"].eq("BBB")][50:100])  # 10 weeks of BBB missing
    rc, out, err = _run(capsys, "inspect", write_frame(df, "csv"))
    assert rc == 0, err
    assert ("warning BBB: symbol 'BBB': 1 gap between consecutive bars longer than 10 days "
            "(10 x its median spacing, at least 10 days) at 2020-03-10 -> 2020-05-20 "
            "(71 days)") in out
    rc, out, err = _run(capsys, "prepare", write_frame(df, "csv"), "--seq-len", "10",
                        "--horizons", "1")
    assert rc == 0, err
    assert "warning BBB: symbol 'BBB': 1 gap" in out


def test_inspect_lob(capsys, lob, write_frame):
    rc, out, err = _run(capsys, "inspect", write_frame(lob(("AAA",), n=12, levels=3), "parquet"),
                        "--kind", "lob")
    assert rc == 0, err
    assert "book levels: 3" in out and "ts range: 2021-03-01T09:30:00 .. " in out


@pytest.mark.parametrize(
    "argv, words",
    [
        (["inspect", "/no/such/bars.parquet"], "dataset not found: /no/such/bars.parquet"),
        (["inspect", "sample:sp500", "--symbols", "AAPL,ZZZ"], "no rows for symbols ['ZZZ']"),
        (["inspect", "sample:sp500", "--start", "someday"], "start='someday' is not a date"),
        (["prepare", "sample:sp500", "--symbols", "AAPL,,ABT"], "--symbols 'AAPL,,ABT'"),
        (["prepare", "sample:sp500", "--symbols", "AAPL,AAPL"], "given twice"),
        (["prepare", "sample:sp500", "--symbols", "AAPL", "--horizons", "1,x"], "--horizons '1,x'"),
        (["prepare", "sample:sp500", "--symbols", "AAPL", "--horizons", "0,5"], "integers >= 1"),
        (["prepare", "sample:sp500", "--symbols", "AAPL", "--horizons", "5,1"],
         "--horizons: list horizons increasing"),
        (["prepare", "sample:sp500", "--symbols", "AAPL", "--seq-len", "0"],
         "--seq-len: 0 is out of range: use an integer in [5, 512]"),
        (["prepare", "s3://b/k?bogus=1"], "unknown query parameter 'bogus'"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv, words):
    _assert_one_line_error(*_run(capsys, *argv), words)


def test_malformed_file_exits_2_with_one_line(capsys, bars, write_frame):
    df = bars(("AAA",), n=5)
    df["close"] = df["close"].astype(object)
    df.loc[2, "close"] = "oops"
    _assert_one_line_error(*_run(capsys, "inspect", write_frame(df, "csv")), "'oops'")
    renamed = bars(("AAA",), n=5).rename(columns={"close": "Close"})
    path = write_frame(renamed, "parquet", name="renamed")
    _assert_one_line_error(*_run(capsys, "inspect", path), "'Close' -> 'close'")


def test_prepare_prints_split_sizes_and_class_balance(capsys):
    from data.loading import load_bars
    from data.prepare import PrepareConfig, prepare_frame

    rc, out, err = _run(capsys, "prepare", "sample:sp500", "--symbols", "ABT,AAPL",
                        "--seq-len", "20", "--horizons", "1,5", "--json")
    assert rc == 0, err
    got = json.loads(out)
    cfg = PrepareConfig(horizons=(1, 5), seq_len=20)
    direct = prepare_frame(load_bars("sample:sp500", symbols=["ABT", "AAPL"]), cfg)
    expected = {
        (s, split): len(idx) for s, folds in direct.prepared.items()
        for split, idx in folds[0].splits.items()
    }
    assert {(r["symbol"], r["split"]): r["n"] for r in got["splits"]} == expected
    for r in got["splits"]:
        prep = direct.prepared[r["symbol"]][0]
        y = prep.y_class[prep.splits[r["split"]], 1]  # horizon 5
        assert r["balance"]["5"] == pytest.approx(np.bincount(y, minlength=3) / len(y), abs=1e-3)
    assert got["min_rows"] == cfg.min_rows() and got["dropped"] == {}

    rc, out, _ = _run(capsys, "prepare", "sample:sp500", "--symbols", "AAPL", "--seq-len", "20",
                      "--horizons", "1,5")
    assert rc == 0
    assert "prepared 1 symbol, dropped 0 (holdout, seq_len 20" in out
    train = next(line for line in out.splitlines() if line.startswith("AAPL") and "train" in line)
    assert train.split()[3] == str(expected[("AAPL", "train")])
    assert len(train.split()) == 6  # symbol fold split samples + one cell per horizon


def test_prepare_walk_forward_prints_every_fold(capsys):
    rc, out, err = _run(capsys, "prepare", "sample:sp500", "--symbols", "AAPL", "--seq-len", "10",
                        "--horizons", "1", "--split", "walk_forward", "--n-folds", "2")
    assert rc == 0, err
    folds = {line.split()[1] for line in out.splitlines() if line.startswith("AAPL ")}
    assert folds == {"0", "1"}


def test_prepare_takes_a_jobs_threshold_and_split_and_warns_on_an_empty_class(capsys):
    from data.loading import load_bars
    from data.prepare import PrepareConfig, prepare_frame

    argv = ("prepare", "sample:sp500", "--symbols", "AAPL", "--seq-len", "20",
            "--horizons", "1,5", "--threshold", "0.05,0.002", "--train", "0.6", "--val", "0.2",
            "--test", "0.2", "--purge", "8", "--embargo", "2")
    rc, out, err = _run(capsys, *argv, "--json")
    assert rc == 0, err
    got = json.loads(out)
    cfg = PrepareConfig(horizons=(1, 5), seq_len=20, threshold=(0.05, 0.002), train=0.6,
                        val=0.2, test=0.2, purge=8, embargo=2)
    assert got["config"] == cfg.to_dict()
    direct = prepare_frame(load_bars("sample:sp500", symbols=["AAPL"]), cfg).prepared["AAPL"][0]
    assert {r["split"]: r["n"] for r in got["splits"]} == {
        k: len(v) for k, v in direct.splits.items()}
    assert "h=1 (tau 0.05)" in got["warnings"]["AAPL"] and "h=5" not in got["warnings"]["AAPL"]

    rc, out, _ = _run(capsys, *argv)
    assert rc == 0 and "warning AAPL: threshold [0.05, 0.002] leaves a class under 5%" in out


def test_a_reader_that_closes_the_pipe_stops_the_command_quietly(tmp_path):
    """`quantray data inspect ... | head -1`: the closed pipe was reported as an input error
    ("error: [Errno 32] Broken pipe", status 2), or by the interpreter at exit."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes
    proc = subprocess.run([sys.executable, "-m", "service.cli", "data", "inspect",
                           "sample:sp500", "--symbols", "AAPL"], stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert (proc.returncode, proc.stderr) == (141, "")


@pytest.mark.parametrize("flags, words", [
    (("--threshold", "wide"), "--threshold 'wide': use auto"),
    (("--threshold", "0.1,0.2,0.3"), "--threshold: 3 thresholds for 4 horizons"),
    (("--purge", "1"), "--purge: purge 1 + embargo 5 = 6 bars between splits"),
    (("--train", "0.8"), "--train/--val/--test: train + val + test = 1.1; make them sum to 1"),
    (("--embargo", "-1"), "--embargo: -1 is out of range: use an integer in [0, 4096]"),
])
def test_prepare_split_and_threshold_flags_are_validated(capsys, flags, words):
    _assert_one_line_error(*_run(capsys, "prepare", "sample:sp500", "--symbols", "AAPL", *flags),
                           words)


def test_prepare_with_every_symbol_too_short_exits_2(capsys):
    rc, out, err = _run(capsys, "prepare", "sample:sp500", "--symbols", "AAPL",
                        "--start", "2018-01-01")
    _assert_one_line_error(rc, out, err, "symbol 'AAPL': 26 rows, at least")


def test_data_without_action_prints_help(capsys):
    rc, out, _ = _run(capsys)
    assert rc == 2 and "inspect" in out and "prepare" in out


def test_cli_module_imports_only_the_stdlib():
    code = (
        "import sys, data.cli; heavy = {'pandas', 'numpy', 'pyarrow', 'torch', 'ray'}"
        " & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("flags, words", [
    (("--seq-len", "600"), "--seq-len: 600 is out of range: use an integer in [5, 512] (a job's "
                           "features.seq_len)"),
    (("--seq-len", "2"), "--seq-len: 2 is out of range: use an integer in [5, 512]"),
    (("--split", "walk_forward", "--n-folds", "1"),
     "--n-folds: 1 is out of range: use an integer in [2, 20] (a job's split.n_folds)"),
    (("--horizons", "1,5000"), "--horizons: 5000 is out of range: use an integer in [1, 4096]"),
    (("--horizons", "1,2,3,4,5,6,7,8,9"), "--horizons: 9 horizons; at most 8"),
    (("--n-folds", "7"), "--n-folds 7: folds are for --split walk_forward (this split is "
                         "holdout); add --split walk_forward, or leave --n-folds out"),
])  # fmt: skip
def test_prepare_refuses_what_a_job_refuses_with_the_jobs_message(capsys, flags, words):
    """`data prepare` took seq_len 600 or 2, one walk-forward fold and horizons of 5000
    bars, which a job spec refuses."""
    from ray_jobs.spec_sections import SpecError, SplitSpec

    _assert_one_line_error(*_run(capsys, "prepare", "sample:sp500", "--symbols", "AAPL", *flags),
                           words)
    with pytest.raises(SpecError):  # the job's own check
        SplitSpec(method="walk_forward", n_folds=1)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("action", ["prepare", "inspect"])
def test_symbol_with_a_padded_twin_fails_alone(capsys, bars, write_frame, fmt, action):
    """With Parquet, 'AAA' trained on the part of its history not spelled 'AAA '; with CSV,
    the whole command failed. It is dropped with the reason, as in a job, and BBB goes on."""
    df = bars(("AAA", "BBB"), n=400)
    df.loc[df.index[df["symbol"] == "AAA"][:100], "symbol"] = "AAA "
    path = write_frame(df, fmt)
    flags = ("--horizons", "1", "--seq-len", "5") if action == "prepare" else ()
    rc, out, err = _run(capsys, action, path, "--symbols", "AAA,BBB", *flags, "--json")
    assert rc == 0, err
    got = json.loads(out)
    dropped = got["dropped"] if action == "prepare" else got["validation"]["dropped"]
    assert list(dropped) == ["AAA"]
    assert dropped["AAA"].startswith("symbol 'AAA': some of its rows are spelled 'AAA '")
    if action == "prepare":
        assert {r["symbol"] for r in got["splits"]} == {"BBB"}
    else:
        assert got["validation"]["symbols_in"] == 2 and got["validation"]["symbols_out"] == 1
    _assert_one_line_error(*_run(capsys, action, path, "--symbols", "AAA"),
                           "symbol 'AAA': some of its rows are spelled 'AAA '")
