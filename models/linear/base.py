"""What every linear model shares: its config base, the fitted model, and storage.

A linear model regresses each horizon's forward log return on the tabular inputs
X (N, F) of the training split: r_h = b_h + X w_h + e_h. Each estimator file (`ols.py`,
`ridge.py`, `lasso.py`) only turns training/validation arrays into a `LinearFit`.

From returns to classes (so linear models share the leaderboard with classifiers):
`predict_proba` treats the forecast as a predictive distribution r ~ mu(x) + s(x) u, and
integrates it over the class bands of the training thresholds tau_h
(`PreparedSymbol.thresholds`):
    P(down) = P(r < -tau_h),  P(up) = P(r > tau_h),  P(flat) = 1 - P(down) - P(up).
- u is standard Gaussian (`predictive="gaussian"`) or the empirical distribution of the
  training residuals divided by their fitted scale (`predictive="empirical"`).
- s(x) is the conditional scale (`scale="conditional"`, the default): a second linear
  regression, of the log squared training residual on the same inputs (ridge-penalised,
  calibrated so the mean of e^2 / s(x)^2 over the training rows is 1, and kept within the
  range it takes on the training rows). Volatility clusters, and the inputs include
  rolling volatility, so a calm bar gets a narrow predictive distribution and a high
  P(flat). With `scale="constant"`, s is the training residual std (ddof = fitted
  parameters) on every row, and since tau_h is the 1/3 quantile of |r|, P(flat) then
  stays below P(up) or P(down) for any forecast: such a model never predicts flat.
`predict` is the argmax of those probabilities, the Bayes decision under that predictive
model. Thresholding the point forecast itself (`PreparedSymbol.classify(predict_return)`)
is the literal mapping, but a conditional mean is far less volatile than realized returns,
so it lands inside the flat band almost always; the band probabilities keep the training
thresholds and still use the sign and size of the forecast.

Storage, no pickle anywhere: `metadata.json` (name, kind, config, horizons, thresholds,
scaler, feature names, data window, fit summary, versions), `stats.json` (per-horizon
coefficient tables by feature name) and `arrays.npz` (coefficients, intercepts,
residuals and estimator statistics), read back
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

from models.spec import check_finite, save_artifact_files

PREDICTIVES = ("gaussian", "empirical")
SCALES = ("conditional", "constant")
SCALE_PENALTY = 1e-2  # ridge penalty of the log-variance regression, per training row
ARRAYS_FILE = "arrays.npz"
METADATA_FILE = "metadata.json"
STATS_FILE = "stats.json"
COEF_STATS = ("bse", "tvalues", "pvalues")  # per-coefficient arrays (H, 1 + F), const first


@dataclass(frozen=True)
class LinearConfig:
    """Settings every linear model has."""

    predictive: str = "gaussian"  # residual distribution behind predict_proba
    scale: str = "conditional"  # its scale: fitted on the inputs, or the residual std

    def __post_init__(self) -> None:
        if self.predictive not in PREDICTIVES:
            raise ValueError(
                f"{type(self).__name__}.predictive={self.predictive!r}: choose one of {PREDICTIVES}"
            )
        if self.scale not in SCALES:
            raise ValueError(
                f"{type(self).__name__}.scale={self.scale!r}: choose one of {SCALES}"
            )


@dataclass
class LinearFit:
    """What an estimator returns: per-horizon coefficients and its own statistics."""

    coef: np.ndarray  # (H, F) float64
    intercept: np.ndarray  # (H,) float64
    arrays: dict[str, np.ndarray]  # estimator statistics saved in arrays.npz, e.g. "pvalues"
    summary: dict[str, Any]  # JSON-able, e.g. chosen alpha per horizon


@dataclass
class LogScale:
    """The conditional scale s(x): log s(x)^2 = x @ coef[h] + intercept[h], clipped to
    [low[h], high[h]] (its range on the training rows)."""

    coef: np.ndarray  # (H, F)
    intercept: np.ndarray  # (H,)
    low: np.ndarray  # (H,)
    high: np.ndarray  # (H,)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(n, F) -> (n, H) scales."""
        return np.sqrt(np.exp(np.clip(x @ self.coef.T + self.intercept, self.low, self.high)))

    def arrays(self) -> dict[str, np.ndarray]:
        return {f"scale_{k}": getattr(self, k) for k in ("coef", "intercept", "low", "high")}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LogScale | None:
        if "scale_coef" not in arrays:  # saved before the conditional scale existed
            return None
        return cls(*(arrays[f"scale_{k}"] for k in ("coef", "intercept", "low", "high")))


def fit_log_scale(x: np.ndarray, residuals: np.ndarray) -> tuple[LogScale, np.ndarray]:
    """Regress log e^2 (residuals: (H, n)) on [1, x] (n, F) with a ridge penalty of
    `SCALE_PENALTY` per row on the (standardised) inputs, then shift the intercept so the
    mean of e^2 / s(x)^2 over the training rows is 1. Returns the scale and its values on
    the training rows, (n, H) (inside its clip range by construction)."""
    n, n_f = x.shape
    e2 = residuals.T**2  # (n, H)
    z = np.log(e2 + 1e-8 * e2.mean(axis=0) + 1e-300)
    x_mean = x.mean(axis=0)
    xc = x - x_mean
    gram = xc.T @ xc + SCALE_PENALTY * n * np.eye(n_f)
    coef = np.linalg.solve(gram, xc.T @ (z - z.mean(axis=0))).T  # (H, F)
    intercept = z.mean(axis=0) - coef @ x_mean
    fitted = x @ coef.T + intercept  # (n, H)
    shift = np.log(np.mean(e2 / np.exp(fitted), axis=0))
    fitted += shift
    scale = LogScale(coef, intercept + shift, fitted.min(axis=0), fitted.max(axis=0))
    return scale, np.sqrt(np.exp(fitted))


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
        scale: LogScale | None = None,
        scaled_residuals: np.ndarray | None = None,
    ) -> None:
        self.name = name
        if config.scale == "conditional" and scale is None:
            raise ValueError(f"{name}: scale='conditional' needs the fitted LogScale")
        self.config = config
        self.scale = scale if config.scale == "conditional" else None
        # training residuals / s(x), sorted per horizon: u of the empirical predictive
        self.scaled_residuals = (
            None if scaled_residuals is None or self.scale is None
            else np.sort(np.asarray(scaled_residuals, dtype=np.float64), axis=1)
        )  # fmt: skip
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
        if len(self.info.get("horizons", range(n_h))) != n_h:
            raise ValueError(f"{name}: horizons {self.info['horizons']} do not match coef {n_h}")
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
    def params_by_horizon(self) -> tuple[int, ...]:
        """Each horizon's own regression: its non-zero coefficients and its intercept."""
        return tuple(int(n) + 1 for n in np.count_nonzero(self.coef, axis=1))

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
        check_finite(self.name, x)
        return x

    def predict_return(self, x: np.ndarray) -> np.ndarray:
        """(n, F) -> (n, H) forecast forward log returns."""
        return (self._check(x) @ self.coef.T + self.intercept).astype(np.float32)

    def predictive_scale(self, x: np.ndarray) -> np.ndarray:
        """(n, F) -> (n, H) scale s(x) of the predictive distribution."""
        x = self._check(x)
        if self.scale is not None:
            return np.maximum(self.scale(x), 1e-12)
        return np.broadcast_to(np.maximum(self.resid_std, 1e-12), (x.shape[0], self.coef.shape[0]))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, F) -> (n, H, 3) P(down), P(flat), P(up) under the predictive distribution."""
        mu = self._check(x) @ self.coef.T + self.intercept  # [n, H]
        tau = self.thresholds[None, :]  # [1, H]
        sigma = self.predictive_scale(x)  # [n, H]
        lower, upper = (-tau - mu) / sigma, (tau - mu) / sigma  # the flat band, in units of s
        if self.config.predictive == "gaussian":
            p_down, p_up = ndtr(lower), ndtr(-upper)
        else:
            p_down = np.empty_like(mu)
            p_up = np.empty_like(mu)
            if self.scaled_residuals is not None:
                u = self.scaled_residuals
            else:  # constant scale: the residuals in units of their std
                u = self.residuals / np.maximum(self.resid_std, 1e-12)[:, None]
            n_res = u.shape[1]
            for j in range(mu.shape[1]):
                p_down[:, j] = np.searchsorted(u[j], lower[:, j], side="left") / n_res
                p_up[:, j] = 1.0 - np.searchsorted(u[j], upper[:, j], side="right") / n_res
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
            **(self.scale.arrays() if self.scale is not None else {}),
            **({"scaled_residuals": self.scaled_residuals}
               if self.scaled_residuals is not None else {}),
        }  # fmt: skip
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
            # a readable copy (as a deep model's metadata.json has); arrays.npz is read back
            "thresholds": [float(t) for t in np.ravel(self.thresholds)],
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
        scale = LogScale.from_arrays(arrays)
        # a model saved before `scale` existed had the constant scale
        settings = {"scale": "constant", **meta["config"]} if scale is None else meta["config"]
        config = config_from_dict(config_cls, settings, where=meta["model"])
        reserved = ("kind", "model", "input_kind", "config", "summary", "history", "versions")
        info = {k: v for k, v in meta.items() if k not in reserved}
        return cls(meta["model"], config, fit, arrays["residuals"], arrays["thresholds"], info,
                   scale=scale, scaled_residuals=arrays.get("scaled_residuals"))


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
