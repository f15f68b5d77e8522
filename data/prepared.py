"""The prepared-symbol object: what every model of a symbol trains on.

One `PreparedSymbol` holds one symbol's scaled features, targets and one set of
chronological split indices (one fold). It carries only numpy arrays and plain
values, so it pickles cheaply (Ray object store, files) and rebuilds from a dict.

Index conventions
- `features` (T, F): scaled feature rows, float32, C-contiguous, rows in time order,
  starting after the feature warm-up (no NaN anywhere).
- Sample i has its decision time at feature row `row0 + i` (`row0 = seq_len - 1`), so
  its sequence window is `features[i : i + seq_len]` and its tabular row is
  `features[row0 + i]`. Samples are contiguous; there are `n_samples` of them and the
  last one still has a label for the longest horizon.
- `splits` maps "train", "val", "test" to int64 sample indices (ascending). Purge and
  embargo are already applied: no train label window reaches a later split.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from data.wording import counted

SPLITS = ("train", "val", "test")


@dataclass
class PreparedSymbol:
    symbol: str
    features: np.ndarray  # (T, F) float32, scaled with train-only statistics
    feature_names: tuple[str, ...]
    timestamps: np.ndarray  # (T,) datetime64[ns], time of each feature row
    y_return: np.ndarray  # (N, H) float32, forward log return per horizon
    y_class: np.ndarray  # (N, H) int64, 0 down / 1 flat / 2 up
    horizons: tuple[int, ...]
    seq_len: int
    splits: dict[str, np.ndarray]  # name -> sample indices
    thresholds: np.ndarray  # (H,) float32, flat band |r| <= tau_h, fitted on train
    scaler_mean: np.ndarray  # (F,) float32
    scaler_std: np.ndarray  # (F,) float32
    fold: int = 0
    meta: dict[str, Any] = field(default_factory=dict)  # data window, report, kind, ...

    def __post_init__(self) -> None:
        n, h = self.y_return.shape
        if self.y_class.shape != (n, h):
            raise ValueError(f"y_class shape {self.y_class.shape} != y_return shape {(n, h)}")
        if len(self.horizons) != h:
            raise ValueError(f"{counted(h, 'target column')} but horizons={self.horizons}")
        if self.features.shape[0] != n + self.seq_len - 1:
            raise ValueError(
                f"features has {counted(self.features.shape[0], 'row')}; expected n_samples "
                "+ seq_len - 1"
                f" = {n + self.seq_len - 1}"
            )

    # ---- shapes -------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return int(self.y_return.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def row0(self) -> int:
        return self.seq_len - 1

    # ---- model inputs -------------------------------------------------------------
    @property
    def X(self) -> np.ndarray:
        """Tabular inputs (N, F): each sample's feature row at its decision time (view)."""
        return self.features[self.row0 :]

    @property
    def X_seq(self) -> np.ndarray:
        """Sequence inputs (N, seq_len, F) as a zero-copy strided view of `features`."""
        # [T, F] -> [T - L + 1, F, L] -> [N, L, F]
        return sliding_window_view(self.features, self.seq_len, axis=0).transpose(0, 2, 1)

    @property
    def sample_times(self) -> np.ndarray:
        """(N,) decision time of each sample."""
        return self.timestamps[self.row0 :]

    def data_window(self) -> dict[str, dict[str, Any]]:
        """split -> first/last decision time (ISO 8601: '2021-01-14T20:30:00', fractions of
        a second only where there are any) and sample count: what a model saw and when."""
        times = self.sample_times
        return {
            split: {"start": _iso(times[idx[0]]), "end": _iso(times[idx[-1]]),
                    "n": int(len(idx))}
            for split, idx in self.splits.items()
            if len(idx)
        }  # fmt: skip

    def split_arrays(self, split: str, sequence: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, y_class, y_return) of one split, gathered into C-contiguous copies."""
        idx = self.splits[split]
        x = self.X_seq[idx] if sequence else self.X[idx]
        return (
            np.ascontiguousarray(x, dtype=np.float32),
            self.y_class[idx],
            self.y_return[idx],
        )

    def classify(self, returns: np.ndarray) -> np.ndarray:
        """Map (n, H) returns to direction classes with this symbol's training thresholds."""
        tau = self.thresholds.reshape(1, -1)
        return np.where(returns > tau, 2, np.where(returns < -tau, 0, 1)).astype(np.int64)

    # ---- (de)serialization: plain dict of arrays and values, no pickled frames ---------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreparedSymbol:
        d = dict(d)
        d["feature_names"] = tuple(d["feature_names"])
        d["horizons"] = tuple(int(h) for h in d["horizons"])
        d["splits"] = {k: np.asarray(v, dtype=np.int64) for k, v in d["splits"].items()}
        return cls(**d)

    def save_npz(self, path: str) -> None:
        """Write as one .npz (arrays) with a JSON header (values)."""
        import json

        arrays = {
            "features": self.features,
            "timestamps": self.timestamps.astype("datetime64[ns]").astype(np.int64),
            "y_return": self.y_return,
            "y_class": self.y_class,
            "thresholds": self.thresholds,
            "scaler_mean": self.scaler_mean,
            "scaler_std": self.scaler_std,
            **{f"split_{k}": v for k, v in self.splits.items()},
        }
        header = {
            "symbol": self.symbol,
            "feature_names": list(self.feature_names),
            "horizons": list(self.horizons),
            "seq_len": self.seq_len,
            "fold": self.fold,
            "meta": self.meta,
        }
        np.savez(path, header=np.array(json.dumps(header, default=str)), **arrays)

    @classmethod
    def load_npz(cls, path: str) -> PreparedSymbol:
        import json

        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            splits = {k[len("split_") :]: z[k] for k in z.files if k.startswith("split_")}
            return cls(
                symbol=header["symbol"],
                features=z["features"],
                feature_names=tuple(header["feature_names"]),
                timestamps=z["timestamps"].astype("datetime64[ns]"),
                y_return=z["y_return"],
                y_class=z["y_class"],
                horizons=tuple(header["horizons"]),
                seq_len=int(header["seq_len"]),
                splits=splits,
                thresholds=z["thresholds"],
                scaler_mean=z["scaler_mean"],
                scaler_std=z["scaler_std"],
                fold=int(header["fold"]),
                meta=header["meta"],
            )


def _iso(t: np.datetime64) -> str:
    seconds = np.datetime_as_string(t, unit="s")
    fraction = int((t - t.astype("datetime64[s]")) / np.timedelta64(1, "ns"))
    return seconds if fraction == 0 else f"{seconds}.{fraction:09d}".rstrip("0")
