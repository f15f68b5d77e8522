"""The job spec: which data, which symbols, which models, which preset.

Shared by the HTTP service (validation at the edge, 422 on `SpecError`) and the job driver
(execution), so it imports nothing heavy: stdlib at module level, PyYAML inside the YAML
helpers, `models.config` (plain dataclasses) inside the override check.

Every problem is reported as a (field path, message) pair, all at once, e.g.
`models[2]: unknown model 'lstmm'; known: ols, ridge, ...`. Unknown fields are errors.
The limits the service enforces are the named constants below.

Sequence length: every sequence model of a job uses `features.seq_len` (one prepared
window per symbol, shared by all its models); a model preset's own `seq_len` is ignored.
Overrides: `{model: {<model config field>: v, "train.<TrainConfig field>": v}}`; a nested
`train: {...}` mapping is accepted on input and stored in the dotted form, the same key
form the models' search spaces use.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

# ---- limits: the service rejects specs beyond these (422 naming the field) ---------------
MAX_SYMBOLS = 600  # the whole S&P 500 universe (505) fits; bigger universes: several jobs
MAX_HORIZONS = 8
MAX_HORIZON = 252  # bars: one trading year of daily bars
MIN_SEQ_LEN, MAX_SEQ_LEN = 5, 512
MAX_EPOCHS = 500
MAX_NUM_SAMPLES = 256
MAX_FOLDS = 20
MAX_EMBARGO = 252
MAX_UNITS_PER_RUN = 256  # units one TorchTrainer run trains one after another
MAX_CONCURRENT = 1024
MAX_UNITS = 50_000  # (symbol, model, fold, trial) units of one job
MAX_SEED = 2**32 - 1

MODEL_NAMES = (
    "ols", "ridge", "lasso", "mlp", "lstm", "gru", "cnn", "tcn", "deeplob", "seq2seq",
    "transformer", "temporal_attention", "cnn_gru", "cnn_bilstm",
)  # fmt: skip
LINEAR_MODELS = ("ols", "ridge", "lasso")
DEEP_MODELS = tuple(m for m in MODEL_NAMES if m not in LINEAR_MODELS)
PRESETS = ("fast", "balanced", "quality")
DATASET_KINDS = ("bars", "lob")
TARGET_KINDS = ("direction", "return")
FEATURE_SETS = ("technical",)
SPLIT_METHODS = ("holdout", "walk_forward")
# Tune metric -> mode: the training loop's per-epoch validation metrics
# (models.training.loop: val_loss, val_metric; val_f1 and val_accuracy for direction
# targets, val_mse for return targets).
TUNE_METRICS = {"val_loss": "min", "val_metric": "min", "val_f1": "max", "val_accuracy": "max",
                "val_mse": "min"}  # fmt: skip
_TARGET_ONLY_METRICS = {"val_f1": "direction", "val_accuracy": "direction", "val_mse": "return"}
SMOKE_SYMBOLS, SMOKE_EPOCHS, SMOKE_SEQ_LEN, SMOKE_SAMPLES = 2, 2, 20, 2

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9^][A-Za-z0-9._=^-]{0,31}$")
_KEY_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


class SpecError(ValueError):
    """An invalid job spec: `errors` is a list of (field path, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in self.errors))

    def to_list(self) -> list[dict[str, str]]:
        """`[{"loc": path, "msg": message}, ...]`, the body of a 422 response."""
        return [{"loc": path, "msg": msg} for path, msg in self.errors]


class _Issues:
    """Collects (path, message) pairs of one section, then raises them together."""

    def __init__(self, where: str) -> None:
        self.where, self.items = where, []

    def add(self, name: str, msg: str) -> None:
        path = f"{self.where}.{name}" if self.where and name else (self.where or name)
        self.items.append((path, msg))

    def done(self) -> None:
        if self.items:
            raise SpecError(self.items)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> float | None:
    """A finite number, or None. Numeric strings count: YAML 1.1 reads `1e-3` as a string."""
    if isinstance(v, bool):
        return None
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            return None
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def _int_in(iss: _Issues, name: str, v: Any, lo: int, hi: int, hint: str = "") -> None:
    if not _is_int(v):
        iss.add(name, f"expected an integer in [{lo}, {hi}], got {v!r}{hint}")
    elif not lo <= v <= hi:
        iss.add(name, f"{v} is out of range: use an integer in [{lo}, {hi}]{hint}")


def _one_of(iss: _Issues, name: str, v: Any, allowed: tuple[str, ...]) -> None:
    if v not in allowed:
        iss.add(name, f"unknown value {v!r}; choose one of: {', '.join(allowed)}")


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalise a frozen field (list -> tuple, ...)


@dataclass(frozen=True)
class DatasetSpec:
    """Where the bars (or LOB snapshots) come from and which symbols to train on."""

    uri: str
    symbols: int | tuple[str, ...] = 10  # int: the first N symbols of the dataset, sorted
    start: str | None = None  # ISO date, inclusive
    end: str | None = None  # ISO date, inclusive
    kind: str = "bars"

    def __post_init__(self) -> None:
        iss = _Issues("dataset")
        _check_uri(iss, self.uri)
        if isinstance(self.symbols, list | tuple):
            _set(self, "symbols", tuple(self.symbols))
            _check_symbol_list(iss, "symbols", self.symbols)
        else:
            _int_in(iss, "symbols", self.symbols, 1, MAX_SYMBOLS, " (or a list of symbols)")
        for name in ("start", "end"):
            value = getattr(self, name)
            if isinstance(value, date):
                _set(self, name, value.isoformat())
            elif value is not None:
                try:
                    _set(self, name, date.fromisoformat(str(value)).isoformat())
                except ValueError:
                    iss.add(name, f"{value!r} is not a date: use YYYY-MM-DD")
        if isinstance(self.start, str) and isinstance(self.end, str) and self.start >= self.end:
            iss.add("end", f"end {self.end} must be after start {self.start}")
        _one_of(iss, "kind", self.kind, DATASET_KINDS)
        iss.done()

    @property
    def n_symbols(self) -> int:
        return self.symbols if isinstance(self.symbols, int) else len(self.symbols)


def _check_uri(iss: _Issues, uri: Any) -> None:
    fix = "use sample:NAME, /abs/path, file:///abs/path or s3://bucket/key?endpoint_override=..."
    if not isinstance(uri, str) or not uri.strip():
        iss.add("uri", f"expected a non-empty string; {fix}")
    elif uri.startswith("sample:"):
        if not re.fullmatch(r"sample:[a-z0-9_]+", uri):
            iss.add("uri", f"{uri!r}: a sample name is lowercase letters, digits, _")
    elif uri.startswith("file:"):
        if not uri.startswith("file:///"):
            iss.add("uri", f"{uri!r}: a file URI holds an absolute path: file:///abs/path")
    elif uri.startswith("s3://"):
        if not uri[5:].split("/", 1)[0].split("?", 1)[0]:
            iss.add("uri", f"{uri!r} has no bucket: use s3://bucket/key")
    elif "://" in uri or (":" in uri.split("/", 1)[0]):
        scheme = uri.split(":", 1)[0]
        iss.add("uri", f"unsupported URI scheme {scheme!r}; {fix}")
    elif not uri.startswith("/"):
        iss.add("uri", f"{uri!r} is relative; the job runs on the cluster: {fix}")


def _check_symbol_list(iss: _Issues, name: str, symbols: tuple[Any, ...]) -> None:
    if not symbols:
        iss.add(name, "empty list: give at least one symbol, or an integer N (first N)")
    if len(symbols) > MAX_SYMBOLS:
        iss.add(name, f"{len(symbols)} symbols; at most {MAX_SYMBOLS} per job: split the job")
    for i, s in enumerate(symbols):
        if not isinstance(s, str) or not _SYMBOL_RE.match(s):
            iss.add(f"{name}[{i}]", f"{s!r} is not a ticker (letters, digits, . _ - = ^)")
    dupes = sorted((s for s, n in Counter(symbols).items() if n > 1), key=str)
    if dupes:
        iss.add(name, f"duplicate symbols {dupes}: list each once")


@dataclass(frozen=True)
class TargetSpec:
    """Forward-return / direction targets at each horizon (in bars)."""

    kind: str = "direction"
    horizons: tuple[int, ...] = (1, 5, 10, 20)
    threshold: str | float | tuple[float, ...] = "auto"  # flat band |r| <= tau, per horizon

    def __post_init__(self) -> None:
        iss = _Issues("target")
        _one_of(iss, "kind", self.kind, TARGET_KINDS)
        if not isinstance(self.horizons, list | tuple) or not self.horizons:
            iss.add("horizons", f"give a non-empty list of up to {MAX_HORIZONS} bar counts")
        else:
            _set(self, "horizons", tuple(self.horizons))
            if len(self.horizons) > MAX_HORIZONS:
                iss.add("horizons", f"{len(self.horizons)} horizons; at most {MAX_HORIZONS}")
            for i, h in enumerate(self.horizons):
                _int_in(iss, f"horizons[{i}]", h, 1, MAX_HORIZON)
            if all(_is_int(h) for h in self.horizons) and list(self.horizons) != sorted(
                set(self.horizons)
            ):
                iss.add("horizons", "list horizons increasing, each once, e.g. [1, 5, 10, 20]")
        t = self.threshold
        if isinstance(t, list | tuple):
            _set(self, "threshold", tuple(_num(x) if _num(x) is not None else x for x in t))
            if isinstance(self.horizons, tuple) and len(t) != len(self.horizons):
                iss.add("threshold", f"{len(t)} thresholds for {len(self.horizons)} horizons")
            for i, x in enumerate(t):
                if _num(x) is None or _num(x) < 0:
                    iss.add(f"threshold[{i}]", f"{x!r}: use a return >= 0 such as 0.002")
        elif t != "auto":
            if _num(t) is None or _num(t) < 0:
                iss.add("threshold", f"{t!r}: use 'auto', a return >= 0, or one per horizon")
            else:
                _set(self, "threshold", _num(t))
        iss.done()


@dataclass(frozen=True)
class FeaturesSpec:
    set: str = "technical"
    seq_len: int = 60  # window of every sequence model of the job

    def __post_init__(self) -> None:
        iss = _Issues("features")
        _one_of(iss, "set", self.set, FEATURE_SETS)
        _int_in(iss, "seq_len", self.seq_len, MIN_SEQ_LEN, MAX_SEQ_LEN)
        iss.done()


@dataclass(frozen=True)
class SplitSpec:
    """Chronological splits; walk_forward gives `n_folds` expanding folds."""

    method: str = "holdout"
    train: float = 0.7
    val: float = 0.15
    test: float = 0.15
    n_folds: int = 3
    purge: str | int = "auto"  # auto: the longest horizon
    embargo: int = 5

    def __post_init__(self) -> None:
        iss = _Issues("split")
        _one_of(iss, "method", self.method, SPLIT_METHODS)
        fractions = []
        for name in ("train", "val", "test"):
            v = _num(getattr(self, name))
            if v is None or not 0 < v < 1:
                iss.add(name, f"{getattr(self, name)!r}: use a fraction in (0, 1)")
            else:
                _set(self, name, v)
                fractions.append(v)
        if len(fractions) == 3 and abs(sum(fractions) - 1) > 1e-6:
            iss.add("", f"train + val + test = {sum(fractions):.6g}; make them sum to 1")
        lo = 2 if self.method == "walk_forward" else 1
        _int_in(iss, "n_folds", self.n_folds, lo, MAX_FOLDS)
        if self.purge != "auto":
            _int_in(iss, "purge", self.purge, 0, MAX_HORIZON, " (or 'auto')")
        _int_in(iss, "embargo", self.embargo, 0, MAX_EMBARGO)
        iss.done()

    @property
    def folds(self) -> int:
        return self.n_folds if self.method == "walk_forward" else 1


@dataclass(frozen=True)
class TuneSpec:
    """Ray Tune search over each deep model's search space (num_samples = 0: no search)."""

    num_samples: int = 0
    symbols: int | tuple[str, ...] | None = 3  # search on these (int: the job's first N)
    metric: str = "val_loss"
    max_concurrent: str | int = "auto"
    grace_period: int = 2  # ASHA: epochs before a trial may be stopped

    def __post_init__(self) -> None:
        iss = _Issues("tune")
        _int_in(iss, "num_samples", self.num_samples, 0, MAX_NUM_SAMPLES)
        if isinstance(self.symbols, list | tuple):
            _set(self, "symbols", tuple(self.symbols))
            _check_symbol_list(iss, "symbols", self.symbols)
        elif self.symbols is not None:
            _int_in(iss, "symbols", self.symbols, 1, MAX_SYMBOLS, " (or a list, or null)")
        _one_of(iss, "metric", self.metric, tuple(TUNE_METRICS))
        if self.max_concurrent != "auto":
            _int_in(iss, "max_concurrent", self.max_concurrent, 1, MAX_CONCURRENT, " or 'auto'")
        _int_in(iss, "grace_period", self.grace_period, 1, MAX_EPOCHS)
        iss.done()

    @property
    def mode(self) -> str:
        return TUNE_METRICS[self.metric]


@dataclass(frozen=True)
class ResourcesSpec:
    gpu_fraction: str | float = "auto"  # GPU share of one deep run; auto: by free GPUs
    max_concurrent_runs: str | int = "auto"
    units_per_run: str | int = "auto"  # deep units trained one after another in one run

    def __post_init__(self) -> None:
        iss = _Issues("resources")
        if self.gpu_fraction != "auto":
            g = _num(self.gpu_fraction)
            if g is None or not 0 < g <= 1:
                iss.add("gpu_fraction", f"{self.gpu_fraction!r}: use 'auto' or a value in (0, 1]")
            else:
                _set(self, "gpu_fraction", g)
        if self.max_concurrent_runs != "auto":
            _int_in(iss, "max_concurrent_runs", self.max_concurrent_runs, 1, MAX_CONCURRENT)
        if self.units_per_run != "auto":
            _int_in(iss, "units_per_run", self.units_per_run, 1, MAX_UNITS_PER_RUN, " or 'auto'")
        iss.done()


_SECTIONS: dict[str, type] = {
    "dataset": DatasetSpec, "target": TargetSpec, "features": FeaturesSpec,
    "split": SplitSpec, "tune": TuneSpec, "resources": ResourcesSpec,
}  # fmt: skip
_REQUIRED = ("name", "dataset", "models")


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
            _set(self, "overrides", {m: _flatten_train(v) for m, v in self.overrides.items()})
        errors += _top_level_errors(self)
        if not errors:
            errors = _cross_errors(self)
        if errors:
            raise SpecError(errors)

    # ---- construction / serialisation ---------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any) -> JobSpec:
        if not isinstance(data, dict):
            raise SpecError([("", f"expected a mapping of spec fields, got {type(data).__name__}")])
        known = [f.name for f in dataclasses.fields(cls)]
        errors = [
            (k, f"unknown field; allowed: {', '.join(known)}") for k in data if k not in known
        ]
        errors += [(k, "required field is missing") for k in _REQUIRED if k not in data]
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
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError([("", f"invalid JSON at line {exc.lineno}: {exc.msg}")]) from exc
        return cls.from_dict(data)

    @classmethod
    def from_yaml(cls, text: str | bytes) -> JobSpec:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError([("", f"invalid YAML: {exc}")]) from exc
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
        if tune["symbols"] is not None and not isinstance(tune["symbols"], list):
            tune["symbols"] = 1
        tune["num_samples"] = min(tune["num_samples"], SMOKE_SAMPLES)
        tune["grace_period"] = 1
        d["features"]["seq_len"] = min(d["features"]["seq_len"], SMOKE_SEQ_LEN)
        if self.split.method == "walk_forward":
            d["split"]["n_folds"] = 2
        d["max_epochs"] = min(d["max_epochs"] or SMOKE_EPOCHS, SMOKE_EPOCHS)
        return JobSpec.from_dict(d)


_SECTIONS: dict[str, type] = {
    "dataset": DatasetSpec, "target": TargetSpec, "features": FeaturesSpec,
    "split": SplitSpec, "tune": TuneSpec, "resources": ResourcesSpec,
}  # fmt: skip
_REQUIRED = ("name", "dataset", "models")


def _section_errors(spec: JobSpec | None, values: dict[str, Any]) -> list[tuple[str, str]]:
    """Build each section from its mapping (onto `spec` when given); collect the errors."""
    errors: list[tuple[str, str]] = []
    for key, value in values.items():
        cls = _SECTIONS[key]
        try:
            if not isinstance(value, cls):
                if not isinstance(value, dict):
                    raise SpecError([(key, f"expected a mapping, got {value!r}")])
                known = [f.name for f in dataclasses.fields(cls)]
                unknown = [k for k in value if k not in known]
                if unknown:
                    allowed = ", ".join(known)
                    raise SpecError(
                        [(f"{key}.{k}", f"unknown field; allowed: {allowed}") for k in unknown]
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
        iss.add("name", f"{spec.name!r}: use 1-64 letters, digits, '.', '_', '-'")
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
    _check_overrides(iss, spec.overrides, models if isinstance(models, tuple) else ())
    return iss.items


def _check_overrides(iss: _Issues, overrides: Any, models: tuple[str, ...]) -> None:
    if not isinstance(overrides, dict):
        iss.add("overrides", "expected a mapping {model: {field: value}}")
        return
    from models.config import TrainConfig, config_from_dict  # plain dataclasses, no torch

    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    model_fields = _model_fields()
    for model, values in overrides.items():
        where = f"overrides.{model}"
        if model not in models:
            iss.add(where, f"{model!r} is not in models {list(models)}: add it or drop this")
        if not isinstance(values, dict):
            iss.add(where, "expected a mapping {field: value}")
            continue
        for key, value in values.items():
            is_train = isinstance(key, str) and key.startswith("train.")
            name = key[len("train.") :] if is_train else key
            if not isinstance(name, str) or not _KEY_RE.match(name):
                iss.add(f"{where}.{key}", "a field name is lowercase letters, digits and _")
            elif not is_train and name in train_fields - {"seed"}:
                iss.add(f"{where}.{key}", f"a training setting: write it as train.{name}")
            elif name == "seq_len":
                iss.add(f"{where}.{key}", "all models of a job share one window: set "
                        "features.seq_len instead")  # fmt: skip
            elif not is_train and model in model_fields and name not in model_fields[model]:
                allowed = ", ".join(sorted(model_fields[model])) or "none"
                iss.add(f"{where}.{key}", f"unknown setting of {model}; allowed: {allowed}"
                        " (training settings as train.<field>)")  # fmt: skip
            elif not _scalar_or_list(value):
                iss.add(f"{where}.{key}", f"{value!r}: use a number, string, bool or list")
            elif is_train and name not in train_fields:
                allowed = ", ".join(sorted(train_fields))
                iss.add(f"{where}.{key}", f"unknown training setting; allowed: {allowed}")
            elif is_train and name == "epochs" and _is_int(value) and value > MAX_EPOCHS:
                iss.add(f"{where}.{key}", f"{value}: at most {MAX_EPOCHS} epochs")
            elif is_train:
                try:  # one field at a time, so each message lands on its own path
                    config_from_dict(TrainConfig, {name: value})
                except (ValueError, TypeError) as exc:
                    iss.add(f"{where}.{key}", str(exc))


@functools.lru_cache(maxsize=1)
def _model_fields() -> dict[str, frozenset[str]]:
    """model -> its config fields, from the committed catalog (no torch import here)."""
    catalog = json.loads(Path(__file__).with_name("model_catalog.json").read_text("utf-8"))
    return {
        m["name"]: frozenset(m["presets"]["fast"]) - {"train", "seq_len"}
        for m in catalog["models"]
    }


def _flatten_train(values: Any) -> Any:
    """`{"train": {"lr": x}, ...}` -> `{"train.lr": x, ...}`; anything else unchanged."""
    if not isinstance(values, dict):
        return values
    nested = values.get("train")
    if not isinstance(nested, dict):
        return dict(values)
    flat = {k: v for k, v in values.items() if k != "train"}
    flat.update({f"train.{k}": v for k, v in nested.items()})
    return flat


def _scalar_or_list(v: Any) -> bool:
    if isinstance(v, list | tuple):
        return all(not isinstance(x, list | tuple) and _scalar_or_list(x) for x in v)
    return v is None or isinstance(v, bool | int | float | str)


def _cross_errors(spec: JobSpec) -> list[tuple[str, str]]:
    iss = _Issues("")
    ds, tune = spec.dataset, spec.tune
    if isinstance(tune.symbols, tuple) and isinstance(ds.symbols, tuple):
        extra = [s for s in tune.symbols if s not in ds.symbols]
        if extra:
            iss.add("tune.symbols", f"{extra} are not in dataset.symbols: pick from those")
    need = _TARGET_ONLY_METRICS.get(tune.metric)
    if need and need != spec.target.kind:
        iss.add("tune.metric", f"{tune.metric} exists for {need} targets only; use val_loss")
    if tune.num_samples and not spec.deep_models:
        iss.add("tune.num_samples", "search runs on deep models only: add one, or set it to 0")
    if tune.num_samples and spec.max_epochs is not None and tune.grace_period > spec.max_epochs:
        iss.add("tune.grace_period", f"exceeds max_epochs={spec.max_epochs}: lower it")
    if not iss.items and spec.unit_count() > MAX_UNITS:
        iss.add(
            "dataset.symbols",
            f"{spec.unit_count()} units; at most {MAX_UNITS}: fewer "
            "symbols, models, folds or trials",
        )
    return iss.items


def check_against_registry(spec: JobSpec) -> None:
    """Resolve every model's preset + overrides with `models.registry` (imports torch: for
    the job driver, not the HTTP edge; a linear-only job resolves without torch). Raises
    `SpecError` naming `overrides.<model>`."""
    from models.linear import LINEAR_SPECS, resolve_linear

    errors = []
    for model in spec.models:
        try:
            if model in LINEAR_SPECS:
                resolve_linear(model, spec.preset, spec.overrides.get(model, {}))
                continue
            from models.registry import resolve

            resolve(model, spec.preset, spec.overrides.get(model, {}))
        except (ValueError, TypeError) as exc:
            errors.append((f"overrides.{model}", str(exc)))
    if errors:
        raise SpecError(errors)
