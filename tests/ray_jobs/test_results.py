"""The summary of a walk-forward job: a symbol's folds are averaged first, so the mean and
std are over symbols (as the README says) and wins are per symbol."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ray_jobs.results import SUMMARY_METRICS, format_summary_table, summarize


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


def test_the_share_of_significant_ics_is_summarized_beside_the_accuracy_one() -> None:
    acc = {("AAA", "ridge", 0): 0.4, ("BBB", "ridge", 0): 0.4, ("CCC", "ridge", 0): 0.4,
           ("AAA", "lstm", 0): 0.4}  # fmt: skip
    f = frame(acc)
    f["ic_p_value"] = [0.001, 0.2, 0.004, np.nan]  # lstm: a classifier, no return forecast
    summary = summarize(f)
    by = {e["model"]: e for e in summary["models"]}
    assert by["ridge"]["share_ic_significant_1pct"] == pytest.approx(2 / 3)
    assert by["ridge"]["ic_p_value"]["mean"] == pytest.approx((0.001 + 0.2 + 0.004) / 3)
    assert by["ridge"]["share_significant_1pct"] == 0.0
    assert by["lstm"]["share_ic_significant_1pct"] is None
    table = format_summary_table(summary).splitlines()
    assert table[0].split()[-2:] == ["sig<1%", "ic<1%"]
    assert table[2].split()[-2:] == ["0%", "-"] and table[2].startswith("lstm")
    assert table[3].split()[-2:] == ["0%", "67%"] and table[3].startswith("ridge")


def test_the_printed_summary_gives_a_metrics_own_count_where_fewer_symbols_have_it() -> None:
    """A lasso shrunk to a constant on some symbols has no IC there: its IC mean over 2
    symbols sat beside ridge's over 3 with nothing to tell them apart (`quantray summary`,
    the demo). And `sig<1%` is a share of symbol x fold tests, not of symbols."""
    from service.cli_format import summary_text

    acc = {(s, m, 0): 0.4 for s in ("AAA", "BBB", "CCC") for m in ("lasso", "ridge")}
    f = frame(acc)
    f["ic"] = [0.05, 0.02, 0.01, 0.03, np.nan, 0.04]  # rows: AAA lasso, AAA ridge, ...
    text = summary_text(summarize(f))
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:]}
    ic = text.splitlines()[1].split().index("IC")
    assert rows["lasso"][ic:ic + 2] == ["0.030", "(2)"]  # AAA 0.05, BBB 0.01
    assert rows["ridge"][ic:ic + 2] == ["0.030", "0%"]  # all 3 symbols: no count
    assert "share of tests, one per symbol and fold" in text


def test_a_report_over_deleted_job_files_names_the_storage(tmp_path) -> None:
    """Units without a status at the report: when the job's own files are gone too (its
    bucket removed or replaced while it ran: a missing bucket lists as empty), the error
    names the storage and what to do, not "N units have no status" alone."""
    from ray_jobs.planner import plan
    from ray_jobs.reporting import write_results
    from ray_jobs.spec import JobSpec
    from ray_jobs.storage import JobStorage, StorageError

    spec = JobSpec.from_dict({"name": "gone", "models": ["ols"],
                              "dataset": {"uri": "sample:sp500", "symbols": ["AAPL"]}})
    storage = JobStorage((tmp_path / "store").as_uri(), "gone")
    units = plan(spec, ["AAPL"])
    with pytest.raises(StorageError, match="spec.json is gone") as info:
        write_results(spec, units, storage, [], {}, elapsed_s=1.0)
    assert info.value.uri == storage.uri_of("") and "resume the job" in str(info.value)



def test_units_that_ended_without_a_readable_status_fail_alone_in_the_report(
    tmp_path,
) -> None:
    """A worker without the storage's credentials cannot store its units' statuses (real
    S3 refuses the write; moto stored an unsigned chunked body, which does not parse): the
    report fails those units with why, and writes the leaderboard and summary of the
    rest, instead of raising "N units have no status" and writing nothing."""
    from ray_jobs.planner import plan
    from ray_jobs.reporting import write_results
    from ray_jobs.spec import JobSpec
    from ray_jobs.storage import JobStorage

    spec = JobSpec.from_dict({"name": "lost", "models": ["ols", "ridge"],
                              "dataset": {"uri": "sample:sp500", "symbols": ["AAPL", "MSFT"]}})
    storage = JobStorage((tmp_path / "store").as_uri(), "lost")
    storage.write_spec(spec.to_dict())
    units = plan(spec, ["AAPL", "MSFT"])
    ids = sorted(u.unit_id for u in units.units)
    for unit_id in ids[:2]:  # AAPL's two units: stored as the worker's garbled body
        storage.write_bytes(f"status/{unit_id}.json", b'9E7\r\n{"state": "done"}\r\n0\r\n')
    denied = "OSError: AWS Error ACCESS_DENIED during GetObject operation"
    summary = write_results(spec, units, storage, [], {"MSFT": denied}, elapsed_s=1.0)
    errors = {f["unit_id"]: f["error"] for f in summary["failed_units"]}
    assert sorted(errors) == ids
    where = f"no readable status was stored for this unit under {storage.uri_of('status')}: "
    assert errors[ids[0]] == where + (
        "the Ray worker that ran it could not write the job's storage (its credentials, or a "
        "storage fault: the driver's log has the worker's warning); resume the job to run it "
        "again")
    assert errors[ids[2]] == where + denied + "; resume the job to run it again"
    assert summary["units_reported"] == 4 and summary["not_finished"] == 0
    board = pd.read_csv(tmp_path / "store" / "jobs" / "lost" / "results" / "leaderboard.csv")
    assert set(board["unit_id"]) == set(ids) and board["error"].notna().all()
    assert len(board) == 4 * len(spec.target.horizons)
    # with the run's progress: a unit it counted done is counted failed (progress.json
    # agrees with the summary), and a unit that never ended in this run is a bug, said so
    from ray_jobs.progress import ProgressTracker

    tracker = ProgressTracker(4, job_id="lost")
    for unit_id in ids[:2]:
        tracker.unit_done(unit_id)
    for unit_id in ids[2:]:
        tracker.unit_failed(unit_id, denied)
    write_results(spec, units, storage, [], {"MSFT": denied}, elapsed_s=1.0, tracker=tracker)
    doc = tracker.to_dict()
    assert doc["units"]["done"] == 0 and doc["units"]["failed"] == 4, doc
    with pytest.raises(RuntimeError, match="4 units neither ended in this run nor have a "):
        write_results(spec, units, storage, [], {}, elapsed_s=1.0,
                      tracker=ProgressTracker(4, job_id="lost"))


@pytest.mark.parametrize("method", ["walk_forward", "holdout"])
def test_a_walk_forward_report_draws_its_folds(tmp_path, method: str) -> None:
    """write_results adds folds.png (each model per fold) to a walk-forward job's plots;
    a holdout job (one fold) has none."""
    from ray_jobs.planner import plan
    from ray_jobs.reporting import write_results
    from ray_jobs.spec import JobSpec
    from ray_jobs.storage import JobStorage

    split = {"method": method, "n_folds": 3} if method == "walk_forward" else {}
    spec = JobSpec.from_dict({"name": "wf", "models": ["ols", "ridge"], "split": split,
                              "dataset": {"uri": "sample:sp500", "symbols": ["AAPL", "AMZN"]},
                              "target": {"kind": "direction", "horizons": [1]}})  # fmt: skip
    storage = JobStorage((tmp_path / "store").as_uri(), "wf")
    storage.write_spec(spec.to_dict())
    units = plan(spec, ["AAPL", "AMZN"])
    for u in units.units:
        row = {"symbol": u.symbol, "model": u.model, "horizon": 1, "split": "test",
               "fold": u.fold, "accuracy": 0.4 + 0.01 * u.fold, "macro_f1": 0.3,
               "baseline_accuracy": 0.45, "p_value": 0.5, "unit_id": u.unit_id}  # fmt: skip
        storage.write_unit_status(u.unit_id, {"state": "done", "rows": [row]})
    summary = write_results(spec, units, storage, [], {}, elapsed_s=1.0)
    assert summary["models"][0]["n_folds"] == spec.split.folds
    plots = {p.name for p in (tmp_path / "store" / "jobs" / "wf" / "results" / "plots").iterdir()}
    expected = {"comparison.png", "heatmap_macro_f1.png"}
    assert plots == (expected | {"folds.png"} if method == "walk_forward" else expected)


def test_the_report_names_each_unit_a_bounded_number_of_times(tmp_path, monkeypatch) -> None:
    """summary.json's failed_units checked each failed unit against a set of the plan's
    unit ids built anew for it: 0.1 s per failed unit in a 505-symbol, 8-fold job (34 s
    for its 456 failed units; 20 min if all 12,120 fail). The set is built once now."""
    from ray_jobs.planner import Unit, plan
    from ray_jobs.reporting import write_results
    from ray_jobs.spec import JobSpec
    from ray_jobs.storage import JobStorage

    symbols = [f"S{i:02d}" for i in range(40)]
    spec = JobSpec.from_dict({"name": "bad", "models": ["ols", "ridge", "lasso"],
                              "dataset": {"uri": "sample:sp500", "symbols": symbols},
                              "target": {"kind": "direction", "horizons": [1]}})  # fmt: skip
    storage = JobStorage((tmp_path / "store").as_uri(), "bad")
    storage.write_spec(spec.to_dict())
    units = plan(spec, symbols)
    for u in units.units:  # every unit failed (its data)
        storage.write_unit_status(u.unit_id, {"state": "failed", "error": "data: too short",
                                              "rows": [{"symbol": u.symbol, "model": u.model,
                                                        "horizon": 1, "split": "test",
                                                        "error": "data: too short"}]})  # fmt: skip
    calls = [0]
    unit_id = Unit.unit_id

    def counted(self: Unit) -> str:
        calls[0] += 1
        return unit_id.fget(self)

    monkeypatch.setattr(Unit, "unit_id", property(counted))
    summary = write_results(spec, units, storage, [], {}, elapsed_s=1.0)
    n = len(units.units)
    assert len(summary["failed_units"]) == n == 120
    assert calls[0] <= 3 * n  # was n * (n + 1): 14,520


def test_each_summary_metric_counts_the_symbols_behind_its_mean() -> None:
    """A constant forecast has no ic: lasso shrunk to a constant on BBB and CCC leaves its
    ic mean over AAA alone, which the entry says (n 1 of 3), while the accuracy is over 3;
    an undefined ic test counts as not significant in the share."""
    acc = {("AAA", "lasso", 0): 0.4, ("BBB", "lasso", 0): 0.5, ("CCC", "lasso", 0): 0.6}
    f = frame(acc)
    f["ic"] = [0.2, np.nan, np.nan]
    f["ic_p_value"] = [0.001, np.nan, np.nan]
    lasso = summarize(f)["models"][0]
    assert lasso["n_symbols"] == 3
    assert lasso["accuracy"] == {"mean": pytest.approx(0.5), "std": pytest.approx(0.1), "n": 3}
    assert lasso["ic"] == {"mean": pytest.approx(0.2), "std": None, "n": 1}
    assert lasso["share_ic_significant_1pct"] == pytest.approx(1 / 3)
    # constant on every symbol: no ic test anywhere, and none significant (it said None,
    # as for a classifier, which has no return forecast: no rmse)
    f["ic"], f["ic_p_value"], f["rmse"] = np.nan, np.nan, [0.01, 0.02, 0.03]
    assert summarize(f)["models"][0]["share_ic_significant_1pct"] == 0.0
    f["rmse"] = np.nan
    assert summarize(f)["models"][0]["share_ic_significant_1pct"] is None


def _row(symbol: str, model: str, split: str, value: float, fold: int = 0,
         p_value: float = 0.5) -> dict:
    row = dict.fromkeys(SUMMARY_METRICS, np.nan)
    row.update(symbol=symbol, model=model, horizon=1, fold=fold, split=split, error=None,
               accuracy=value, macro_f1=value, p_value=p_value)
    return row


def test_the_summary_scores_only_the_requested_split() -> None:
    rows = [_row("AAA", "ols", "val", 0.9), _row("AAA", "ols", "test", 0.4),
            _row("BBB", "ols", "val", 0.8), _row("BBB", "ols", "test", 0.6),
            # mlp is better on val, worse on test: it must win nothing on test
            _row("AAA", "mlp", "val", 0.95), _row("AAA", "mlp", "test", 0.3)]
    f = pd.DataFrame(rows)
    test = summarize(f)
    by = {e["model"]: e for e in test["models"]}
    assert test["split"] == "test"
    assert by["ols"]["accuracy"]["mean"] == pytest.approx(0.5)  # (0.4 + 0.6) / 2
    assert by["mlp"]["accuracy"]["mean"] == pytest.approx(0.3)
    assert test["wins"] == {"1": {"ols": 2}}
    val = summarize(f, split="val")
    assert {e["model"]: e for e in val["models"]}["ols"]["accuracy"]["mean"] == \
        pytest.approx(0.85)
    assert val["wins"] == {"1": {"mlp": 1, "ols": 1}}


def test_folds_are_averaged_by_their_mean_and_significance_is_at_one_percent() -> None:
    rows = [_row("AAA", "ols", "test", v, fold=k, p_value=p)
            for k, (v, p) in enumerate([(0.4, 0.005), (0.5, 0.02), (0.9, np.nan)])]
    ols = summarize(pd.DataFrame(rows))["models"][0]
    assert ols["accuracy"]["mean"] == pytest.approx(0.6)  # the mean of 0.4, 0.5, 0.9
    # 0.005 is significant, 0.02 is not (1%, not 5%), NaN (undefined) is not: 1 of 3
    assert ols["share_significant_1pct"] == pytest.approx(1 / 3)


def test_the_printed_summary_names_symbols_left_out_and_data_warnings() -> None:
    """A symbol left out of `symbols: N` (its name clashes with another's) has no unit, so
    no row in the table, and a 20:1 split's warning was in summary.json alone: `quantray
    summary` and the demo said "summary over 2 symbols" and nothing more."""
    from service.cli_format import MESSAGE_SHOWN, summary_text

    summary = summarize(frame({(s, "ols", 0): 0.4 for s in ("AAA", "BRK.B")}))
    assert "could not be used" not in summary_text(summary)
    summary["data_errors"] = {"BRK_B": "data: symbol 'BRK_B' left out: it and 'BRK.B' both "
                                       "name their files 'BRK_B'; rename one in the data"}
    summary["data_warnings"] = {"AAA": "x" * 1000, "ZZZ": "a jump"}
    notes = summary_text(summary).split("\n\n")[-1].splitlines()
    assert notes[0] == ("1 symbol could not be used (each in summary.json's data_errors: "
                        "`quantray summary ID --json`), e.g. BRK_B: data: symbol 'BRK_B' left "
                        "out: it and 'BRK.B' both name their files 'BRK_B'; rename one in the "
                        "data")
    assert notes[1].startswith("2 symbols were kept with a data warning (each in "
                               "summary.json's data_warnings")
    assert notes[1].endswith(f"e.g. AAA: {'x' * MESSAGE_SHOWN}...")
    summary["data_warnings"] = {"AAA": None}  # one, and an older job's odd shapes: no crash
    assert "1 symbol was kept with a data warning" in summary_text(summary)
    for odd in (["BRK_B"], "BRK_B", {"BRK_B": 7}):
        summary["data_errors"] = odd
        summary_text(summary)
