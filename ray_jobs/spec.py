"""The job spec: which data, which symbols, which models, which preset.

Shared by the HTTP service (validation at the edge, 422 on `SpecError`) and the job driver
(execution), so it imports nothing heavy: stdlib at module level, PyYAML inside the YAML
helpers, `models.config` (plain dataclasses) inside the override check.

Every problem is reported as a (field path, message) pair, all at once, e.g.
`models[2]: unknown model 'lstmm'; known: ols, ridge, ...`. Unknown fields are errors.
The limits the service enforces are the named constants of `ray_jobs.spec_sections`.

Sequence length: every sequence model of a job uses `features.seq_len` (one prepared
window per symbol, shared by all its models); a model preset's own `seq_len` is ignored.
Overrides: `{model: {<model config field>: v, "train.<TrainConfig field>": v}}`; a nested
`train: {...}` mapping is accepted on input and stored in the dotted form, the same key
form the models' search spaces use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from data.split_rules import leaky_gap_problem
from ray_jobs.spec_overrides import (
    check_against_registry,
    check_overrides,
    flatten_train,
    fully_fixed_searches,
    train_given_twice,
)
from ray_jobs.spec_sections import (
    _NAME_RE,
    _TARGET_ONLY_METRICS,
    DATASET_KINDS,
    DEEP_MODELS,
    FEATURE_SETS,
    LINEAR_MODELS,
    MAX_CONCURRENT,
    MAX_EMBARGO,
    MAX_EPOCHS,
    MAX_FOLDS,
    MAX_HORIZON,
    MAX_HORIZONS,
    MAX_NUM_SAMPLES,
    MAX_SEED,
    MAX_SEQ_LEN,
    MAX_SYMBOLS,
    MAX_UNITS,
    MAX_UNITS_PER_RUN,
    MIN_SEQ_LEN,
    MODEL_NAMES,
    PRESETS,
    SMOKE_EPOCHS,
    SMOKE_SAMPLES,
    SMOKE_SEQ_LEN,
    SMOKE_SYMBOLS,
    SPLIT_METHODS,
    TARGET_KINDS,
    TUNE_METRICS,
    DatasetSpec,
    FeaturesSpec,
    ResourcesSpec,
    SpecError,
    SplitSpec,
    TargetSpec,
    TuneSpec,
    _int_in,
    _Issues,
    _one_of,
    _set,
)

__all__ = [
    "DATASET_KINDS", "DEEP_MODELS", "FEATURE_SETS", "LINEAR_MODELS", "MAX_CONCURRENT",
    "MAX_EMBARGO", "MAX_EPOCHS", "MAX_FOLDS", "MAX_HORIZON", "MAX_HORIZONS",
    "MAX_NUM_SAMPLES", "MAX_SEED", "MAX_SEQ_LEN", "MAX_SYMBOLS", "MAX_UNITS",
    "MAX_UNITS_PER_RUN", "MIN_SEQ_LEN", "MODEL_NAMES", "PRESETS", "SMOKE_EPOCHS",
    "SMOKE_SAMPLES", "SMOKE_SEQ_LEN", "SMOKE_SYMBOLS", "SPLIT_METHODS", "TARGET_KINDS",
    "TUNE_METRICS", "DatasetSpec", "FeaturesSpec", "JobSpec", "ResourcesSpec", "SpecError",
    "SplitSpec", "TargetSpec", "TuneSpec", "check_against_registry",
]  # fmt: skip


_SECTIONS: dict[str, type] = {
    "dataset": DatasetSpec, "target": TargetSpec, "features": FeaturesSpec,
    "split": SplitSpec, "tune": TuneSpec, "resources": ResourcesSpec,
}  # fmt: skip
_REQUIRED = ("name", "dataset", "models")


def _number_problem(exc: ValueError) -> str:
    """A readable reason for a ValueError from reading spec text: Python refuses to convert
    integers of thousands of digits (sys.get_int_max_str_digits), which no field takes."""
    if "digits" in str(exc):
        return ("a number with thousands of digits, which no field takes; give each field a "
                "value in its range")
    return str(exc)


@dataclass(frozen=True)
class JobSpec:
    """One training job. Build with `from_dict` / `from_yaml` / `from_json`; sections may
    also be given as plain mappings."""

    name: str
    dataset: DatasetSpec
    models: tuple[str, ...]
    target: TargetSpec = field(default_factory=TargetSpec)
    features: FeaturesSpec = field(default_factory=FeaturesSpec)
    split: SplitSpec = field(default_factory=SplitSpec)
    preset: str = "fast"
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # treat as read-only
    tune: TuneSpec = field(default_factory=TuneSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    seed: int = 42
    max_epochs: int | None = None  # caps every deep model's epochs (preset and overrides)

    def __post_init__(self) -> None:
        errors = _section_errors(self, {k: getattr(self, k) for k in _SECTIONS})
        if isinstance(self.models, list):
            _set(self, "models", tuple(self.models))
        if isinstance(self.overrides, dict):  # a copy in canonical dotted form
            errors += train_given_twice(self.overrides)
            _set(self, "overrides", {m: flatten_train(v) for m, v in self.overrides.items()})
        errors += _top_level_errors(self)
        if not errors:
            errors = _cross_errors(self)
        if errors:
            raise SpecError(errors)

    # ---- construction / serialisation ---------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any) -> JobSpec:
        if data is None:  # an empty (or all-comment) YAML document
            raise SpecError([("", "the spec is empty: give at least name, dataset and models "
                                  "(see examples/small.yaml)")])
        if not isinstance(data, dict):
            raise SpecError([("", f"expected a mapping of spec fields, got {type(data).__name__}")])
        known = [f.name for f in dataclasses.fields(cls)]
        errors = [
            (k, f"unknown field; allowed: {', '.join(known)}") if isinstance(k, str) else
            (repr(k), f"the key {k!r} is not text: field names are words such as 'name' "
                      "(quote a key that YAML reads as a boolean, a number or null)")
            for k in data if k not in known
        ]
        errors += [(k, "required field is missing") for k in _REQUIRED if k not in data]
        data = _grace_within_max_epochs(data)
        if not errors:
            return cls(**data)
        # Report every other problem in the same answer.
        if all(k in data for k in _REQUIRED):
            try:
                cls(**{k: v for k, v in data.items() if k in known})
            except SpecError as exc:
                errors += exc.errors
        else:
            errors += _section_errors(None, {k: data[k] for k in _SECTIONS if k in data})
        raise SpecError(errors)

    @classmethod
    def from_json(cls, text: str | bytes) -> JobSpec:
        from ray_jobs.spec_text import DuplicateKey, loads_json

        try:
            data = loads_json(text)
        except json.JSONDecodeError as exc:
            raise SpecError([("", f"invalid JSON at line {exc.lineno}: {exc.msg}")]) from exc
        except DuplicateKey as exc:
            raise SpecError([("", f"invalid JSON: {exc}")]) from exc
        except ValueError as exc:  # an integer of more digits than Python converts
            raise SpecError([("", f"invalid JSON: {_number_problem(exc)}")]) from exc
        return cls.from_dict(data)

    @classmethod
    def from_yaml(cls, text: str | bytes) -> JobSpec:
        import yaml

        from ray_jobs.spec_text import UniqueKeyLoader

        try:
            data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as exc:
            raise SpecError([("", f"invalid YAML: {exc}")]) from exc
        except ValueError as exc:  # an integer of more digits than Python converts
            raise SpecError([("", f"invalid YAML: {_number_problem(exc)}")]) from exc
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; `JobSpec.from_dict(spec.to_dict()) == spec`."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def fingerprint(self) -> str:
        """Stable 16-hex digest of the spec; a resumed job must present the same one."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    # ---- derived views ------------------------------------------------------------------
    @property
    def linear_models(self) -> tuple[str, ...]:
        return tuple(m for m in self.models if m in LINEAR_MODELS)

    @property
    def deep_models(self) -> tuple[str, ...]:
        return tuple(m for m in self.models if m not in LINEAR_MODELS)

    def model_overrides(self, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(model-config kwargs, TrainConfig kwargs) for `model`. `max_epochs` caps an
        overridden `epochs` here; the executor caps the preset's epochs the same way."""
        raw = self.overrides.get(model, {})
        arch = {k: v for k, v in raw.items() if not k.startswith("train.")}
        train = {k[len("train.") :]: v for k, v in raw.items() if k.startswith("train.")}
        if self.max_epochs is not None and "epochs" in train:
            train["epochs"] = min(train["epochs"], self.max_epochs)
        return arch, train

    def tune_symbol_count(self) -> int:
        t, n = self.tune.symbols, self.dataset.n_symbols
        return n if t is None else min(n, t if isinstance(t, int) else len(t))

    def unit_count(self) -> int:
        """Units the planner makes: symbols x models x folds, plus tune trials (deep only)."""
        n = self.dataset.n_symbols * len(self.models) * self.split.folds
        if self.tune.num_samples:
            n += self.tune_symbol_count() * len(self.deep_models) * self.tune.num_samples
        return n

    def prepare_config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `data.prepare.PrepareConfig`, the same for every symbol."""
        t, s = self.target, self.split
        return {
            "kind": self.dataset.kind, "horizons": t.horizons, "seq_len": self.features.seq_len,
            "threshold": t.threshold, "split": s.method, "train": s.train, "val": s.val,
            "test": s.test, "n_folds": s.n_folds, "purge": s.purge, "embargo": s.embargo,
        }  # fmt: skip

    def smoke(self) -> JobSpec:
        """A tiny version of this job: 2 symbols, 2 epochs, short windows, <= 2 trials."""
        d = self.to_dict()
        ds, tune = d["dataset"], d["tune"]
        if not self.name.endswith("-smoke"):
            d["name"] = self.name[:58] + "-smoke"
        if isinstance(ds["symbols"], list):
            ds["symbols"] = ds["symbols"][:SMOKE_SYMBOLS]
            if isinstance(tune["symbols"], list):  # must stay a subset of the job's symbols
                tune["symbols"] = ds["symbols"][:1]
        else:
            ds["symbols"] = min(ds["symbols"], SMOKE_SYMBOLS)
            if isinstance(tune["symbols"], list):  # names the job's first N may not hold:
                tune["symbols"] = 1  # search on the smoke job's first symbol instead
        if tune["symbols"] is not None and not isinstance(tune["symbols"], list):
            tune["symbols"] = 1
        tune["num_samples"] = min(tune["num_samples"], SMOKE_SAMPLES)
        tune["grace_period"] = 1
        d["features"]["seq_len"] = min(d["features"]["seq_len"], SMOKE_SEQ_LEN)
        if self.split.method == "walk_forward":
            d["split"]["n_folds"] = 2
        d["max_epochs"] = min(d["max_epochs"] or SMOKE_EPOCHS, SMOKE_EPOCHS)
        return JobSpec.from_dict(d)


def _section_errors(spec: JobSpec | None, values: dict[str, Any]) -> list[tuple[str, str]]:
    """Build each section from its mapping (onto `spec` when given); collect the errors."""
    errors: list[tuple[str, str]] = []
    for key, value in values.items():
        cls = _SECTIONS[key]
        try:
            if not isinstance(value, cls):
                if not isinstance(value, dict):
                    raise SpecError([(key, f"expected a mapping, got {value!r}")])
                fields = dataclasses.fields(cls)
                known = [f.name for f in fields]
                unknown = [k for k in value if k not in known]
                missing = [f.name for f in fields if f.name not in value
                           and f.default is dataclasses.MISSING]  # e.g. dataset.uri
                if unknown or missing:
                    allowed = ", ".join(known)
                    raise SpecError(
                        [(f"{key}.{k}", f"unknown field; allowed: {allowed}") for k in unknown]
                        + [(f"{key}.{k}", "required field is missing") for k in missing]
                    )
                value = cls(**value)
            if spec is not None:
                _set(spec, key, value)
        except SpecError as exc:
            errors += exc.errors
    return errors


def _top_level_errors(spec: JobSpec) -> list[tuple[str, str]]:
    iss = _Issues("")
    if not isinstance(spec.name, str) or not _NAME_RE.match(spec.name):
        quote = (" (in YAML, quote a name that reads as a boolean, a number or null: "
                 "name: 'on')" if isinstance(spec.name, bool | int | float) or spec.name is None
                 else "")  # fmt: skip
        iss.add("name", f"{spec.name!r}: use 1-64 letters, digits, '.', '_', '-'{quote}")
    models = spec.models
    if not isinstance(models, tuple) or not models:
        iss.add("models", f"give a non-empty list of models from: {', '.join(MODEL_NAMES)}")
    else:
        for i, m in enumerate(models):
            if m not in MODEL_NAMES:
                iss.add(f"models[{i}]", f"unknown model {m!r}; known: {', '.join(MODEL_NAMES)}")
            elif models.index(m) != i:
                iss.add(f"models[{i}]", f"{m!r} is listed twice; list each model once")
    _one_of(iss, "preset", spec.preset, PRESETS)
    _int_in(iss, "seed", spec.seed, 0, MAX_SEED)
    if spec.max_epochs is not None:
        _int_in(iss, "max_epochs", spec.max_epochs, 1, MAX_EPOCHS, " (or null)")
    check_overrides(iss, spec.overrides, models if isinstance(models, tuple) else ())
    return iss.items


def _grace_within_max_epochs(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with tune.grace_period set to max_epochs when the spec leaves it at its
    default (2) and caps the epochs below it: a search with `max_epochs: 1` is valid
    without naming the ASHA setting too. A grace period the spec sets is checked as given."""
    tune, cap = data.get("tune"), data.get("max_epochs")
    default = TuneSpec.__dataclass_fields__["grace_period"].default
    if (isinstance(tune, dict) and "grace_period" not in tune and isinstance(cap, int)
            and not isinstance(cap, bool) and 1 <= cap < default):
        return {**data, "tune": {**tune, "grace_period": cap}}
    return data


def _cross_errors(spec: JobSpec) -> list[tuple[str, str]]:
    iss = _Issues("")
    ds, tune = spec.dataset, spec.tune
    if isinstance(tune.symbols, tuple) and isinstance(ds.symbols, tuple):
        extra = [s for s in tune.symbols if s not in ds.symbols]
        if extra:
            by_case = {s.casefold(): s for s in ds.symbols}
            cased = [f"{s} -> {by_case[s.casefold()]}" for s in extra if s.casefold() in by_case]
            hint = f" (symbols are case-sensitive: {', '.join(cased)}?)" if cased else ""
            iss.add("tune.symbols", f"{extra} are not in dataset.symbols: pick from those{hint}")
    split = spec.split
    if leak := leaky_gap_problem(split.purge, split.embargo, max(spec.target.horizons)):
        iss.add("split.purge", leak)
    need = _TARGET_ONLY_METRICS.get(tune.metric)
    if need and need != spec.target.kind:
        iss.add("tune.metric", f"{tune.metric} exists for {need} targets only; use val_loss")
    if spec.target.kind != "direction" and isinstance(spec.overrides, dict):
        for model, values in spec.overrides.items():  # the loop refused it on the cluster
            if isinstance(values, dict) and values.get("train.class_weights") is True:
                iss.add(f"overrides.{model}.train.class_weights",
                        f"weights the 3 direction classes; target.kind {spec.target.kind!r} "
                        "has none: drop it or use target.kind: direction")  # fmt: skip
    if tune.num_samples and not spec.deep_models:
        iss.add("tune.num_samples", "search runs on deep models only: add one, or set it to 0")
    if tune.num_samples and spec.max_epochs is not None and tune.grace_period > spec.max_epochs:
        iss.add("tune.grace_period", f"exceeds max_epochs={spec.max_epochs}: lower it")
    if tune.num_samples and isinstance(spec.overrides, dict):
        for model in fully_fixed_searches(spec.overrides, spec.deep_models):
            iss.add(f"overrides.{model}", "fixes every key of the model's search space, so "
                    "tune has nothing to search: drop some of them (a fixed key is not "
                    "searched), or set tune.num_samples: 0")  # fmt: skip
    if not iss.items and spec.unit_count() > MAX_UNITS:
        iss.add(
            "dataset.symbols",
            f"{spec.unit_count()} units; at most {MAX_UNITS}: fewer "
            "symbols, models, folds or trials",
        )
    return iss.items


def registry_errors(spec_dict: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for every model override the registry refuses (a value out of range,
    of the wrong type, or inconsistent with another), [] when all resolve. For the API's
    checker process (`service.spec_checker`): the registry imports torch."""
    try:
        check_against_registry(JobSpec.from_dict(spec_dict))
    except SpecError as exc:
        return list(exc.errors)
    return []
