"""JobSpec: YAML/JSON round trips, every invalid case names its field, limits, smoke(),
the PrepareConfig mapping, agreement with the model registry, and a light import."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ray_jobs import spec as spec_mod
from ray_jobs.spec import (
    LINEAR_MODELS,
    MAX_EPOCHS,
    MAX_HORIZON,
    MAX_SEQ_LEN,
    MAX_SYMBOLS,
    MIN_SEQ_LEN,
    MODEL_NAMES,
    JobSpec,
    SpecError,
)

REPO = Path(__file__).resolve().parents[2]

ARCH_YAML = """
name: sp500-weekly
dataset: {uri: "sample:sp500", symbols: 102, start: 2013-02-08, end: 2018-02-07}
target: {kind: direction, horizons: [1, 5, 10, 20], threshold: auto}
features: {set: technical, seq_len: 60}
split: {method: holdout, train: 0.7, val: 0.15, test: 0.15, purge: auto, embargo: 5}
models: [ols, ridge, lasso, mlp, lstm, cnn, deeplob, seq2seq, transformer, temporal_attention]
preset: fast                    # fast | balanced | quality
overrides: {lstm: {hidden_size: 128}}
tune: {num_samples: 0}          # > 0: Ray Tune search over the model's search space
resources: {gpu_fraction: auto, max_concurrent_runs: auto}
seed: 42
"""

FULL = {
    "name": "wf-job",
    "dataset": {"uri": "s3://bucket/bars.parquet?endpoint_override=http://127.0.0.1:9000",
                "symbols": ["AAPL", "BRK.B", "MSFT"], "start": "2014-01-02", "kind": "bars"},
    "target": {"kind": "direction", "horizons": [1, 5], "threshold": [0.001, 0.004]},
    "features": {"set": "technical", "seq_len": 30},
    "split": {"method": "walk_forward", "train": 0.6, "val": 0.2, "test": 0.2, "n_folds": 4,
              "purge": 10, "embargo": 2},
    "models": ["ridge", "lstm", "gru"],
    "preset": "balanced",
    "overrides": {"lstm": {"hidden_size": 64, "train": {"epochs": 7, "lr": 0.003}}},
    "tune": {"num_samples": 8, "symbols": ["AAPL"], "metric": "val_f1", "max_concurrent": 2,
             "grace_period": 2},
    "resources": {"gpu_fraction": 0.25, "max_concurrent_runs": 4, "units_per_run": 6},
    "seed": 7,
    "max_epochs": 5,
}  # fmt: skip


def errors_of(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        JobSpec.from_dict(data)
    return info.value.errors


def mutated(path: str, value: Any, base: dict | None = None) -> dict:
    d = copy.deepcopy(base or FULL)
    *parents, leaf = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    node[leaf] = value
    return d


# ---- valid specs ------------------------------------------------------------------------
def test_architecture_yaml_parses_and_round_trips() -> None:
    s = JobSpec.from_yaml(ARCH_YAML)
    assert s.dataset.symbols == 102 and s.dataset.start == "2013-02-08"  # YAML date -> ISO
    assert s.models[-1] == "temporal_attention" and s.linear_models == ("ols", "ridge", "lasso")
    assert s.overrides == {"lstm": {"hidden_size": 128}}
    assert JobSpec.from_yaml(s.to_yaml()) == s
    assert JobSpec.from_json(s.to_json()) == s
    assert JobSpec.from_dict(s.to_dict()) == s


def test_full_json_round_trips_and_normalises_overrides() -> None:
    s = JobSpec.from_json(json.dumps(FULL))
    assert s.dataset.symbols == ("AAPL", "BRK.B", "MSFT")
    assert s.target.threshold == (0.001, 0.004)
    assert s.overrides == {"lstm": {"hidden_size": 64, "train.epochs": 7, "train.lr": 0.003}}
    assert s.model_overrides("lstm") == ({"hidden_size": 64}, {"epochs": 5, "lr": 0.003})
    assert s.tune.mode == "max" and s.split.folds == 4
    again = JobSpec.from_dict(json.loads(s.to_json()))
    assert again == s and again.fingerprint() == s.fingerprint()
    assert JobSpec.from_dict(mutated("seed", 8)).fingerprint() != s.fingerprint()
    assert s.unit_count() == 3 * 3 * 4 + 1 * 2 * 8


def test_yaml_scientific_notation_is_a_number() -> None:
    # YAML 1.1 reads `1e-3` as a string; a float field accepts it as the number it is.
    s = JobSpec.from_yaml(ARCH_YAML.replace("threshold: auto", "threshold: 1e-3"))
    assert s.target.threshold == 0.001


def test_dates_may_be_datetimes_and_one_day_is_a_window() -> None:
    """Intraday (LOB) jobs narrow by time; both bounds are inclusive, so a date-only end
    equal to the start is one whole day."""
    def window(start: Any, end: Any) -> tuple[str | None, str | None]:
        s = JobSpec.from_dict({"name": "a", "models": ["ols"], "dataset": {
            "uri": "sample:sp500", "start": start, "end": end}})  # fmt: skip
        return s.dataset.start, s.dataset.end

    assert window("2021-01-04", "2021-01-04") == ("2021-01-04", "2021-01-04")
    assert window("2021-01-04 09:35", "2021-01-04") == ("2021-01-04T09:35:00", "2021-01-04")
    assert window(None, "2021-01-04T16:00:00+00:00") == (None, "2021-01-04T16:00:00+00:00")
    with pytest.raises(SpecError, match="end 2021-01-04T09:00:00 is before start"):
        window("2021-01-04T10:00:00Z", "2021-01-04T09:00:00")
    with pytest.raises(SpecError, match="or an ISO datetime"):
        window("2021-1-4", None)


def test_a_key_given_twice_is_refused_in_yaml_and_json() -> None:
    """json and PyYAML keep the last duplicate silently: a spec with two `models:` lines
    would run with whichever came last."""
    with pytest.raises(SpecError, match=r"duplicate key 'models'.*\n.*line 4"):
        JobSpec.from_yaml("name: a\ndataset: {uri: 'sample:sp500'}\nmodels: [ols]\n"
                          "models: [lstm]\n")
    with pytest.raises(SpecError, match="duplicate key 'uri'"):
        JobSpec.from_json('{"name": "a", "models": ["ols"], '
                          '"dataset": {"uri": "sample:sp500", "uri": "x.parquet"}}')


def test_errors_do_not_echo_absurdly_long_values_whole() -> None:
    """A 5,000-character name or model is cut to its start and its length in the message,
    and so is an unknown field's path; the advice after it stays."""
    long = {"name": "x" * 5000, "dataset": {"uri": "sample:sp500"}, "models": ["y" * 3000],
            "z" * 500: 1}  # fmt: skip
    with pytest.raises(SpecError) as err:
        JobSpec.from_dict(long)
    text = str(err.value)
    assert len(text) < 1000, text
    assert "'" + "x" * 60 + "...' (5000 characters): use 1-64 letters" in text
    assert "(3000 characters); known: ols" in text
    assert ("z" * 60 + "...", "unknown field; allowed: name, dataset, models, target, features, "
            "split, preset, overrides, tune, resources, seed, max_epochs") in err.value.errors


# ---- invalid specs: every case names its field -----------------------------------------
@pytest.mark.parametrize(
    ("path", "value", "where", "says"),
    [
        ("bogus", 1, "bogus", "unknown field; allowed: name, dataset"),
        ("dataset.bogus", 1, "dataset.bogus", "unknown field"),
        ("models", ["ridge", "lstm", "lstmm"], "models[2]",
         "unknown model 'lstmm'; known: ols, ridge"),
        ("models", ["lstm", "lstm"], "models[1]", "listed twice"),
        ("models", [], "models", "non-empty"),
        ("overrides", {"lstm": {"train": {"epochs": -3}}}, "overrides.lstm.train.epochs",
         "at least 1 epoch"),
        ("overrides", {"lstm": {"train.epochs": MAX_EPOCHS + 1}}, "overrides.lstm.train.epochs",
         f"at most {MAX_EPOCHS}"),
        ("overrides", {"lstm": {"epochs": 3}}, "overrides.lstm.epochs", "write it as train.epochs"),
        ("overrides", {"lstm": {"train.bogus": 3}}, "overrides.lstm.train.bogus",
         "unknown training setting"),
        ("overrides", {"lstm": {"seq_len": 30}}, "overrides.lstm.seq_len", "features.seq_len"),
        ("overrides", {"cnn": {"kernel_size": 3}}, "overrides.cnn", "not in models"),
        ("overrides", {"lstm": {"train.lr": float("inf")}}, "overrides.lstm.train.lr",
         "finite number"),
        ("overrides", {"lstm": {"dropout": float("-inf")}}, "overrides.lstm.dropout",
         "finite number"),
        ("overrides", {"ridge": {"alpha_max": float("inf")}}, "overrides.ridge.alpha_max",
         "finite number"),
        ("overrides", {"lstm": {"hidden_size": [16, float("nan")]}}, "overrides.lstm.hidden_size",
         "finite number"),
        ("overrides", {"lstm": {"hidden_size": [[16]]}}, "overrides.lstm.hidden_size",
         "use a number, string, bool or list"),
        ("overrides", {"lstm": {"hidden_size": {"a": 1}}}, "overrides.lstm.hidden_size",
         "use a number, string, bool or list"),
        ("dataset.symbols", MAX_SYMBOLS + 1, "dataset.symbols", f"[1, {MAX_SYMBOLS}]"),
        ("dataset.symbols", [f"S{i}" for i in range(MAX_SYMBOLS + 1)], "dataset.symbols",
         f"at most {MAX_SYMBOLS} per job"),
        ("dataset.symbols", ["AAPL", "AAPL"], "dataset.symbols", "duplicate"),
        ("dataset.symbols", ["AAPL", "a\tb"], "dataset.symbols[1]", "control characters"),
        ("dataset.symbols", ["AAPL", " AAPL"], "dataset.symbols[1]", "leading/trailing"),
        ("dataset.symbols", ["AAPL", "///"], "dataset.symbols[1]", "no ASCII letter"),
        ("dataset.symbols", ["BRK.B", "BRK/B"], "dataset.symbols[1]", "both name their files"),
        ("dataset.uri", "gs://bucket/bars.parquet", "dataset.uri", "unsupported URI scheme 'gs'"),
        ("dataset.uri", "data/bars.parquet", "dataset.uri", "relative"),
        ("dataset.uri", "file://host/x", "dataset.uri", "file:///abs/path"),
        ("dataset.start", "2014-13-01", "dataset.start", "YYYY-MM-DD"),
        ("dataset.end", "2013-01-01", "dataset.end", "is before start 2014-01-02 (both inclusive)"),
        ("target.horizons", [], "target.horizons", "non-empty"),
        ("target.horizons", [1, -5], "target.horizons[1]", "out of range"),
        ("target.horizons", [1, MAX_HORIZON + 1], "target.horizons[1]", f"[1, {MAX_HORIZON}]"),
        ("target.horizons", [5, 1], "target.horizons", "increasing"),
        ("target.threshold", [0.001], "target.threshold", "1 thresholds for 2 horizons"),
        ("target.threshold", -0.1, "target.threshold", ">= 0"),
        ("features.seq_len", MIN_SEQ_LEN - 1, "features.seq_len", "out of range"),
        ("features.seq_len", MAX_SEQ_LEN + 1, "features.seq_len", f"{MAX_SEQ_LEN}]"),
        ("split.val", 0.3, "split", "sum to 1"),
        ("split.train", 1.2, "split.train", "(0, 1)"),
        ("split.n_folds", 1, "split.n_folds", "[2, 20]"),
        ("split.purge", "some", "split.purge", "'auto'"),
        ("target.horizons", [1, 20], "split.purge",
         "purge 10 + embargo 2 = 12 bars between splits, but the longest horizon is 20 bars"),
        ("resources.gpu_fraction", 0, "resources.gpu_fraction", "(0, 1]"),
        ("resources.gpu_fraction", 1.5, "resources.gpu_fraction", "(0, 1]"),
        ("resources.units_per_run", 0, "resources.units_per_run", "out of range"),
        ("tune.num_samples", 10_000, "tune.num_samples", "out of range"),
        ("tune.symbols", ["TSLA"], "tune.symbols", "not in dataset.symbols: pick from those"),
        ("tune.symbols", ["aapl"], "tune.symbols",
         "pick from those (symbols are case-sensitive: aapl -> AAPL?)"),
        ("tune.metric", "val_mse", "tune.metric", "return targets only"),
        ("tune.grace_period", 9, "tune.grace_period", "max_epochs=5"),
        ("seed", True, "seed", "expected an integer"),
        ("preset", "turbo", "preset", "fast, balanced, quality"),
        ("name", "bad name!", "name", "letters, digits"),
        ("max_epochs", 0, "max_epochs", "out of range"),
    ],
)  # fmt: skip
def test_invalid_field_is_named(path: str, value: Any, where: str, says: str) -> None:
    errors = errors_of(mutated(path, value))
    assert any(p == where and says in m for p, m in errors), errors


def test_missing_required_and_all_errors_at_once() -> None:
    d = {k: v for k, v in FULL.items() if k != "name"}
    d["models"] = ["lstmm"]
    d["split"] = dict(FULL["split"], train=0.9)
    paths = [p for p, _ in errors_of(d)]
    assert paths == ["name", "split"]  # models are checked once the spec can be built
    d["name"], d["extra"] = "ok", 1
    paths = [p for p, _ in errors_of(d)]
    assert {"extra", "split", "models[0]"} <= set(paths)


def test_error_payload_for_a_422() -> None:
    with pytest.raises(SpecError) as info:
        JobSpec.from_dict(mutated("models", ["lstmm"]))
    payload = info.value.to_list()
    assert payload[0]["loc"] == "models[0]" and "unknown model" in payload[0]["msg"]
    assert str(info.value).startswith("models[0]: unknown model 'lstmm'")
    with pytest.raises(SpecError, match="invalid JSON at line 1"):
        JobSpec.from_json("{nope")
    with pytest.raises(SpecError, match="invalid YAML"):
        JobSpec.from_yaml("a: [1, 2")
    with pytest.raises(SpecError, match="expected a mapping"):
        JobSpec.from_yaml("- just\n- a list\n")
    for empty in ("", "# only a comment\n", "---\n"):
        with pytest.raises(SpecError, match="the spec is empty: give at least name, dataset"):
            JobSpec.from_yaml(empty)


def test_too_many_units_is_refused() -> None:
    d = mutated("dataset.symbols", MAX_SYMBOLS)
    d["models"] = list(MODEL_NAMES)
    d["split"] = dict(d["split"], n_folds=20)
    d["tune"] = {"num_samples": 0}
    d["overrides"] = {}
    assert any("units; at most" in m for _, m in errors_of(d))


def test_a_search_with_every_key_fixed_is_refused() -> None:
    """Keys the overrides set are not searched; all of them fixed leaves nothing to search."""
    d = mutated("tune", {"num_samples": 4})
    d["models"], d["overrides"] = ["mlp"], {"mlp": {"hidden_size": 16, "num_layers": 1}}
    JobSpec.from_dict(d)  # the train.* keys are still searched
    d["overrides"]["mlp"].update({"dropout": 0.1, "train": {"lr": 1e-3, "batch_size": 64,
                                                            "weight_decay": 0.0}})
    space = json.loads(Path(spec_mod.__file__).with_name("model_catalog.json").read_text())
    mlp = next(m for m in space["models"] if m["name"] == "mlp")["search_space"]
    assert set(mlp) <= set(spec_mod.flatten_train(d["overrides"]["mlp"]))
    assert ("overrides.mlp", "fixes every key of the model's search space, so tune has "
            "nothing to search: drop some of them (a fixed key is not searched), or set "
            "tune.num_samples: 0") in errors_of(d)
    d["tune"] = {"num_samples": 0}
    JobSpec.from_dict(d)  # no search: the overrides are plain settings


# ---- derived views ----------------------------------------------------------------------
def test_smoke_reduces_the_job() -> None:
    s = JobSpec.from_dict(FULL).smoke()
    assert s.name == "wf-job-smoke"
    assert s.dataset.symbols == ("AAPL", "BRK.B")
    assert s.max_epochs == 2 and s.features.seq_len == 20 and s.split.n_folds == 2
    assert s.tune.num_samples == 2 and s.tune.symbols == ("AAPL",) and s.tune.grace_period == 1
    assert s.unit_count() < JobSpec.from_dict(FULL).unit_count()
    arch = JobSpec.from_yaml(ARCH_YAML).smoke()
    assert arch.dataset.symbols == 2 and arch.split.n_folds == 3  # holdout keeps its field
    assert arch.smoke() == arch


def test_a_search_capped_below_the_default_grace_period_needs_no_grace_period() -> None:
    """`max_epochs: 1` with a search: the default grace period (2) follows the cap, so the
    spec is valid as written; a grace period the spec gives is still checked."""
    d = mutated("max_epochs", 1)
    d["tune"] = {k: v for k, v in d["tune"].items() if k != "grace_period"}
    s = JobSpec.from_dict(d)
    assert s.tune.grace_period == 1 and s.max_epochs == 1
    assert JobSpec.from_dict(mutated("max_epochs", 2, d)).tune.grace_period == 2
    d["tune"]["grace_period"] = 2
    assert ("tune.grace_period", "exceeds max_epochs=1: lower it") in errors_of(d)


def test_smoke_of_first_n_symbols_searches_among_its_own_symbols() -> None:
    """`symbols: N` with a named search symbol: the smoke job's first 2 symbols need not
    hold it, and a search on none of its symbols fails every deep unit; the smoke job
    searches on its first symbol."""
    d = mutated("dataset.symbols", 50, FULL)
    d["tune"] = {**d["tune"], "symbols": ["MSFT"]}
    s = JobSpec.from_dict(d).smoke()
    assert s.dataset.symbols == 2 and s.tune.symbols == 1


def test_prepare_config_kwargs_build_a_prepare_config() -> None:
    prepare = pytest.importorskip("data.prepare", reason="data.prepare not written yet")
    s = JobSpec.from_dict(FULL)
    cfg = prepare.PrepareConfig(**s.prepare_config_kwargs())
    assert cfg.horizons == (1, 5) and cfg.seq_len == 30 and cfg.split == "walk_forward"
    assert cfg.threshold == (0.001, 0.004) and cfg.purge == 10 and cfg.n_folds == 4


def test_model_names_match_the_registry() -> None:
    registry = pytest.importorskip("models.registry", reason="models.registry not written yet")
    assert set(MODEL_NAMES) == set(registry.REGISTRY)
    assert set(LINEAR_MODELS) == set(registry.list_models("linear"))


def test_check_against_registry_catches_bad_model_fields() -> None:
    pytest.importorskip("models.registry", reason="models.registry not written yet")
    spec_mod.check_against_registry(JobSpec.from_dict(FULL))
    # An unknown model field is caught at the edge already, from the committed catalog ...
    with pytest.raises(SpecError, match="overrides.lstm.hiden_size: unknown setting of lstm"):
        JobSpec.from_dict(mutated("overrides", {"lstm": {"hiden_size": 64}}))
    # `train` is known: not a mapping is what is wrong with it (it was "unknown setting")
    with pytest.raises(SpecError, match=r"overrides\.lstm\.train: 5: expected a mapping of "
                       r"training settings, e\.g\. train: \{lr: 0\.001"):
        JobSpec.from_dict(mutated("overrides", {"lstm": {"train": 5}}))
    # ... a bad value of a known field by the registry's config dataclasses.
    bad = JobSpec.from_dict(mutated("overrides", {"lstm": {"hidden_size": 0}}))
    with pytest.raises(SpecError, match=r"overrides\.lstm\.hidden_size: lstm\.hidden_size=0"):
        spec_mod.check_against_registry(bad)
    # linear grids are bounded: one request cannot ask a worker for a 10^8-alpha grid
    huge = JobSpec.from_dict(mutated("overrides", {"ridge": {"n_alphas": 10**8}}))
    with pytest.raises(SpecError, match=r"overrides\.ridge\.n_alphas: .*use 1 to 1000"):
        spec_mod.check_against_registry(huge)
    # so is a batch: 1e12 was accepted and meant "the whole split"
    with pytest.raises(SpecError, match=r"overrides\.lstm\.train\.batch_size: .*use a batch "
                                        r"size of 1 to 1048576"):  # fmt: skip
        JobSpec.from_dict(mutated("overrides", {"lstm": {"train.batch_size": 1e12}}))


def test_tune_metrics_are_loop_metrics() -> None:
    loop = pytest.importorskip("models.training.loop", reason="training loop not written yet")
    # EPOCH_METRICS lists the common ones; the loop adds val_f1/val_accuracy or val_mse.
    reported = set(loop.EPOCH_METRICS) | {"val_f1", "val_accuracy", "val_mse"}
    assert set(spec_mod.TUNE_METRICS) <= reported


def test_import_and_validation_stay_light() -> None:
    code = (
        "import sys; from ray_jobs.spec import JobSpec; "
        f"JobSpec.from_yaml({ARCH_YAML!r}); "
        "heavy = [m for m in ('torch', 'ray', 'pandas', 'numpy') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_any_ticker_the_data_can_hold_is_a_symbol() -> None:
    """Share classes, slashes, leading zeros, accents and spaces: the job names their files
    with `safe_symbol`, so the spec takes them as the data spells them."""
    symbols = ["AAPL", "BF/B", "BRK.B", "0700", "ÄBC", "AB C", "^GSPC", "NA"]
    spec = JobSpec.from_dict(mutated("dataset.symbols", symbols))
    assert spec.dataset.symbols == tuple(symbols)


def test_a_float_epoch_count_is_capped_like_an_integer() -> None:
    """`train.epochs: 1e9` (a float in JSON) passed the MAX_EPOCHS check meant for ints:
    a job with it and no max_epochs trained for ever."""
    for value in (1e9, float(MAX_EPOCHS + 1)):
        errors = errors_of(mutated("overrides", {"lstm": {"train": {"epochs": value}}}))
        assert errors == [("overrides.lstm.train.epochs", f"{value!r}: at most {MAX_EPOCHS} "
                                                          "epochs")]  # fmt: skip
    ok = JobSpec.from_dict(mutated("overrides", {"lstm": {"train.epochs": float(MAX_EPOCHS)}}))
    assert ok.overrides["lstm"]["train.epochs"] == MAX_EPOCHS


def test_odd_shapes_of_sections_get_field_errors_not_type_errors() -> None:
    """The service turned a TypeError into a 422 naming no field ("DatasetSpec.__init__()
    missing 1 required positional argument: 'uri'", "unhashable type: 'list'")."""
    assert errors_of(mutated("dataset", {})) == [("dataset.uri", "required field is missing")]
    assert errors_of(mutated("dataset", {"symbols": 3})) == [
        ("dataset.uri", "required field is missing")]
    errors = errors_of(mutated("dataset.symbols", ["AAPL", ["MSFT"], {"a": 1}, "AAPL"]))
    assert [p for p, _ in errors] == ["dataset.symbols[1]", "dataset.symbols[2]",
                                      "dataset.symbols"]  # fmt: skip
    assert "duplicate symbols ['AAPL']" in errors[-1][1]
    errors = errors_of(mutated("tune.symbols", [[], "AAPL"]))
    assert errors == [("tune.symbols[0]", "[] is not a usable symbol: a symbol is non-empty text")]
    # a bad end next to a good start: one error, not a ValueError from comparing them
    errors = errors_of(mutated("dataset.end", ""))
    assert [p for p, _ in errors] == ["dataset.end"] and "is not a date" in errors[0][1]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("dataset.start", 20170101, "is a number, not a date: write it as 'YYYY-MM-DD'"),
    ("dataset.end", 1.5e9, "is a number, not a date"),
    ("dataset.start", "2300-01-01", "outside the dates a dataset's times can have "
                                    "(1677-09-22 to 2262-04-10)"),
    ("dataset.end", "1600-01-01T09:30:00", "leave end out for no bound"),
])  # fmt: skip
def test_a_window_bound_must_be_a_datable_time(field: str, value: object, message: str) -> None:
    """The job spec itself refuses what the loader could not bound a read by (pandas'
    nanosecond times): a run with `--spec` got past it before (only the API checked), and
    a number (20170101, epoch seconds) was read as a date of some kind."""
    errors = errors_of(mutated(field, value))
    assert [p for p, _ in errors] == [field] and message in errors[0][1], errors


@pytest.mark.parametrize(
    ("model", "values", "field", "message"),
    [
        ("lstm", {"bidirectional": None}, "overrides.lstm.bidirectional",
         "lstm.bidirectional: expected true or false, got None"),
        ("lstm", {"train.gamma": None}, "overrides.lstm.train.gamma",
         "gamma: expected a number, got None"),
        ("lstm", {"train.scheduler": "step", "train.step_size": 0},
         "overrides.lstm.train.step_size", "TrainConfig.step_size=0"),
        ("lstm", {"train.device": "gpu"}, "overrides.lstm.train.device",
         "TrainConfig.device='gpu': choose auto, cpu, cuda or cuda:N"),
        ("ols", {"hac_maxlags": 3.5}, "overrides.ols.hac_maxlags",
         "hac_maxlags: expected an integer, got 3.5"),
        ("temporal_attention", {"scales": [1, 10**9]}, "overrides.temporal_attention.scales",
         "at most 4096 steps each"),
        ("tcn", {"num_levels": 30}, "overrides.tcn.num_levels", "use fewer levels"),
    ],
)  # fmt: skip
def test_values_that_failed_on_the_cluster_are_refused_at_submit(
    model: str, values: dict, field: str, message: str
) -> None:
    pytest.importorskip("models.registry", reason="models.registry not written yet")
    base = mutated("models", [model], mutated("overrides", {}))
    spec = dict(base, overrides={model: values}, tune={"num_samples": 0})
    errors = spec_mod.registry_errors(spec)
    assert [p for p, _ in errors] == [field] and message in errors[0][1], errors


def test_a_model_too_large_to_train_is_refused_with_its_size() -> None:
    """Each width and depth is bounded alone (4096), but 4096 LSTM layers of 4096 units
    are 5.5e11 parameters: accepted, the job ran out of memory on the cluster."""
    pytest.importorskip("models.registry", reason="models.registry not written yet")
    from models.registry import build_module, resolve
    from ray_jobs.spec_overrides import MAX_PARAMETERS, parameter_count

    no_search = mutated("tune", {"num_samples": 0})
    huge = mutated("overrides", {"lstm": {"hidden_size": 4096, "num_layers": 4096}}, no_search)
    errors = spec_mod.registry_errors(huge)
    assert [p for p, _ in errors] == ["overrides.lstm"]
    assert "549,823,234,060 parameters" in errors[0][1] and "lower its widths" in errors[0][1]
    wide = mutated("overrides", {"lstm": {"hidden_size": 2048, "num_layers": 3}}, no_search)
    assert spec_mod.registry_errors(wide) == []  # 84M parameters: big, but trainable
    assert MAX_PARAMETERS >= 100_000_000
    # the count extrapolated from depths 1 and 2 is the module's own, for every depth field
    import torch

    from models.config import ModelDims

    for name, over in [("cnn_bilstm", {"conv_layers": 3, "num_layers": 4}),
                       ("transformer", {"num_layers": 5}), ("tcn", {"num_levels": 6}),
                       ("seq2seq", {"num_layers": 3, "cell": "lstm"}), ("deeplob", {})]:
        config = resolve(name, "balanced", over).model
        with torch.device("meta"):
            module = build_module(name, config, ModelDims(16, 8, 4))
        assert parameter_count(name, config) == sum(p.numel() for p in module.parameters())


def test_a_search_whose_fixed_keys_clash_with_its_space_is_refused() -> None:
    """A key the overrides set is fixed, not searched; `d_model: 36` is valid with the
    preset's 4 heads, but the search tries n_heads 8 with it, and `num_layers: 2000` is
    fine at the preset's width but 790M parameters at the searched 128 (bidirectional):
    both were accepted, and the trials failed on the cluster."""
    pytest.importorskip("models.registry", reason="models.registry not written yet")
    tuned = dict(mutated("models", ["transformer", "lstm"]),
                 tune={"num_samples": 4, "symbols": ["AAPL"]})  # fmt: skip
    clash = dict(tuned, overrides={"transformer": {"d_model": 36}})
    errors = spec_mod.registry_errors(clash)
    assert [p for p, _ in errors] == ["overrides.transformer"], errors
    assert "tune searches transformer with d_model=36 fixed" in errors[0][1]
    assert "d_model=36 is not divisible by n_heads=8" in errors[0][1]
    # the same settings without a search are fine, and so is a fixed key that fits
    assert spec_mod.registry_errors(dict(clash, tune={"num_samples": 0})) == []
    assert spec_mod.registry_errors(dict(tuned, overrides={"transformer": {"d_model": 64}})) == []
    deep = dict(tuned, overrides={"lstm": {"num_layers": 2000}})
    errors = spec_mod.registry_errors(deep)
    assert [p for p, _ in errors] == ["overrides.lstm"] and "790,285,324 parameters" in errors[0][1]
    assert spec_mod.registry_errors(dict(deep, tune={"num_samples": 0})) == []


def test_class_weights_need_a_direction_target() -> None:
    """The training loop refuses class weights for return targets: that spec was accepted
    and every unit of the model failed on the cluster."""
    ret = mutated("target", {"kind": "return", "horizons": [1, 5]})
    ret["tune"]["metric"] = "val_loss"
    errors = errors_of(mutated("overrides", {"lstm": {"train": {"class_weights": True}}}, ret))
    assert errors == [("overrides.lstm.train.class_weights", "weights the 3 direction classes; "
                       "target.kind 'return' has none: drop it or use target.kind: direction")]
    JobSpec.from_dict(mutated("overrides", {"lstm": {"train.class_weights": False}}, ret))
    JobSpec.from_dict(mutated("overrides", {"lstm": {"train.class_weights": True}}))


def test_a_gpu_share_below_rays_resource_unit_is_refused() -> None:
    """Ray refuses a fractional resource below 0.0001 ("The precision of the fractional
    quantity of resource GPU cannot go beyond 0.0001"): the run failed on a GPU cluster."""
    errors = errors_of(mutated("resources.gpu_fraction", 0.00001))
    assert errors == [("resources.gpu_fraction", "1e-05: Ray's smallest resource share is "
                       "0.0001; use 'auto' or a value in [0.0001, 1]")]
    assert JobSpec.from_dict(mutated("resources.gpu_fraction", 0.0001)).resources.gpu_fraction \
        == 0.0001


def test_intraday_horizons_in_bars_are_accepted() -> None:
    """Horizons and embargo count bars of any frequency: one trading day ahead on 1-minute
    bars is h=390, beyond a year of daily bars (252)."""
    spec = JobSpec.from_dict({
        "name": "minutes", "dataset": {"uri": "sample:sp500", "symbols": ["AAPL"]},
        "target": {"kind": "direction", "horizons": [1, 60, 390]}, "models": ["ols"],
        "split": {"embargo": 390},
    })  # fmt: skip
    assert list(spec.target.horizons) == [1, 60, 390]
    assert spec.split.embargo == 390


def test_spec_text_that_python_cannot_read_is_a_spec_error() -> None:
    """An integer of 5,000 digits (Python refuses to convert it) and keys that are not text
    (YAML's `yes:`, `1:`) were tracebacks through `--spec` (ValueError, TypeError)."""
    huge = "9" * 5000
    for read, text in ((JobSpec.from_json, '{"name": "x", "seed": ' + huge + "}"),
                       (JobSpec.from_yaml, f"name: x\nseed: {huge}\n")):
        with pytest.raises(SpecError, match="a number with thousands of digits"):
            read(text)
    with pytest.raises(SpecError) as info:
        JobSpec.from_yaml("name: x\nyes: a\n1: b\ndataset: {uri: 'sample:sp500'}\n"
                          "models: [ols]\n")
    assert "duplicate key" not in str(info.value)
    assert info.value.errors[0][0] == "True" and "is not text" in info.value.errors[0][1]


def test_a_yaml_name_read_as_a_boolean_or_number_is_told_to_quote_it() -> None:
    """`name: on` reads as True and `name: 2024` as an integer: the error says to quote
    it, as it does for such symbols; a plain bad name gets no YAML hint."""
    base = 'dataset: {uri: "sample:sp500", symbols: 2}\nmodels: [ols]\n'
    for name in ("on", "2024", "~"):
        with pytest.raises(SpecError, match=r"in YAML, quote a name that reads as a boolean"):
            JobSpec.from_yaml(f"name: {name}\n{base}")
    with pytest.raises(SpecError) as err:
        JobSpec.from_yaml(f"name: 'a b'\n{base}")
    assert "YAML" not in str(err.value)
    assert JobSpec.from_yaml(f"name: 'on'\n{base}").name == "on"


def test_folds_with_a_holdout_split_are_refused_as_the_cli_refuses_them(tmp_path: Path) -> None:
    """`split: {method: holdout, n_folds: 4}` ran one holdout and dropped the folds without
    a word (`quantray data prepare --split holdout --n-folds 4` refuses it): a spec given
    now is refused, by the service and by `ray_jobs.run --spec`. A stored spec.json that
    holds it (accepted before) still reads back, so its job resumes; 1 and the default 3
    (every stored holdout spec holds 3) are fine."""
    from service.validation import InputError, spec_from_data

    body = {"name": "x", "dataset": {"uri": "sample:sp500", "symbols": 2}, "models": ["ols"]}
    old = {**body, "split": {"method": "holdout", "n_folds": 4}}
    with pytest.raises(InputError) as err:
        spec_from_data(old)
    assert err.value.errors == [{"field": "split.n_folds", "message": (
        "4: folds are for method walk_forward (this split is one holdout); set method: "
        "walk_forward, or leave n_folds out")}]
    path = tmp_path / "old.yaml"
    path.write_text(json.dumps(old), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "ray_jobs.run", "--spec", str(path),
                          "--storage", (tmp_path / "store").as_uri()],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 2 and "split.n_folds: 4: folds are for method walk_forward" \
        in run.stderr, run.stderr
    assert JobSpec.from_dict(old).split.folds == 1  # a stored one reads back
    for n_folds in (1, 3):
        assert spec_from_data({**body, "split": {"method": "holdout", "n_folds": n_folds}})
    assert spec_from_data({**body, "split": {"method": "walk_forward", "n_folds": 4}}
                          ).split.folds == 4
