"""Turn validated bars (or LOB snapshots) into `PreparedSymbol`s: one per symbol and fold.

Per symbol: causal features -> drop the warm-up rows -> forward returns per horizon ->
samples (rows with a full `seq_len` window behind them and a label for the longest
horizon ahead) -> chronological splits with purge and embargo -> per fold, thresholds
fitted on the training returns and a scaler fitted on the feature rows up to the last
training sample's decision row -> scaled float32 features.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from data.features import BAR_WARMUP, bar_features
from data.lob_features import LOB_WARMUP, lob_features, mid_price
from data.prepared import SPLITS, PreparedSymbol
from data.scaling import fit_scaler
from data.split_rules import leaky_gap_problem
from data.splits import SplitError, check_fractions, holdout_split, min_samples, walk_forward_splits
from data.targets import fit_thresholds, forward_log_returns, to_classes
from data.validation import validate_bars, validate_lob
from data.validation_report import ValidationReport
from data.wording import counted

__all__ = ["PrepareConfig", "PrepareResult", "prepare_frame", "prepare_symbol", "prepare_validated"]

TIME_COLUMN = {"bars": "date", "lob": "ts"}
WARMUP = {"bars": BAR_WARMUP, "lob": LOB_WARMUP}
SPLIT_METHODS = ("holdout", "walk_forward")


@dataclass(frozen=True)
class PrepareConfig:
    """How a symbol's frame becomes samples. Horizons and seq_len count bars (snapshots for
    LOB); purge "auto" = the longest horizon; min_split_samples is the least every split of
    every fold must keep after purge and embargo."""

    kind: str = "bars"  # bars | lob
    horizons: tuple[int, ...] = (1, 5, 10, 20)
    seq_len: int = 60
    threshold: str | float | tuple[float, ...] = "auto"
    split: str = "holdout"  # holdout | walk_forward
    train: float = 0.7
    val: float = 0.15
    test: float = 0.15
    n_folds: int = 3
    purge: int | str = "auto"
    embargo: int = 5
    min_split_samples: int = 30

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> ValueError:
            return ValueError(f"PrepareConfig.{name}={getattr(self, name)!r}: {fix}")

        # lists (JSON/YAML) -> tuples, so the frozen config stays hashable
        object.__setattr__(self, "horizons", tuple(self.horizons))
        if isinstance(self.threshold, list | tuple):
            object.__setattr__(self, "threshold", tuple(float(t) for t in self.threshold))
        if self.kind not in TIME_COLUMN:
            raise bad("kind", f"use one of {tuple(TIME_COLUMN)}")
        hs = self.horizons
        if not hs or any(not _is_int(h) or h < 1 for h in hs) or list(hs) != sorted(set(hs)):
            raise bad("horizons", "use increasing distinct integers >= 1, e.g. (1, 5, 10, 20)")
        if not _is_int(self.seq_len) or self.seq_len < 1:
            raise bad("seq_len", "use an integer >= 1, e.g. 60")
        t = self.threshold
        taus = t if isinstance(t, tuple) else (t,)
        if t != "auto" and (
            len(taus) not in (1, len(hs))
            or isinstance(t, tuple) and len(t) != len(hs)
            or any(isinstance(x, bool) or not isinstance(x, int | float) or x < 0 for x in taus)
        ):
            raise bad("threshold", f"use 'auto', one float >= 0 or {len(hs)} (one a horizon)")
        if self.split not in SPLIT_METHODS:
            raise bad("split", f"use one of {SPLIT_METHODS}")
        check_fractions(self.train, self.val, self.test)
        if not _is_int(self.n_folds) or self.n_folds < 1:
            raise bad("n_folds", "use an integer >= 1")
        if self.purge != "auto" and (not _is_int(self.purge) or self.purge < 0):
            raise bad("purge", "use 'auto' (= max horizon) or an integer >= 0")
        if not _is_int(self.embargo) or self.embargo < 0:
            raise bad("embargo", "use an integer >= 0")
        if leak := leaky_gap_problem(self.purge, self.embargo, max(hs)):
            raise bad("purge", leak)
        if not _is_int(self.min_split_samples) or self.min_split_samples < 1:
            raise bad("min_split_samples", "use an integer >= 1, e.g. 30")

    @property
    def purge_samples(self) -> int:
        return max(self.horizons) if self.purge == "auto" else int(self.purge)

    def min_rows(self) -> int:
        """Rows a symbol needs: warm-up + (seq_len - 1) window rows + max horizon rows
        without a label + the fewest samples for which every split of every fold keeps
        `min_split_samples` after purge and embargo (data.splits.min_samples)."""
        n = min_samples(self.split, train=self.train, val=self.val, test=self.test,
                        n_folds=self.n_folds, purge=self.purge_samples, embargo=self.embargo,
                        min_size=self.min_split_samples)
        return WARMUP[self.kind] + self.seq_len - 1 + max(self.horizons) + n

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PrepareConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"PrepareConfig: unknown field(s) {unknown}; allowed {sorted(known)}")
        return cls(**values)


# A training split where a class holds less than this share of a horizon's labels gets a
# warning: a model can hardly learn that class, and macro-F1 (which averages the three
# classes' F1) and the majority-class baseline stop meaning what they usually do.
MIN_CLASS_SHARE = 0.05
CLASS_NAMES = ("down", "flat", "up")


def label_imbalance(y_train: np.ndarray, horizons: tuple[int, ...], thresholds: np.ndarray
                    ) -> str | None:
    """The horizons whose (n, H) training classes leave a class under MIN_CLASS_SHARE, with
    their class mix ("h=1 (tau 0.05): 0.7% down / 98.5% flat / 0.7% up"), or None. A fixed
    threshold wider than most moves puts (nearly) every label in "flat"; 0 empties "flat"."""
    y_train = np.asarray(y_train, dtype=np.int64)
    n = y_train.shape[0]
    if n == 0:
        return None
    parts = []
    for j, h in enumerate(horizons):
        share = np.bincount(y_train[:, j], minlength=3) / n
        if share.min() < MIN_CLASS_SHARE:
            mix = " / ".join(f"{100 * v:.1f}% {c}" for v, c in zip(share, CLASS_NAMES,
                                                                    strict=True))
            parts.append(f"h={h} (tau {float(thresholds[j]):.4g}): {mix}")
    return "; ".join(parts) or None


def label_warning(threshold: str | float | tuple[float, ...], imbalance: str) -> str:
    """The warning for a symbol whose training labels are imbalanced (`label_imbalance`)."""
    fix = ("use threshold 'auto' or a threshold per horizon nearer the typical move"
           if threshold != "auto" else "the training returns are one-sided, mostly exactly 0, "
           "or move in whole ticks with few unchanged (no band between tick levels leaves "
           "a third flat: target.kind return, or longer horizons, suit such data)")
    return (f"threshold {threshold!r} leaves a class under {100 * MIN_CLASS_SHARE:.0f}% of "
            f"the training labels: {imbalance}. Models can hardly learn that class, and "
            f"macro-F1 and the majority baseline mislead; {fix}")


# An explicit threshold whose flat band holds only returns of exactly 0 (0, or any tau under
# the smallest move: prices that move in ticks) gets a warning where at least this share of
# a horizon's training returns are exactly 0 (below it, "flat" is nearly empty and
# label_imbalance says so).
ZERO_RETURN_SHARE = MIN_CLASS_SHARE


def zero_width_band(train_returns: np.ndarray, horizons: tuple[int, ...],
                    thresholds: np.ndarray) -> str | None:
    """The horizons whose flat band [-tau, tau] holds no non-zero training return while at
    least ZERO_RETURN_SHARE of the (n, H) training returns are exactly 0, with that share
    and the smallest move ("h=1 (tau 0): 41.3% of the training returns are exactly 0, the
    smallest move is 0.003"), or None. "auto" never gives such a band (it takes half the
    smallest move where its quantile is 0); an explicit threshold of 0 does."""
    r = np.abs(np.asarray(train_returns, dtype=np.float64))
    parts = []
    for j, h in enumerate(horizons):
        a = r[:, j][np.isfinite(r[:, j])]
        if a.size == 0:
            continue
        zero, moved = float((a == 0).mean()), a[a > 0]
        tau = float(thresholds[j])
        if zero >= ZERO_RETURN_SHARE and not (moved <= tau).any():
            smallest = (f"the smallest move is {moved.min():.4g}" if moved.size
                        else "no return moved")
            parts.append(f"h={h} (tau {tau:.4g}): {100 * zero:.1f}% of the training returns "
                         f"are exactly 0, {smallest}")
    return "; ".join(parts) or None


def zero_band_warning(threshold: str | float | tuple[float, ...], band: str) -> str:
    """The warning for a symbol whose explicit threshold leaves a flat band of exactly-0
    returns only (`zero_width_band`)."""
    return (f"threshold {threshold!r} leaves a flat band that holds only returns of exactly 0 "
            f"(prices that move in ticks): {band}. Every unchanged price is \"flat\" and no "
            "move is, so a model that forecasts a continuous return never predicts \"flat\"; "
            "use threshold 'auto' (here half the smallest move: the same classes with a band "
            "of non-zero width) or a threshold above the tick size (the smallest move)")


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


@dataclass
class PrepareResult:
    """prepared: symbol -> one PreparedSymbol per fold; dropped: symbol -> reason (from
    validation or preparation); report: the validation report."""

    prepared: dict[str, list[PreparedSymbol]]
    dropped: dict[str, str]
    report: ValidationReport
    config: PrepareConfig = field(default_factory=PrepareConfig)

    @property
    def warnings(self) -> dict[str, str]:
        """symbol -> warning about a kept symbol: the validation report's (a long gap)
        and its labels' (a class (nearly) empty in a training split, see label_warning; an
        explicit threshold whose flat band holds only exactly-0 returns of tick-sized
        prices, see zero_band_warning)."""
        return merged_warnings(self.report.warnings, self.prepared)


def merged_warnings(validation: dict[str, str], prepared: dict[str, list[PreparedSymbol]]
                    ) -> dict[str, str]:
    """The validation warnings and each prepared symbol's label warnings (from its folds'
    `meta["label_imbalance"]` and `meta["zero_width_band"]`), one message per symbol."""
    out = dict(validation)
    for symbol, folds in prepared.items():
        threshold = folds[0].meta["config"]["threshold"]
        for key, warning in (("label_imbalance", label_warning),
                             ("zero_width_band", zero_band_warning)):
            parts = [(f"fold {prep.fold}: " if len(folds) > 1 else "") + prep.meta[key]
                     for prep in folds if prep.meta.get(key)]
            if parts:
                msg = warning(threshold, "; ".join(parts))
                out[symbol] = f"{out[symbol]}; {msg}" if symbol in out else msg
    return out


def _features(df: pd.DataFrame, kind: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(features (T, F), names, price (T,)) for one symbol's frame."""
    if kind == "bars":
        x, names = bar_features(df)
        return x, names, df["close"].to_numpy(np.float64)
    x, names = lob_features(df)
    return x, names, mid_price(df)


def _symbol_of(df: pd.DataFrame) -> str:
    if "symbol" not in df.columns or len(df) == 0:
        raise ValueError("prepare_symbol: need a non-empty frame with a 'symbol' column")
    symbols = df["symbol"].to_numpy()
    if not (symbols == symbols[0]).all():
        raise ValueError(
            "prepare_symbol: frame holds several symbols; pass one symbol's rows "
            "(prepare_frame splits a long frame for you)"
        )
    return str(symbols[0])


def _iso(t: np.datetime64) -> str:
    return str(np.datetime_as_string(t, unit="s"))


def prepare_symbol(df: pd.DataFrame, cfg: PrepareConfig) -> list[PreparedSymbol]:
    """One symbol's validated frame (sorted by time) -> one PreparedSymbol per fold."""
    symbol = _symbol_of(df)
    time_col = TIME_COLUMN[cfg.kind]
    times = df[time_col].to_numpy(dtype="datetime64[ns]")
    if len(times) > 1 and not (np.diff(times) > np.timedelta64(0, "ns")).all():
        raise ValueError(
            f"symbol {symbol!r}: {time_col} is not strictly increasing; validate the frame "
            f"first (data.validation sorts it and rejects duplicates)"
        )

    def too_short(detail: str) -> ValueError:
        return ValueError(
            f"symbol {symbol!r}: {counted(len(df), 'row')}, at least {cfg.min_rows()} are "
            "needed "
            f"(warm-up + seq_len - 1 + max horizon + split minimum; {detail}); load more "
            f"history or lower seq_len/horizons/min_split_samples (walk-forward: n_folds)"
        )

    raw, names, price = _features(df, cfg.kind)
    warmup = WARMUP[cfg.kind]
    feats, price, times = raw[warmup:], price[warmup:], times[warmup:]  # (T', F)
    bad = ~np.isfinite(feats)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"symbol {symbol!r}: feature {names[col]!r} is not finite at {_iso(times[row])} "
            f"({counted(int(bad.any(axis=1).sum()), 'row')} affected): missing, "
            "non-positive or absurdly large inputs there (data.validation refuses them: "
            "validate the frame first), or drop the symbol"
        )
    row0, max_h = cfg.seq_len - 1, max(cfg.horizons)
    n = len(feats) - row0 - max_h  # samples: full window behind, label for max_h ahead
    if n < 1:
        raise too_short("no sample has a full window and a label")
    t_rows = n + row0  # feature rows kept (the last max_h rows have no label)
    # (T', H) -> (N, H): returns at each sample's decision row; all finite by construction
    y_return = forward_log_returns(price, cfg.horizons)[row0 : row0 + n].astype(np.float32)

    try:
        if cfg.split == "holdout":
            folds = [
                holdout_split(n, cfg.train, cfg.val, cfg.test, cfg.purge_samples, cfg.embargo,
                              min_size=cfg.min_split_samples)
            ]
        else:
            folds = walk_forward_splits(n, cfg.n_folds, cfg.train, cfg.val, cfg.purge_samples,
                                        cfg.embargo, min_size=cfg.min_split_samples)
    except SplitError as exc:
        raise too_short(str(exc)) from exc

    out = []
    for k, splits in enumerate(folds):
        train = splits["train"]
        thresholds = fit_thresholds(y_return[train], cfg.threshold)
        y_class = to_classes(y_return, thresholds)
        # fit on every feature row a training sample can see, i.e. up to its decision row
        fit_stop = row0 + int(train[-1]) + 1
        scaler = fit_scaler(feats[:fit_stop])
        window = {
            name: {
                "start": _iso(times[row0 + int(splits[name][0])]),
                "end": _iso(times[row0 + int(splits[name][-1])]),
                "n_samples": int(len(splits[name])),
            }
            for name in SPLITS
        }
        out.append(
            PreparedSymbol(
                symbol=symbol,
                features=scaler.transform(feats[:t_rows]),
                feature_names=tuple(names),
                timestamps=times[:t_rows].copy(),
                y_return=y_return,
                y_class=y_class,
                horizons=cfg.horizons,
                seq_len=cfg.seq_len,
                splits=splits,
                thresholds=thresholds,
                scaler_mean=scaler.mean,
                scaler_std=scaler.std,
                fold=k,
                meta={
                    "kind": cfg.kind,
                    "config": cfg.to_dict(),
                    "n_folds": len(folds),
                    "window": window,
                    "rows_in": int(len(df)),
                    "warmup_rows": int(warmup),
                    "purge": cfg.purge_samples,
                    "embargo": cfg.embargo,
                    "scaler_fit_rows": fit_stop,
                    "label_imbalance": label_imbalance(y_class[train], cfg.horizons,
                                                       thresholds),
                    # an explicit threshold only: the user asked for it, and "auto" widens
                    # such a band itself
                    "zero_width_band": None if cfg.threshold == "auto" else zero_width_band(
                        y_return[train], cfg.horizons, thresholds),
                },
            )
        )
    return out


def _symbol_slices(symbols: np.ndarray) -> list[tuple[str, int, int]]:
    """(symbol, start, stop) row ranges of a frame sorted by symbol."""
    if len(symbols) == 0:
        return []
    change = np.flatnonzero(symbols[1:] != symbols[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(symbols)]])
    return [(str(symbols[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def prepare_validated(clean: pd.DataFrame, cfg: PrepareConfig, on_error: str = "drop"
                      ) -> tuple[dict[str, list[PreparedSymbol]], dict[str, str]]:
    """Prepare every symbol of an already validated frame (sorted by symbol, time).

    Returns (prepared, dropped); with on_error="raise" the first failure propagates.
    """
    prepared: dict[str, list[PreparedSymbol]] = {}
    dropped: dict[str, str] = {}
    for symbol, a, b in _symbol_slices(clean["symbol"].to_numpy()):
        try:
            prepared[symbol] = prepare_symbol(clean.iloc[a:b], cfg)
        except ValueError as exc:  # data problems only; bugs (TypeError, ...) propagate
            if on_error == "raise":
                raise
            dropped[symbol] = str(exc)
    return prepared, dropped


def prepare_frame(df: pd.DataFrame, cfg: PrepareConfig, on_error: str = "drop") -> PrepareResult:
    """Validate a long frame (min_rows = cfg.min_rows()) and prepare every symbol.

    on_error="drop": a symbol that fails validation or preparation is left out and its
    reason kept in `dropped`; "raise": the first failure propagates.
    """
    if on_error not in ("drop", "raise"):
        raise ValueError(f"on_error={on_error!r}: use 'drop' or 'raise'")
    validate = validate_bars if cfg.kind == "bars" else validate_lob
    clean, report = validate(df, min_rows=cfg.min_rows(), on_error=on_error)
    prepared, failed = prepare_validated(clean, cfg, on_error)
    return PrepareResult(prepared=prepared, dropped={**report.dropped, **failed},
                         report=report, config=cfg)
