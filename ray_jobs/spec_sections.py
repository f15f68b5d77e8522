"""The job spec's building blocks: its limits and names, the error type, the checks every
section shares, and the sections themselves (dataset, target, features, split, tune,
resources). `ray_jobs.spec` builds the whole `JobSpec` from them and re-exports them; see
its docstring for the rules. Stdlib only.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from data.split_rules import DEFAULT_SEQ_LEN, MAX_SEQ_LEN, MIN_SEQ_LEN
from data.symbols import name_clashes, safe_symbol, symbol_problem

# ---- limits: the service rejects specs beyond these (422 naming the field) ---------------
MAX_SYMBOLS = 600  # the whole S&P 500 universe (505) fits; bigger universes: several jobs
MAX_HORIZONS = 8
# bars, of any frequency: a year of daily bars, about 10 trading days of 1-minute bars
# (390 a day: a one-day-ahead label on minute data is h=390); data too short for a long
# horizon fails its symbol's row check (`PrepareConfig.min_rows`), naming the rows needed
MAX_HORIZON = 4096
MAX_EPOCHS = 500
MAX_NUM_SAMPLES = 256
MAX_FOLDS = 20
MAX_EMBARGO = 4096  # bars, as MAX_HORIZON
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
_KEY_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


ECHO_CHARS = 60  # of a quoted value or a field path echoed in an error message
_LONG_QUOTED = re.compile(r"""(['"])([^'"]{""" + str(ECHO_CHARS + 20) + r""",})\1""")


def shorten_echoes(text: str) -> str:
    """`text` with every quoted value longer than ECHO_CHARS + 20 cut to its first
    ECHO_CHARS characters and its length: a 5,000-character name is not sent back whole."""
    return _LONG_QUOTED.sub(
        lambda m: f"{m[1]}{m[2][:ECHO_CHARS]}...{m[1]} ({len(m[2])} characters)", text)


def _short_path(path: str) -> str:
    return path if len(path) <= 2 * ECHO_CHARS else f"{path[:ECHO_CHARS]}..."


class SpecError(ValueError):
    """An invalid job spec: `errors` is a list of (field path, message) pairs; quoted values
    and paths of absurd length are shortened (`shorten_echoes`)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = [(_short_path(p), shorten_echoes(m)) for p, m in errors]
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
        dates_ok = True
        for name in ("start", "end"):
            value = getattr(self, name)
            if isinstance(value, date):
                _set(self, name, value.isoformat())
            elif value is not None:
                try:
                    _set(self, name, _iso_time(str(value)))
                except ValueError:
                    dates_ok = False
                    iss.add(name, f"{value!r} is not a date: use YYYY-MM-DD, or an ISO "
                            "datetime such as 2021-01-04T09:35:00")  # fmt: skip
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
    seq_len: int = DEFAULT_SEQ_LEN  # window of every sequence model of the job

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
