"""Planner: stable unit ids and run names, grouping sizes, walk-forward folds, tune trials,
resume with `pending`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ray_jobs.planner import (
    OVERHEAD_BUDGET,
    SEARCH_FOLD,
    WAVES,
    Plan,
    Unit,
    auto_units_per_run,
    estimate_deep_s,
    plan,
    safe_symbol,
    whole_symbols,
)
from ray_jobs.spec import JobSpec

SYMBOLS = [f"S{i:03d}" for i in range(102)]
MODELS = ["ols", "ridge", "lasso", "mlp", "lstm", "cnn", "deeplob", "seq2seq", "transformer",
          "temporal_attention"]  # fmt: skip


def spec(**kw) -> JobSpec:
    d = {"name": "t", "dataset": {"uri": "sample:sp500", "symbols": 102}, "models": MODELS}
    d.update(kw)
    return JobSpec.from_dict(d)


def test_unit_ids_are_stable_and_path_safe() -> None:
    assert Unit("AAPL", "lstm").unit_id == "AAPL__lstm__f0"
    assert Unit("BRK.B", "lstm", 2, 7).unit_id == "BRK_B__lstm__f2__t007"
    assert Unit("BRK.B", "lstm", 2, 7).rel_dir == "units/BRK_B/lstm/f2/t007"
    assert Unit("^GSPC", "ols").kind == "linear"
    assert Unit("^GSPC", "ols").unit_id == "_GSPC__ols__f0"
    # "__" separates id parts; a symbol never holds it, nor ends in "_".
    assert safe_symbol("A__B") == "A_B" and safe_symbol("A.") == "A"
    with pytest.raises(ValueError, match="no ASCII letter or digit"):
        safe_symbol("^")
    with pytest.raises(ValueError, match=r"'BRK.B' and 'BRK_B' both map to 'BRK_B'"):
        plan(spec(), ["BRK_B", "BRK.B"])


def test_plan_counts_and_is_identical_across_calls() -> None:
    s = spec()
    p1, p2 = plan(s, SYMBOLS, slots=2), plan(s, SYMBOLS, slots=2)
    assert p1 == p2
    assert [g.run_name for g in p1.deep_groups] == [g.run_name for g in p2.deep_groups]
    assert len(p1.units) == 102 * 10 == s.unit_count()
    assert len(p1.linear_units) == 102 * 3
    assert sorted(p1.deep_units) == sorted(u for u in p1.units if u.kind == "deep")
    assert len({u.unit_id for u in p1.units}) == len(p1.units)
    assert len({g.run_name for g in p1.deep_groups}) == len(p1.deep_groups)
    deep_in_job_order = [u for u in p1.units if u.kind == "deep"]
    assert list(p1.deep_units) == deep_in_job_order  # runs take consecutive units
    for g in p1.deep_groups:  # one fold per run; auto sizes hold whole symbols
        assert len({u.fold for u in g.units}) == 1
        assert 1 <= len(g.units) <= p1.units_per_run
    n_deep_models = len(s.deep_models)
    assert p1.units_per_run % n_deep_models == 0
    for g in p1.deep_groups[:-1]:
        assert len(g.units) == p1.units_per_run
        for i in range(0, len(g.units), n_deep_models):  # every deep model of a symbol
            assert len({u.symbol for u in g.units[i : i + n_deep_models]}) == 1
    assert Plan.from_dict(p1.to_dict()) == p1


def test_run_names_follow_their_units() -> None:
    a = plan(spec(resources={"units_per_run": 4}), SYMBOLS)
    b = plan(spec(resources={"units_per_run": 5}), SYMBOLS)
    # the first 4 deep units: S000's mlp, lstm, cnn, deeplob (runs mix models)
    assert a.deep_groups[0].run_name.startswith("run__mix__f0__g000-")
    one = plan(spec(models=["ols", "lstm"], resources={"units_per_run": 4}), SYMBOLS)
    assert one.deep_groups[0].run_name.startswith("run__lstm__f0__g000-")
    # Other members, other name: a checkpoint of one grouping never resumes another.
    assert a.deep_groups[0].run_name != b.deep_groups[0].run_name


def test_run_names_differ_for_the_same_models_on_other_symbols() -> None:
    """A run's name hashes its unit ids, not only its models: two groupings with the same
    models but other symbols never share a name (and so never each other's checkpoints)."""
    a = plan(spec(resources={"units_per_run": 4}), SYMBOLS)
    c = plan(spec(resources={"units_per_run": 4}), SYMBOLS[1:])
    ga, gc = a.deep_groups[0], c.deep_groups[0]
    assert [u.model for u in ga.units] == [u.model for u in gc.units]  # same models
    assert {u.symbol for u in ga.units} != {u.symbol for u in gc.units}
    assert ga.run_name != gc.run_name


def test_explicit_group_size() -> None:
    p = plan(spec(resources={"units_per_run": 8}), SYMBOLS)
    assert p.units_per_run == 8
    sizes = [len(g.units) for g in p.deep_groups]
    # 7 deep models x 102 symbols = 714 units: 89 runs of 8 and one of 2.
    assert len(sizes) == 90 and sizes.count(8) == 89 and sizes.count(2) == 1


def test_auto_group_size_meets_the_overhead_budget_when_units_are_plenty() -> None:
    g, info = auto_units_per_run([102] * 7, slots=2, overhead_s=14.0, unit_s=5.0)
    assert g == math.ceil((1 - OVERHEAD_BUDGET) / OVERHEAD_BUDGET * 14.0 / 5.0) == 26
    assert 14.0 / (14.0 + g * 5.0) <= OVERHEAD_BUDGET
    assert info["runs"] >= WAVES * 2
    # Cheaper overhead (or longer units) -> smaller groups.
    assert auto_units_per_run([102] * 7, 2, overhead_s=14.0, unit_s=60.0)[0] == 3


def test_auto_group_size_trades_off_when_units_are_few() -> None:
    # 20 units on 2 slots: the budget wants 26 per run, balance wants many runs. The
    # estimated wall-clock is best with one wave of two runs of 10.
    g, info = auto_units_per_run([20], slots=2, overhead_s=14.0, unit_s=5.0)
    assert g == 10 and info["est_makespan_s"] == 14.0 + 10 * 5.0
    assert "makespan" in info["rule"]
    assert auto_units_per_run([], 2, 14.0, 5.0)[0] == 1
    with pytest.raises(ValueError, match="slots"):
        auto_units_per_run([5], 0, 14.0, 5.0)


def test_auto_group_size_keeps_balance_with_fewer_than_waves_runs_per_slot() -> None:
    """The budget size is kept only with at least WAVES runs per slot. Here it gives 6 runs
    on 2 slots (more than `slots`, fewer than WAVES * slots): the size must come from the
    best estimated makespan instead, which is not the budget size."""
    g_over = 26  # what the budget asks for at 14 s overhead and 5 s units
    runs = math.ceil(150 / g_over)
    assert 2 < runs < WAVES * 2
    g, info = auto_units_per_run([150], slots=2, overhead_s=14.0, unit_s=5.0)
    assert info["g_overhead"] == g_over and "makespan" in info["rule"]

    def makespan(k: int) -> float:
        return math.ceil(math.ceil(150 / k) / 2) * (14.0 + k * 5.0)

    best = min(range(1, g_over + 1), key=lambda k: (makespan(k), k))
    assert g == best != g_over and info["est_makespan_s"] == makespan(best)
    assert makespan(best) < makespan(g_over)


def test_auto_group_sizes_hold_whole_symbols() -> None:
    assert whole_symbols(90, 11) == 88 and whole_symbols(95, 11) == 99
    assert whole_symbols(5, 11) == 5  # fewer than one symbol's units: as is
    assert whole_symbols(300, 11) == 253  # the largest multiple within MAX_UNITS_PER_RUN
    assert whole_symbols(7, 1) == 7


def test_walk_forward_folds_and_tune_trials() -> None:
    s = spec(
        dataset={"uri": "sample:sp500", "symbols": 5},
        models=["ridge", "lstm", "cnn"],
        split={"method": "walk_forward", "n_folds": 3},
        tune={"num_samples": 4, "symbols": 2},
        resources={"units_per_run": 10},
    )
    p = plan(s, SYMBOLS[:5])
    assert len(p.units) == 5 * 3 * 3
    assert {u.fold for u in p.units} == {0, 1, 2}
    assert len(p.tune_units) == 2 * 2 * 4 == len(p.all_units) - len(p.units)
    assert {u.symbol for u in p.tune_units} == {"S000", "S001"}
    assert {u.fold for u in p.tune_units} == {SEARCH_FOLD} == {0}  # before every test block
    assert {u.model for u in p.tune_units} == {"lstm", "cnn"}
    assert p.tune_units[0].unit_id == "S000__lstm__f0__t000"
    assert len(p.all_units) == s.unit_count()
    # Tune trials: one per model and sample, each training both search symbols (it said 16)
    assert (p.summary()["tune_trials"], p.summary()["tune_units"]) == (2 * 4, 2 * 2 * 4)


def test_plan_summary_counts_units_as_progress_and_summary_do() -> None:
    """The plan's `units` (its log line, summary.json's `plan`) are the final units that
    progress.json and summary.json count; search trials are counted apart."""
    s = spec(dataset={"uri": "sample:sp500", "symbols": 2}, models=["ridge", "lstm"],
             tune={"num_samples": 3, "symbols": 1})
    p = plan(s, SYMBOLS[:2])
    assert p.summary()["units"] == len(p.units) == 4
    assert p.summary()["tune_trials"] == 3
    assert p.describe().startswith("4 units (2 linear, 2 deep in ")
    assert "+ 3 search trials, 2 symbols" in p.describe()


def test_the_search_fold_sees_no_folds_test_data() -> None:
    """One searched config is refitted on every walk-forward fold and scored on its test
    block, so the search's train and val samples, labels included, must all end before the
    first test block of any fold. (The last fold's val lies inside earlier folds' test
    blocks: a search there selected on test.)"""
    from data.loading import load_bars
    from data.prepare import PrepareConfig, prepare_symbol

    horizons = (1, 5, 20)
    cfg = PrepareConfig(horizons=horizons, seq_len=30, split="walk_forward", n_folds=3,
                        train=0.5, val=0.15, test=0.35)  # fmt: skip
    folds = prepare_symbol(load_bars("sample:sp500", symbols=["AAPL"]), cfg)
    assert len(folds) == 3
    first_test = min(int(f.splits["test"].min()) for f in folds)
    seen = np.concatenate([folds[SEARCH_FOLD].splits[k] for k in ("train", "val")])
    assert seen.max() + max(horizons) < first_test
    # the fold the search used before this fix would fail the same check
    late = np.concatenate([folds[-1].splits[k] for k in ("train", "val")])
    assert late.max() + max(horizons) >= first_test


def test_pending_after_partial_completion() -> None:
    p = plan(spec(models=["ols", "lstm"], resources={"units_per_run": 4}), SYMBOLS[:10])
    first = p.deep_groups[0]
    done = {u.unit_id for u in p.linear_units[:3]} | {u.unit_id for u in first.units[:2]}
    done |= {u.unit_id for u in p.deep_groups[1].units}  # a whole run finished
    rest = p.pending(done)
    assert len(rest.units) == len(p.units) - len(done)
    assert not {u.unit_id for u in rest.all_units} & done
    # The half-done run keeps its name (its checkpoints resume) with the remaining units.
    assert rest.deep_groups[0].run_name == first.run_name
    assert rest.deep_groups[0].units == first.units[2:]
    assert p.deep_groups[1].run_name not in {g.run_name for g in rest.deep_groups}
    assert p.pending([]) == p
    assert p.pending(u.unit_id for u in p.all_units).summary()["units"] == 0


def test_pending_drops_finished_units_of_every_kind() -> None:
    """A resume must not redo a finished unit of any kind: `pending` drops the done ids from
    the linear units (which the chunk tasks refit), the deep units and the search trials,
    not only from `units`."""
    s = spec(dataset={"uri": "sample:sp500", "symbols": 4}, models=["ols", "ridge", "lstm"],
             tune={"num_samples": 2, "symbols": 2}, resources={"units_per_run": 2})
    p = plan(s, SYMBOLS[:4])
    done = {u.unit_id for u in (*p.linear_units[:3], *p.deep_units[:1], *p.tune_units[:2])}
    rest = p.pending(done)
    for kind in ("units", "linear_units", "deep_units", "tune_units"):
        assert not {u.unit_id for u in getattr(rest, kind)} & done, kind
    assert len(rest.linear_units) == len(p.linear_units) - 3
    assert len(rest.deep_units) == len(p.deep_units) - 1
    assert len(rest.tune_units) == len(p.tune_units) - 2
    assert set(rest.linear_units) == {u for u in rest.units if u.kind == "linear"}
    assert set(rest.deep_units) == {u for u in rest.units if u.kind == "deep"}


def test_deep_estimate_counts_each_runs_fixed_cost_and_its_units_left() -> None:
    """The ETA's prior for deep units: (runs x overhead + units x unit time) / slots, over
    the units still to train (a half-done run counts its remaining units only)."""
    p = plan(spec(models=["ols", "lstm"], resources={"units_per_run": 4}), SYMBOLS[:10])
    assert [len(g.units) for g in p.deep_groups] == [4, 4, 2]
    assert estimate_deep_s(p.deep_groups, 2, "fast", overhead_s=20.0) == (3 * 20 + 10 * 1.0) / 2
    rest = p.pending(u.unit_id for u in p.deep_groups[0].units[:3])
    assert estimate_deep_s(rest.deep_groups, 1, "balanced", overhead_s=20.0) == 3 * 20 + 7 * 15
    assert estimate_deep_s((), 2, "fast") == 0.0


def test_walk_forward_runs_never_mix_folds_and_a_repeated_symbol_is_refused() -> None:
    s = spec(dataset={"uri": "sample:sp500", "symbols": 5}, models=["ols", "lstm", "cnn"],
             split={"method": "walk_forward", "n_folds": 3}, resources={"units_per_run": 4})
    p = plan(s, SYMBOLS[:5])
    assert {u.fold for u in p.deep_units} == {0, 1, 2}
    assert sorted(p.deep_units) == sorted(u for u in p.units if u.kind == "deep")
    for g in p.deep_groups:
        (fold,) = {u.fold for u in g.units}  # one fold per run
        assert f"__f{fold}__" in g.run_name
    with pytest.raises(ValueError, match="listed twice"):
        plan(s, ["S000", "S001", "S000"])


def test_tune_symbols_null_searches_every_symbol_and_a_list_those_named() -> None:
    """tune.symbols: null searches on all the job's symbols (as the spec counts them in
    unit_count), an int on the first N, a list on the symbols it names."""
    base = {"dataset": {"uri": "sample:sp500", "symbols": 4}, "models": ["ridge", "lstm"]}
    everyone = spec(**base, tune={"num_samples": 2, "symbols": None})
    p = plan(everyone, SYMBOLS[:4])
    assert [u.symbol for u in p.tune_units] == [s for s in SYMBOLS[:4] for _ in range(2)]
    assert len(p.all_units) == everyone.unit_count() == 4 * 2 + 4 * 2
    first = plan(spec(**base, tune={"num_samples": 2, "symbols": 3}), SYMBOLS[:4])
    assert {u.symbol for u in first.tune_units} == set(SYMBOLS[:3])
    named = plan(spec(**{**base, "dataset": {"uri": "sample:sp500", "symbols": SYMBOLS[:4]}},
                      tune={"num_samples": 2, "symbols": ["S002"]}), SYMBOLS[:4])
    assert {u.symbol for u in named.tune_units} == {"S002"}


def test_walk_forward_units_come_symbol_by_symbol() -> None:
    """Job order (the planner's docstring; plan.json lists the units in it and the driver
    walks them in it) is symbol by symbol with walk-forward folds too: each symbol's
    models, each model's folds, not one pass over the symbols per fold."""
    models = ["ols", "ridge", "lstm"]
    s = spec(dataset={"uri": "sample:sp500", "symbols": 3}, models=models,
             split={"method": "walk_forward", "n_folds": 3}, resources={"units_per_run": 2})
    p = plan(s, SYMBOLS[:3])
    assert [(u.symbol, u.model, u.fold) for u in p.units] == [
        (sym, m, f) for sym in SYMBOLS[:3] for m in models for f in range(3)]
    assert [u.unit_id for u in p.linear_units[:3]] == [
        "S000__ols__f0", "S000__ols__f1", "S000__ols__f2"]
    # the deep runs still hold one fold each, symbol by symbol within it
    assert [[u.unit_id for u in g.units] for g in p.deep_groups[:2]] == [
        ["S000__lstm__f0", "S001__lstm__f0"], ["S002__lstm__f0"]]
