"""The unified fit/load/evaluate API, the sequential sweep, and `quantray train`."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from data.prepared import PreparedSymbol
from models import api
from models.linear.base import LinearModel
from models.metrics import LEADERBOARD_COLUMNS
from service.cli import main

TINY_MLP = {"hidden_size": 8, "num_layers": 1, "train.epochs": 2}


def make_prepared(symbol: str = "SYN", n: int = 700, seq_len: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n + seq_len - 1, 4)).astype(np.float32)
    x = feats[seq_len - 1 :]
    y = (0.01 * (0.5 * x[:, :1] + rng.standard_normal((n, 2)))).astype(np.float32)
    splits = {"train": np.arange(0, 400), "val": np.arange(410, 550), "test": np.arange(560, n)}
    tau = np.quantile(np.abs(y[:400]), 1 / 3, axis=0).astype(np.float32)
    y_cls = np.where(y > tau, 2, np.where(y < -tau, 0, 1)).astype(np.int64)
    times = np.arange(n + seq_len - 1).astype("datetime64[D]").astype("datetime64[ns]")
    return PreparedSymbol(
        symbol, feats, tuple("abcd"), times, y, y_cls, (1, 5), seq_len, splits, tau,
        np.zeros(4, np.float32), np.ones(4, np.float32),
    )  # fmt: skip


def test_fit_dispatches_and_load_picks_the_class(tmp_path):
    p = make_prepared()
    ridge = api.fit("ridge", p)
    mlp = api.fit("mlp", p, overrides=TINY_MLP)
    assert isinstance(ridge, LinearModel) and type(mlp).__name__ == "DeepModel"
    for name, model in (("ridge", ridge), ("mlp", mlp)):
        model.save(str(tmp_path / name))
        loaded = api.load(str(tmp_path / name))
        assert type(loaded) is type(model)
        x = p.X[p.splits["test"]]
        np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
        rows = api.evaluate(loaded, p)
        assert len(rows) == 4 and all(r["model"] == name for r in rows)
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        api.load(str(tmp_path / "nothing"))


def test_linear_fit_rejects_deep_only_arguments():
    p = make_prepared()
    with pytest.raises(ValueError, match="callbacks"):
        api.fit("ols", p, callbacks=[object()])
    with pytest.raises(ValueError, match="resume_from"):
        api.fit("ols", p, resume_from="/tmp/ckpt")
    with pytest.raises(ValueError, match="CPU"):
        api.fit("lasso", p, device="cuda")


def test_train_symbols_keeps_going_after_a_failed_unit(tmp_path):
    data = {"AAA": make_prepared("AAA"), "BBB": [make_prepared("BBB", seed=1)]}
    calls = []
    rows = api.train_symbols(
        data, ["ridge", "no_such_model", "ols"], "fast", None, "direction",
        progress=lambda done, total, label: calls.append((done, total, label)),
        ensembles=True, save_dir=str(tmp_path),
    )  # fmt: skip
    assert [c[:2] for c in calls] == [(i, 6) for i in range(1, 7)]
    assert "FAILED" in calls[1][2]
    for symbol in ("AAA", "BBB"):
        mine = [r for r in rows if r["symbol"] == symbol]
        errors = [r for r in mine if r["error"]]
        assert {r["model"] for r in errors} == {"no_such_model"} and len(errors) == 2
        assert "no_such_model" in errors[0]["error"]
        good = [r for r in mine if not r["error"]]
        assert {r["model"] for r in good} == {"ridge", "ols", "ensemble_equal", "ensemble_f1"}
        assert len(good) == 4 * 2 * 2  # models x splits x horizons
        assert (tmp_path / symbol / "ridge" / "metadata.json").is_file()
    assert all(list(r) == LEADERBOARD_COLUMNS for r in rows)


def test_train_symbols_rejects_overrides_for_absent_models():
    with pytest.raises(ValueError, match="lstm"):
        api.train_symbols({"AAA": make_prepared()}, ["ridge"], overrides={"lstm": {}})


def _train(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["train", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_rows_have_exactly_the_leaderboard_columns(capsys, tmp_path):
    code, out, err = _train(
        capsys, "--data", "sample:sp500", "--symbols", "AAPL", "--models", "ridge,mlp",
        "--horizons", "1,5", "--output", "json", "--save-dir", str(tmp_path),
        "--overrides", json.dumps({"mlp": TINY_MLP}),
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 4 * 2 * 2  # (ridge, mlp, 2 ensembles) x splits x horizons
    assert all(list(r) == LEADERBOARD_COLUMNS for r in rows)
    assert {r["model"] for r in rows} == {"ridge", "mlp", "ensemble_equal", "ensemble_f1"}
    assert all(r["symbol"] == "AAPL" and r["error"] is None for r in rows)
    assert "2/2" in err  # progress bar on stderr
    assert api.load(str(tmp_path / "AAPL" / "mlp")).name == "mlp"


def test_cli_csv_and_table_outputs(capsys):
    code, out, _ = _train(capsys, "--data", "sample:sp500", "--symbols", "AAPL,ABBV",
                          "--models", "ols", "--horizons", "5", "--output", "csv")
    assert code == 0
    records = list(csv.DictReader(io.StringIO(out)))
    assert list(records[0]) == LEADERBOARD_COLUMNS and len(records) == 2 * 2
    code, out, _ = _train(capsys, "--data", "sample:sp500", "--symbols", "AAPL",
                          "--models", "lasso", "--horizons", "1")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["symbol", "model", "h", "split"] and len(lines) == 3
    head = lines[0].split()
    assert head[head.index("ic"):head.index("ic") + 2] == ["ic", "ic_p"]  # the IC's test


def test_cli_table_of_walk_forward_rows_names_each_fold(capsys):
    """Walk-forward gives each (model, horizon, split) once per fold: the table shows the
    fold, or its rows could not be told apart."""
    code, out, err = _train(capsys, "--data", "sample:sp500", "--symbols", "AAPL",
                            "--models", "ols", "--horizons", "1", "--split", "walk_forward",
                            "--no-ensembles")  # fmt: skip
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[:5] == ["symbol", "model", "h", "split", "fold"]
    keys = [tuple(line.split()[:5]) for line in lines[1:]]
    assert len(keys) == 3 * 2 and len(set(keys)) == len(keys)  # folds x splits, all distinct
    assert sorted({k[4] for k in keys}) == ["0", "1", "2"]


def test_cli_trains_on_order_book_snapshots_with_kind_lob(capsys, tmp_path):
    """LOB files train in this process too (`--kind lob`); ridge finds the planted
    imbalance signal. Without the flag, the error names it."""
    from data.synthetic import planted_lob

    frame, _ = planted_lob(1, 3000, levels=3, seed=1)
    path = tmp_path / "lob.parquet"
    frame.to_parquet(path)
    code, out, err = _train(capsys, "--data", str(path), "--kind", "lob", "--symbols", "LOB00",
                            "--models", "ridge", "--horizons", "1", "--output", "json",
                            "--no-ensembles")  # fmt: skip
    assert code == 0, err
    test = [r for r in json.loads(out) if r["split"] == "test"]
    assert len(test) == 1 and test[0]["error"] is None
    assert test[0]["accuracy"] > test[0]["baseline_accuracy"] and test[0]["p_value"] < 0.01
    code, _, err = _train(capsys, "--data", str(path), "--symbols", "LOB00", "--models", "ridge")
    assert code == 2 and "(`--kind lob` on the command line)" in err


def test_cli_dropped_symbol_fails_alone_with_error_rows(capsys, tmp_path):
    from data.loading import load_bars

    frame = load_bars("sample:sp500", symbols=["AAPL", "ABBV"])
    frame.loc[frame.index[frame["symbol"] == "ABBV"][100], "close"] = float("nan")
    path = tmp_path / "bars.parquet"
    frame.to_parquet(path)
    code, out, err = _train(capsys, "--data", str(path), "--symbols", "AAPL,ABBV",
                            "--models", "ols,ridge", "--horizons", "1,5", "--output", "json")
    assert code == 1  # not every unit trained
    rows = json.loads(out)
    bad = [r for r in rows if r["symbol"] == "ABBV"]
    assert len(bad) == 2 * 2 and all("NaN close" in r["error"] for r in bad)
    assert {r["model"] for r in bad} == {"ols", "ridge"}
    assert all(r["error"] is None for r in rows if r["symbol"] == "AAPL")
    assert "warning: ABBV dropped" in err


def test_cli_seq_len_is_the_window_of_sequence_models(capsys):
    lstm = {"hidden_size": 8, "train.epochs": 1}
    code, out, err = _train(capsys, "--data", "sample:sp500", "--symbols", "AAPL",
                            "--models", "lstm,ridge", "--horizons", "1", "--seq-len", "12",
                            "--no-ensembles", "--output", "json",
                            "--overrides", json.dumps({"lstm": lstm}))
    assert code == 0, err
    assert all(r["error"] is None for r in json.loads(out))
    # a model's own seq_len override wins, and the data is prepared for the longest window
    code, out, err = _train(capsys, "--data", "sample:sp500", "--symbols", "AAPL",
                            "--models", "lstm", "--horizons", "1", "--seq-len", "12",
                            "--no-ensembles", "--output", "json",
                            "--overrides", json.dumps({"lstm": {**lstm, "seq_len": 16}}))
    assert code == 0, err


@pytest.mark.parametrize(
    ("models", "seq_len", "window"),
    [("ols,ridge", None, 60), ("mlp,ridge", None, 60), ("mlp,lstm", "20", 20),
     ("ridge", "20", 20)],
)  # fmt: skip
def test_cli_window_matches_a_jobs_default(models, seq_len, window):
    """`quantray train` prepares the samples a job with the same settings prepares: the
    window is --seq-len or a job's features.seq_len default, whatever the models (it was
    1 for linear models alone, and mlp's unused preset seq_len of 30 entered it), so the
    two paths score the same test samples."""
    import argparse

    from models import cli
    from ray_jobs.spec_sections import FeaturesSpec

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    argv = ["train", "--data", "sample:sp500", "--symbols", "AAPL", "--models", models]
    args = parser.parse_args(argv + (["--seq-len", seq_len] if seq_len else []))
    assert cli._parse(args)["seq_len"] == window
    if seq_len is None:
        assert window == FeaturesSpec().seq_len


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--symbols", "AAPL", "--models", "ridge"], "--data"),
        (["--data", "sample:sp500", "--models", "ridge"], "--symbols"),
        (["--data", "sample:sp500", "--symbols", "AAPL", "--models", "ridgee"], "--models"),
        (["--data", "sample:sp500", "--symbols", "AAPL", "--models", "ridge", "--horizons",
          "1,0"], "--horizons"),
        (["--data", "sample:sp500", "--symbols", "AAPL", "--models", "ridge", "--output",
          "xml"], "--output"),
        (["--data", "sample:sp500", "--symbols", "AAPL", "--models", "ridge", "--preset",
          "turbo"], "--preset"),
        (["--data", "sample:sp500", "--symbols", "AAPL", "--models", "ridge", "--seq-len",
          "-3"], "--seq-len"),
        (["--data", "sample:sp500", "--symbols", "AAPL", "--models", "ridge", "--overrides",
          "{bad"], "--overrides"),
        (["--data", "/nonexistent/bars.parquet", "--symbols", "AAPL", "--models", "ridge"],
         "--data"),
        (["--data", "sample:sp500", "--symbols", "AAPL,ZZZZ", "--models", "ridge"], "--symbols"),
        (["--data", "sample:sp500", "--symbols", "AAPL", "--models", "ridge", "--horizons",
          "1,5,01"], "--horizons='1,5,01' lists 1 twice"),
        (["--data", "sample:sp500", "--symbols", "AAPL", "--models", "ridge", "--horizons",
          "1,,5"], "--horizons='1,,5' has an empty item; use comma-separated values, e.g. "
         "--horizons 1,5"),
        (["--data", "sample:sp500", "--symbols", "AAPL", "--models", "ridge", "--seq-len",
          "5,6"], "--seq-len='5,6': give one window length"),
        # the bounds of a job's features.seq_len
        (["--data", "sample:sp500", "--symbols", "AAPL", "--models", "ridge", "--seq-len",
          "1"], "--seq-len='1': use a window of 5 to 512 bars"),
        (["--data", "sample:sp500", "--symbols", "AAPL", "--models", "lstm", "--seq-len",
          "513"], "--seq-len='513': use a window of 5 to 512 bars"),
        (["--data", "sample:sp500", "--symbols", "AAPL", "--models", "lstm", "--overrides",
          '{"lstm": {"seq_len": 2}}'], "lstm.seq_len=2: use a window of 5 to 512 bars"),
        (["--data", "sample:sp500", "--symbols", "BRK.B,BRK/B", "--models", "ridge",
          "--save-dir", "/tmp/unused"], "would both be saved under 'BRK_B'"),
        # a window on a model that reads one bar was accepted and ignored
        (["--data", "sample:sp500", "--symbols", "AAPL", "--models", "mlp,ridge",
          "--overrides", '{"mlp": {"seq_len": 7}}'],
         "--overrides: mlp.seq_len: mlp reads each bar's features alone"),
        (["--data", "sample:sp500", "--symbols", "AAPL", "--models", "ols", "--overrides",
          '{"ols": {"seq_len": 7}}'], "--overrides: ols.seq_len: ols reads each bar's"),
        # a file where the folder goes: every unit trained, then failed to save
        (["--data", "sample:sp500", "--symbols", "AAPL", "--models", "ridge", "--save-dir",
          "{file}/sub"], "is a file, not a directory; give a directory"),
    ],
)  # fmt: skip
def test_cli_bad_input_is_one_line_naming_the_flag(capsys, tmp_path, args, flag):
    (tmp_path / "file").write_text("x")
    args = [a.replace("{file}", str(tmp_path / "file")) for a in args]
    code, out, err = _train(capsys, *args)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "Traceback" not in err


def test_cli_save_dir_refuses_a_symbol_too_long_to_name_a_folder_before_training(
        capsys, tmp_path):
    """A 300-character symbol trained, then every unit failed to save (OSError: File name
    too long). With --save-dir the CLI refuses it up front, by a job's rule (at most 32
    characters), naming the symbol and what to do; without --save-dir it still trains."""
    from tests.data.conftest import make_bars

    long = "L" * 300
    path = tmp_path / "long.parquet"
    make_bars((long, "OK"), n=400).to_parquet(path)
    flags = ["--data", str(path), "--symbols", f"{long},OK", "--models", "ols", "--horizons",
             "1", "--seq-len", "10", "--output", "json"]
    code, out, err = _train(capsys, *flags, "--save-dir", str(tmp_path / "saved"))
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"--symbols: '{'L' * 32}'... (300 characters) cannot name its folder in " \
           "--save-dir" in lines[0]
    assert "longer than 32 characters; rename it in the data, or train it without " \
           "--save-dir" in lines[0]
    assert not (tmp_path / "saved").exists()  # nothing trained, nothing saved
    code, out, _ = _train(capsys, *flags)
    assert code == 0 and {r["symbol"] for r in json.loads(out)} == {long, "OK"}


def test_a_symbol_of_non_ascii_letters_is_refused_with_one_accurate_reason_in_cli_and_job(
        capsys, tmp_path):
    """`日本株` has letters, only no ASCII one to name files by: `train --save-dir` said it
    had "no letter or digit", a job "no ASCII letter or digit". Both now give one reason,
    which says its letters are not ASCII."""
    from data.symbols import safe_symbol
    from ray_jobs.spec import JobSpec, SpecError
    from tests.data.conftest import make_bars

    path = tmp_path / "jp.parquet"
    make_bars(("日本株", "OK"), n=400).to_parquet(path)
    code, out, err = _train(capsys, "--data", str(path), "--symbols", "日本株,OK", "--models",
                            "ols", "--horizons", "1", "--save-dir", str(tmp_path / "saved"))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SpecError) as info:
        JobSpec.from_dict({"name": "jp", "dataset": {"uri": str(path), "symbols": ["日本株"]},
                           "models": ["ols"]})
    job = dict(info.value.errors)["dataset.symbols[0]"]
    reason = ("has no ASCII letter or digit (A-Z, a-z, 0-9) to name its files by: its letters "
              "and digits are not ASCII, and file names keep only ASCII ones")
    assert job == f"'日本株' is not a usable symbol: {reason}"
    assert f"--symbols: '日本株' cannot name its folder in --save-dir, as a job refuses it: " \
           f"{reason}; rename it in the data, or train it without --save-dir" in err
    with pytest.raises(ValueError) as raised:
        safe_symbol("日本株")  # the planner's and the result files' check
    assert str(raised.value) == f"symbol '日本株' {reason}"
    # a symbol with no letter at all is not said to have non-ASCII ones
    with pytest.raises(ValueError, match=r"^symbol '///' has no ASCII letter or digit "
                                         r"\(A-Z, a-z, 0-9\) to name its files by$"):
        safe_symbol("///")


def test_cli_module_imports_only_the_standard_library():
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import models.cli\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "extra = new - set(sys.stdlib_module_names)\n"
        "assert extra <= {'models'}, extra\n"
        "assert 'models.registry' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_prints_the_data_warnings_of_kept_symbols(capsys, tmp_path):
    """A kept symbol with a long gap between bars trains, and says so on stderr (as
    `quantray data prepare` and a job's log do)."""
    from data.loading import load_bars

    frame = load_bars("sample:sp500", symbols=["AAPL"])
    frame = frame.drop(frame.index[400:420])  # 20 trading days missing: a 4-week gap
    path = tmp_path / "gap.csv"
    frame.to_csv(path, index=False)
    code, out, err = _train(capsys, "--data", str(path), "--symbols", "AAPL", "--models", "ols",
                            "--horizons", "1", "--output", "csv")
    assert code == 0 and len(list(csv.DictReader(io.StringIO(out)))) == 2
    assert "warning: AAPL (kept): symbol 'AAPL': 1 gap between consecutive bars" in err


def _padded_twin_file(tmp_path, fmt: str) -> str:
    from data.loading import load_bars

    frame = load_bars("sample:sp500", symbols=["AAPL", "ABBV"])
    frame.loc[frame.index[frame["symbol"] == "ABBV"][:300], "symbol"] = "ABBV "
    path = tmp_path / f"bars.{fmt}"
    frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    return str(path)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_cli_symbol_with_a_padded_twin_fails_alone(capsys, tmp_path, fmt):
    """Parquet: ABBV trained on the 959 rows not spelled 'ABBV ', silently; CSV: exit 2 and
    AAPL untrained. Now ABBV gets error rows with the reason, as in a job, and AAPL
    trains (exit 1, as for any symbol whose data fails)."""
    code, out, err = _train(capsys, "--data", _padded_twin_file(tmp_path, fmt), "--symbols",
                            "AAPL,ABBV", "--models", "ols", "--horizons", "1", "--output", "json")
    assert code == 1, err
    rows = json.loads(out)
    bad = [r for r in rows if r["symbol"] == "ABBV"]
    assert bad and all("some of its rows are spelled 'ABBV '" in r["error"] for r in bad)
    assert [r["error"] for r in rows if r["symbol"] == "AAPL"] == [None, None]
    assert "warning: ABBV dropped: symbol 'ABBV': some of its rows are spelled" in err


def test_cli_unknown_symbol_names_the_files_spelling(capsys):
    code, _, err = _train(capsys, "--data", "sample:sp500", "--symbols", "aapl", "--models", "ols")
    assert code == 2
    assert "--symbols: ['aapl'] not in --data sample:sp500; it holds 102 symbols; the file " \
           "spells 'AAPL': symbols match exactly, case and spaces included" in err


def test_cli_names_every_missing_column_at_once(capsys, tmp_path):
    """`list_symbols` checked the symbol column alone, so a Yahoo-style file was fixed one
    error at a time."""
    path = tmp_path / "AAPL.csv"
    path.write_text("Date,Open,High,Low,Close,Adj Close,Volume\n2013-02-08,1,1.1,0.9,1,1,10\n")
    code, _, err = _train(capsys, "--data", str(path), "--symbols", "AAPL", "--models", "ols")
    assert code == 2
    assert "missing columns ['symbol', 'date', 'open', 'high', 'low', 'close', 'volume']" in err
    assert "there is no symbol column: add one" in err and "'Close' -> 'close'" in err


@pytest.mark.parametrize(("flags", "words"), [
    (("--split", "walk_forward", "--n-folds", "1"),
     "--n-folds: 1 is out of range: use an integer in [2, 20] (a job's split.n_folds)"),
    (("--horizons", "1,5000"), "--horizons: 5000 is out of range: use an integer in [1, 4096]"),
    (("--train", "0.8"), "--train/--val/--test: train + val + test = 1.1; make them sum to 1"),
    (("--threshold", "0.1,0.2"), "--threshold: 2 thresholds for 4 horizons"),
    (("--n-folds", "5"), "--n-folds 5: folds are for --split walk_forward (this split is "
                         "holdout); add --split walk_forward, or leave --n-folds out"),
])  # fmt: skip
def test_cli_refuses_what_a_job_refuses(capsys, flags, words):
    code, out, err = _train(capsys, "--data", "sample:sp500", "--symbols", "AAPL", "--models",
                            "ols", *flags)
    assert code == 2 and out == "" and words in err, err


def test_cli_split_and_threshold_flags_prepare_as_data_prepare(capsys, monkeypatch):
    """`quantray train` had no --threshold/--n-folds/--train/--val/--test/--purge/--embargo,
    so it could not reproduce a job with other settings; it takes data prepare's flags and
    prepares with the same config."""
    import data.prepare

    configs = []
    real = data.prepare.prepare_frame

    def spy(frame, cfg, **kwargs):
        configs.append(cfg)
        return real(frame, cfg, **kwargs)

    monkeypatch.setattr(data.prepare, "prepare_frame", spy)
    flags = ("--horizons", "1", "--seq-len", "10", "--split", "walk_forward", "--n-folds", "4",
             "--train", "0.5", "--val", "0.1", "--test", "0.4", "--purge", "2", "--embargo", "1",
             "--threshold", "0")
    code, out, err = _train(capsys, "--data", "sample:sp500", "--symbols", "AAPL", "--models",
                            "ols", "--output", "json", *flags)
    assert code == 0, err
    assert sorted({r["fold"] for r in json.loads(out)}) == [0, 1, 2, 3]
    assert main(["data", "prepare", "sample:sp500", "--symbols", "AAPL", "--json", *flags]) == 0
    assert json.loads(capsys.readouterr()[0])["config"] == configs[0].to_dict()
    assert (configs[0].threshold, configs[0].purge, configs[0].embargo, configs[0].train) == (
        0.0, 2, 1, 0.5)


def test_the_table_shows_an_undefined_metric_as_not_applicable_ones_do():
    """A constant forecast's IC is NaN (undefined): the table printed `nan` there and `-`
    for a metric the model does not have; both are `-`."""
    from models.cli import format_table
    from models.metrics import empty_row

    row = empty_row("AAL", "lasso", 1, "test", 0)
    row.update(accuracy=0.4, r2=-0.01, ic=float("nan"), ic_p_value=float("nan"))
    header, line = format_table([row]).splitlines()
    cells = dict(zip(header.split(), line.split(), strict=False))
    assert cells["acc"] == "0.400" and cells["ic"] == "-" and cells["ic_p"] == "-"
    assert "nan" not in line
