"""What every linear model shares: its config base, the fitted model, and storage.

A linear model regresses each horizon's forward log return on the tabular inputs
X (N, F) of the training split: r_h = b_h + X w_h + e_h. Each estimator file (`ols.py`,
`ridge.py`, `lasso.py`) only turns training/validation arrays into a `LinearFit`.

From returns to classes (so linear models share the leaderboard with classifiers):
`predict_proba` treats the forecast as a predictive distribution r ~ mu(x) + e, with e
either Gaussian N(0, s_h^2) (s_h = training residual std, ddof = fitted parameters) or
the empirical training residuals (`predictive="empirical"`), and integrates it over the
class bands of the training thresholds tau_h (`PreparedSymbol.thresholds`):
    P(down) = P(r < -tau_h),  P(up) = P(r > tau_h),  P(flat) = 1 - P(down) - P(up).
`predict` is the argmax of those probabilities, the Bayes decision under that predictive
model. Thresholding the point forecast itself (`PreparedSymbol.classify(predict_return)`)
is the literal mapping, but a conditional mean is far less volatile than realized returns,
so it lands inside the flat band almost always; the band probabilities keep the training
thresholds and still use the sign and size of the forecast.

Storage, no pickle anywhere: `metadata.json` (name, kind, config, horizons, thresholds,
feature names, fit summary), `stats.json` (per-horizon coefficient tables by feature name)
and `arrays.npz` (coefficients, intercepts, residuals and estimator statistics), read back
with `np.load(allow_pickle=False)`. The JSON files are compact, one line each
(`python -m json.tool` indents them): a sweep writes them for every unit.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr

from models.spec import save_artifact_files

PREDICTIVES = ("gaussian", "empirical")
ARRAYS_FILE = "arrays.npz"
METADATA_FILE = "metadata.json"
STATS_FILE = "stats.json"
COEF_STATS = ("bse", "tvalues", "pvalues")  # per-coefficient arrays (H, 1 + F), const first


@dataclass(frozen=True)
class LinearConfig:
    """Settings every linear model has."""

    predictive: str = "gaussian"  # residual distribution behind predict_proba

    def __post_init__(self) -> None:
        if self.predictive not in PREDICTIVES:
            raise ValueError(
                f"{type(self).__name__}.predictive={self.predictive!r}: choose one of {PREDICTIVES}"
            )


@dataclass
class LinearFit:
    """What an estimator returns: per-horizon coefficients and its own statistics."""

    coef: np.ndarray  # (H, F) float64
    intercept: np.ndarray  # (H,) float64
    arrays: dict[str, np.ndarray]  # estimator statistics saved in arrays.npz, e.g. "pvalues"
    summary: dict[str, Any]  # JSON-able, e.g. chosen alpha per horizon


def log_grid(low: float, high: float, n: int) -> np.ndarray:
    """n log-spaced values from `high` down to `low` (strongest regularisation first)."""
    return np.geomspace(high, low, n) if n > 1 else np.array([high], dtype=np.float64)


class LinearModel:
    """A fitted linear model (FittedModel protocol): returns, band probabilities, classes."""

    kind = "linear"
    input_kind = "tabular"
    seq_len = None  # uses only the decision-time feature row

    def __init__(
        self,
        name: str,
        config: Any,
        fit: LinearFit,
        residuals: np.ndarray,
        thresholds: np.ndarray,
        info: dict[str, Any],
    ) -> None:
        self.name = name
        self.config = config
        self.coef = np.asarray(fit.coef, dtype=np.float64)  # (H, F)
        self.intercept = np.asarray(fit.intercept, dtype=np.float64)  # (H,)
        self.arrays = dict(fit.arrays)
        self.summary = dict(fit.summary)
        self.residuals = np.sort(np.asarray(residuals, dtype=np.float64), axis=1)  # (H, n)
        self.thresholds = np.asarray(thresholds, dtype=np.float64)  # (H,)
        self.info = dict(info)  # horizons, feature_names, preset, task, symbol, ...
        n_h, n_f = self.coef.shape
        if self.intercept.shape != (n_h,) or self.thresholds.shape != (n_h,):
            raise ValueError(f"{name}: coef {self.coef.shape} does not match intercept/thresholds")
        # residual std per horizon with ddof = fitted parameters (non-zero coefs + intercept)
        ddof = np.count_nonzero(self.coef, axis=1) + 1
        dof = np.maximum(self.residuals.shape[1] - ddof, 1)
        self.resid_std = np.sqrt((self.residuals**2).sum(axis=1) / dof)  # (H,)
        self.history: list[dict[str, Any]] = [dict(self.summary, train_seconds=self.train_seconds)]

    # ---- FittedModel protocol ----------------------------------------------------------
    @property
    def n_features(self) -> int:
        return int(self.coef.shape[1])

    @property
    def n_params(self) -> int:
        return int(np.count_nonzero(self.coef)) + int(self.intercept.size)

    @property
    def train_seconds(self) -> float:
        return float(self.info.get("train_seconds", 0.0))

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(
                f"{self.name}: expected tabular inputs (n, {self.n_features}), got {x.shape};"
                " pass PreparedSymbol.X rows of the data the model was fitted on"
            )
        return x

    def predict_return(self, x: np.ndarray) -> np.ndarray:
        """(n, F) -> (n, H) forecast forward log returns."""
        return (self._check(x) @ self.coef.T + self.intercept).astype(np.float32)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, F) -> (n, H, 3) P(down), P(flat), P(up) under the predictive distribution."""
        mu = self._check(x) @ self.coef.T + self.intercept  # [n, H]
        tau = self.thresholds[None, :]  # [1, H]
        if self.config.predictive == "gaussian":
            sigma = np.maximum(self.resid_std, 1e-12)[None, :]
            p_down = ndtr((-tau - mu) / sigma)
            p_up = ndtr((mu - tau) / sigma)
        else:
            p_down = np.empty_like(mu)
            p_up = np.empty_like(mu)
            n_res = self.residuals.shape[1]
            for j in range(mu.shape[1]):
                res = self.residuals[j]  # sorted training residuals
                p_down[:, j] = np.searchsorted(res, -tau[0, j] - mu[:, j], side="left") / n_res
                p_up[:, j] = 1.0 - np.searchsorted(res, tau[0, j] - mu[:, j], side="right") / n_res
        p_flat = np.clip(1.0 - p_down - p_up, 0.0, 1.0)
        proba = np.stack([p_down, p_flat, p_up], axis=-1)  # [n, H, 3]
        return (proba / proba.sum(axis=-1, keepdims=True)).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(n, F) -> (n, H) classes: argmax of `predict_proba`."""
        return self.predict_proba(x).argmax(axis=-1).astype(np.int64)

    # ---- storage -----------------------------------------------------------------------
    def artifact_files(self) -> dict[str, bytes]:
        """{arrays.npz, metadata.json, stats.json}: the files `save` writes."""
        arrays = {
            "coef": self.coef,
            "intercept": self.intercept,
            "residuals": self.residuals,
            "thresholds": self.thresholds,
            **{f"stat_{k}": np.asarray(v) for k, v in self.arrays.items()},
        }
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        meta = {
            "kind": self.kind,
            "model": self.name,
            "input_kind": self.input_kind,
            "config": dataclasses.asdict(self.config),
            "summary": self.summary,
            "history": self.history,
            "versions": dict(_versions()),
            **self.info,
        }
        return {ARRAYS_FILE: buf.getvalue(), METADATA_FILE: _json_bytes(meta),
                STATS_FILE: _json_bytes(self.stats_table())}  # fmt: skip

    def save(self, directory: str) -> None:
        """Write metadata.json, stats.json and arrays.npz into `directory` (created)."""
        save_artifact_files(directory, self.artifact_files())

    def stats_table(self) -> dict[str, Any]:
        """Per-horizon coefficient table: {"h5": {"feature": {"coef": .., "pvalue": ..}}}."""
        names = ["const", *self.info.get("feature_names", [])]
        table: dict[str, Any] = {}
        for j, h in enumerate(self.info.get("horizons", range(self.coef.shape[0]))):
            values = {"coef": np.concatenate([[self.intercept[j]], self.coef[j]])}
            for key in COEF_STATS:
                if key in self.arrays:
                    values[key] = np.asarray(self.arrays[key])[j]
            table[f"h{h}"] = {
                name: {k: float(v[i]) for k, v in values.items()} for i, name in enumerate(names)
            }
        return table

    @classmethod
    def load(cls, directory: str, config_cls: type) -> LinearModel:
        """Rebuild from `save`'s files; `config_cls` is the model's config dataclass."""
        from models.config import config_from_dict

        with open(os.path.join(directory, METADATA_FILE), encoding="utf-8") as f:
            meta = json.load(f)
        with np.load(os.path.join(directory, ARRAYS_FILE), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        stats = {k[len("stat_") :]: v for k, v in arrays.items() if k.startswith("stat_")}
        fit = LinearFit(arrays["coef"], arrays["intercept"], stats, meta["summary"])
        config = config_from_dict(config_cls, meta["config"], where=meta["model"])
        reserved = ("kind", "model", "input_kind", "config", "summary", "history", "versions")
        info = {k: v for k, v in meta.items() if k not in reserved}
        return cls(meta["model"], config, fit, arrays["residuals"], arrays["thresholds"], info)


@functools.cache
def _versions() -> dict[str, str]:
    """Package versions recorded in the artifact (looked up once per process: reading
    package metadata takes milliseconds, as long as a linear fit)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("quantray", "numpy", "scipy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _json_bytes(obj: Any) -> bytes:
    """Compact JSON (one line: `json.dumps` then runs its C encoder, ~10x faster than an
    indented dump, which a per-unit artifact pays hundreds of times in a sweep)."""
    return json.dumps(obj, default=_json_default, separators=(",", ":")).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
