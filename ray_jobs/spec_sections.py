"""The job spec's building blocks: its limits and names, and the sections dataset, tune and
resources. The error type, the checks every section shares and the data sections (target,
features, split) are in `data.spec_rules`, since preparing data outside a job checks them
too; they are re-exported here. `ray_jobs.spec` builds the whole `JobSpec` from them and
re-exports them; see its docstring for the rules. Stdlib only.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

# the data layer's part of the spec (see the docstring), re-exported for ray_jobs.spec
from data.spec_rules import (  # noqa: F401
    DEFAULT_SEQ_LEN,
    ECHO_CHARS,
    FEATURE_SETS,
    FIRST_DATE,
    LAST_DATE,
    MAX_EMBARGO,
    MAX_FOLDS,
    MAX_HORIZON,
    MAX_HORIZONS,
    MAX_SEQ_LEN,
    MIN_SEQ_LEN,
    SPLIT_METHODS,
    TARGET_KINDS,
    FeaturesSpec,
    SpecError,
    SplitSpec,
    TargetSpec,
    _int_in,
    _is_int,
    _Issues,
    _num,
    _one_of,
    _set,
    _short_path,
    shorten_echoes,
)
from data.symbols import name_clashes, safe_symbol, symbol_problem

# ---- limits: the service rejects specs beyond these (422 naming the field) ---------------
MAX_SYMBOLS = 600  # the whole S&P 500 universe (505) fits; bigger universes: several jobs
MAX_EPOCHS = 500
MAX_NUM_SAMPLES = 256
MAX_UNITS_PER_RUN = 256  # units one TorchTrainer run trains one after another
MAX_CONCURRENT = 1024
MAX_UNITS = 50_000  # (symbol, model, fold, trial) units of one job
MAX_SEED = 2**32 - 1
MIN_GPU_FRACTION = 0.0001  # Ray's resource unit (ray_constants.MIN_RESOURCE_GRANULARITY)

MODEL_NAMES = (
    "ols", "ridge", "lasso", "mlp", "lstm", "gru", "cnn", "tcn", "deeplob", "seq2seq",
    "transformer", "temporal_attention", "cnn_gru", "cnn_bilstm",
)  # fmt: skip
LINEAR_MODELS = ("ols", "ridge", "lasso")
DEEP_MODELS = tuple(m for m in MODEL_NAMES if m not in LINEAR_MODELS)
PRESETS = ("fast", "balanced", "quality")
DATASET_KINDS = ("bars", "lob")
# Tune metric -> mode: the training loop's per-epoch validation metrics
# (models.training.loop: val_loss, val_metric; val_f1 and val_accuracy for direction
# targets, val_mse for return targets).
TUNE_METRICS = {"val_loss": "min", "val_metric": "min", "val_f1": "max", "val_accuracy": "max",
                "val_mse": "min"}  # fmt: skip
_TARGET_ONLY_METRICS = {"val_f1": "direction", "val_accuracy": "direction", "val_mse": "return"}
SMOKE_SYMBOLS, SMOKE_EPOCHS, SMOKE_SEQ_LEN, SMOKE_SAMPLES = 2, 2, 20, 2

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEY_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


def _iso_time(text: str) -> str:
    """`text` as a normalised ISO date (`2018-02-07`) or datetime; ValueError if neither."""
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        return datetime.fromisoformat(text).isoformat()


def _naive(text: str) -> datetime:
    """An ISO date or datetime as a naive UTC datetime, for comparing bounds."""
    t = datetime.fromisoformat(text)
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


@dataclass(frozen=True)
class DatasetSpec:
    """Where the bars (or LOB snapshots) come from and which symbols to train on."""

    uri: str
    symbols: int | tuple[str, ...] = 10  # int: the first N symbols of the dataset, sorted
    start: str | None = None  # ISO date or datetime, inclusive (a date: its whole day)
    end: str | None = None  # ISO date or datetime, inclusive (a date: its whole day)
    kind: str = "bars"

    def __post_init__(self) -> None:
        iss = _Issues("dataset")
        _check_uri(iss, self.uri)
        if isinstance(self.symbols, list | tuple):
            _set(self, "symbols", tuple(self.symbols))
            _check_symbol_list(iss, "symbols", self.symbols)
        else:
            _int_in(iss, "symbols", self.symbols, 1, MAX_SYMBOLS, " (or a list of symbols)")
        bad = set()  # start/end that are no datable time
        for name in ("start", "end"):
            value = getattr(self, name)
            if isinstance(value, date):
                _set(self, name, value.isoformat())
            elif isinstance(value, int | float):  # 20170101 or epoch seconds: ambiguous
                bad.add(name)
                iss.add(name, f"{value!r} is a number, not a date: write it as 'YYYY-MM-DD' "
                        "or an ISO datetime such as '2021-01-04T09:35:00' (quoted in YAML)")
                continue
            elif value is not None:
                try:
                    _set(self, name, _iso_time(str(value)))
                except ValueError:
                    bad.add(name)
                    iss.add(name, f"{value!r} is not a date: use YYYY-MM-DD, or an ISO "
                            "datetime such as 2021-01-04T09:35:00")  # fmt: skip
                    continue
            value = getattr(self, name)
            if value is not None and not FIRST_DATE <= value[:10] <= LAST_DATE:
                bad.add(name)
                iss.add(name, f"{value} is outside the dates a dataset's times can have "
                        f"({FIRST_DATE} to {LAST_DATE}): give a date in that range, or leave "
                        f"{name} out for no bound")
        dates_ok = not bad
        if dates_ok and isinstance(self.start, str) and isinstance(self.end, str):
            lo, hi = _naive(self.start), _naive(self.end)
            if len(self.end) == 10:  # a date: the whole day is in
                hi += timedelta(days=1) - timedelta(microseconds=1)
            if lo > hi:
                iss.add("end", f"end {self.end} is before start {self.start} (both inclusive)")
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
    problems = {i: symbol_problem(s) for i, s in enumerate(symbols)}
    clashes = name_clashes(s for i, s in enumerate(symbols) if not problems[i])
    for i, s in enumerate(symbols):
        if problems[i]:
            iss.add(f"{name}[{i}]", f"{s!r} is not a usable symbol: {problems[i]}")
        elif s in clashes:
            iss.add(f"{name}[{i}]", f"{s!r} and {clashes[s]!r} both name their files "
                    f"{safe_symbol(s)!r}: a job can hold only one of them")  # fmt: skip
    # only the usable ones: a list or mapping among them is unhashable (and reported above)
    usable = [s for i, s in enumerate(symbols) if not problems[i]]
    dupes = sorted((s for s, n in Counter(usable).items() if n > 1), key=str)
    if dupes:
        iss.add(name, f"duplicate symbols {dupes}: list each once")


@dataclass(frozen=True)
class TuneSpec:
    """Ray Tune search over each deep model's search space (num_samples = 0: no search)."""

    num_samples: int = 0
    symbols: int | tuple[str, ...] | None = 3  # search on these (int: the job's first N usable)
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
    gpu_fraction: str | float = "auto"  # GPU share of one deep run; auto: by memory
    # (ray_jobs/placement.py)
    max_concurrent_runs: str | int = "auto"
    units_per_run: str | int = "auto"  # deep units trained one after another in one run

    def __post_init__(self) -> None:
        iss = _Issues("resources")
        if self.gpu_fraction != "auto":
            g = _num(self.gpu_fraction)
            if g is None or not 0 < g <= 1:
                iss.add("gpu_fraction", f"{self.gpu_fraction!r}: use 'auto' or a value in (0, 1]")
            elif g < MIN_GPU_FRACTION:  # Ray refused the run's resources on the cluster
                iss.add("gpu_fraction", f"{g!r}: Ray's smallest resource share is "
                        f"{MIN_GPU_FRACTION}; use 'auto' or a value in [{MIN_GPU_FRACTION}, 1]")
            else:
                _set(self, "gpu_fraction", g)
        if self.max_concurrent_runs != "auto":
            _int_in(iss, "max_concurrent_runs", self.max_concurrent_runs, 1, MAX_CONCURRENT)
        if self.units_per_run != "auto":
            _int_in(iss, "units_per_run", self.units_per_run, 1, MAX_UNITS_PER_RUN, " or 'auto'")
        iss.done()
