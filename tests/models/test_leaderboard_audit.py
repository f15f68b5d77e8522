"""An independent audit of the leaderboard: every column recomputed from a unit's
predictions with scikit-learn, scipy and statsmodels (none of `models.metrics`' own
helpers), as someone checking a job's stored predictions.parquet would; ensembles from the
members' stored columns; and the summary's win counts when models tie."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as skm
from statsmodels.tsa.stattools import acf, acovf

from data.prepared import PreparedSymbol
from models.leaderboard import prediction_rows
from ray_jobs.ensembles import ensemble_rows_from_predictions
from ray_jobs.results import SUMMARY_METRICS, summarize, win_counts

HORIZONS = (1, 10)


def _prepared(n: int = 700, seed: int = 3) -> PreparedSymbol:
    """A random walk with horizons 1 and 10 (overlapping labels), thresholds from train."""
    rng = np.random.default_rng(seed)
    logp = np.cumsum(rng.normal(0, 0.01, n + max(HORIZONS)))
    y_ret = np.stack([logp[h:n + h] - logp[:n] for h in HORIZONS], 1)
    splits = {"train": np.arange(0, 400), "val": np.arange(415, 535), "test": np.arange(550, n)}
    tau = np.quantile(np.abs(y_ret[splits["train"]]), 1 / 3, axis=0).astype(np.float32)
    y_cls = np.where(y_ret > tau, 2, np.where(y_ret < -tau, 0, 1)).astype(np.int64)
    feats = rng.normal(size=(n, 2)).astype(np.float32)
    return PreparedSymbol(
        "AUD", feats, ("a", "b"), np.arange(n).astype("datetime64[D]").astype("datetime64[ns]"),
        y_ret.astype(np.float32), y_cls, HORIZONS, 1, splits, tau, np.zeros(2, np.float32),
        np.ones(2, np.float32),
    )  # fmt: skip


def _forecast(p: PreparedSymbol, seed: int, skill: float) -> tuple[np.ndarray, np.ndarray]:
    """Persistent (AR(1)) return forecasts with some skill, and classes from them."""
    rng = np.random.default_rng(seed)
    noise = np.zeros((p.n_samples, len(HORIZONS)))
    for t in range(1, p.n_samples):
        noise[t] = 0.9 * noise[t - 1] + rng.normal(0, 0.01, len(HORIZONS))
    ret = skill * p.y_return.astype(np.float64) + noise
    return ret.astype(np.float32), p.classify(ret)


def _nw_deff(hits: np.ndarray, lags: int) -> float:
    g = acovf(hits.astype(float), adjusted=False, demean=True, fft=False, nlag=lags)
    if g[0] <= 0:
        return 1.0
    w = 1 - np.arange(1, lags + 1) / (lags + 1)
    return max(1.0, (g[0] + 2 * float(w @ g[1:])) / g[0])


def _audit_row(y_cls, pred_cls, y_ret, pred_ret, train_mean, h) -> dict[str, float]:
    """The leaderboard's columns as the README defines them, with reference libraries."""
    n = y_cls.size
    base = np.bincount(y_cls, minlength=3).max() / n
    hits = y_cls == pred_cls
    deff = _nw_deff(hits, h - 1 + int(4 * (n / 100) ** (2 / 9)))
    k = hits.sum()
    p_value = (stats.binomtest(int(k), n, base, alternative="greater").pvalue if deff == 1
               else stats.beta.cdf(base, k / deff, (n - k) / deff + 1))  # fmt: skip
    # the IC: the smaller of the Pearson IC and the one centred on the training mean
    a, b = y_ret - train_mean, pred_ret - train_mean
    r = min(float(a @ b) / math.sqrt(float(a @ a) * float(b @ b)),
            stats.pearsonr(y_ret, pred_ret)[0])
    lags = min(n - 1, max(n // 5, h - 1 + int(4 * (n / 100) ** (2 / 9))))
    j = np.arange(1, lags + 1)
    deff_ic = max(1.0, 1 + 2 * float(((1 - j / n) * acf(y_ret, nlags=lags)[1:]
                                      * acf(pred_ret, nlags=lags)[1:]).sum()))  # fmt: skip
    n_eff = n / deff_ic
    dir_hits = np.sign(pred_ret) == np.sign(y_ret)
    dir_base = pd.Series(np.sign(y_ret)).value_counts(normalize=True).max()
    dir_deff = _nw_deff(dir_hits, h - 1 + int(4 * (n / 100) ** (2 / 9)))
    k_dir = dir_hits.sum()
    dir_p = (stats.binomtest(int(k_dir), n, dir_base, alternative="greater").pvalue
             if dir_deff == 1 else stats.beta.cdf(dir_base, k_dir / dir_deff,
                                                  (n - k_dir) / dir_deff + 1))  # fmt: skip
    labels = [0, 1, 2]
    return {
        "accuracy": skm.accuracy_score(y_cls, pred_cls),
        "macro_f1": skm.f1_score(y_cls, pred_cls, labels=labels, average="macro", zero_division=0),
        "weighted_f1": skm.f1_score(y_cls, pred_cls, labels=labels, average="weighted",
                                    zero_division=0),
        "mcc": skm.matthews_corrcoef(y_cls, pred_cls),
        "kappa": skm.cohen_kappa_score(y_cls, pred_cls),
        "baseline_accuracy": base,
        "p_value": p_value,
        "r2": skm.r2_score(y_ret, pred_ret),  # against the test mean, the best constant
        "rmse": math.sqrt(skm.mean_squared_error(y_ret, pred_ret)),
        "mae": skm.mean_absolute_error(y_ret, pred_ret),
        "ic": r,
        "ic_p_value": stats.t.sf(r * math.sqrt((n_eff - 2) / (1 - r * r)), n_eff - 2),
        "rank_ic": stats.spearmanr(y_ret, pred_ret)[0],
        "directional_accuracy": np.mean(dir_hits),
        "baseline_directional_accuracy": dir_base,
        "directional_p_value": dir_p,
    }


def _check(row: dict, expected: dict) -> None:
    for col, value in expected.items():
        assert row[col] == pytest.approx(value, rel=1e-7, abs=1e-10), col


def test_every_leaderboard_column_recomputes_with_reference_libraries() -> None:
    p = _prepared()
    ret, cls = _forecast(p, seed=1, skill=0.3)
    train = p.splits["train"]
    for split in ("val", "test"):
        idx = p.splits[split]
        rows = prediction_rows("AUD", "m", p, split, cls[idx], ret[idx], {})
        for j, (h, row) in enumerate(zip(HORIZONS, rows, strict=True)):
            assert (row["split"], row["horizon"]) == (split, h)
            train_mean = float(p.y_return[train, j].astype(np.float64).mean())
            _check(row, _audit_row(p.y_class[idx, j], cls[idx, j],
                                   p.y_return[idx, j].astype(np.float64),
                                   ret[idx, j].astype(np.float64), train_mean, h))


def _stored_predictions(p: PreparedSymbol, seed: int) -> pd.DataFrame:
    """A member's predictions.parquet layout (val + test), probabilities from noise."""
    rng = np.random.default_rng(seed)
    ret, _ = _forecast(p, seed, skill=0.2)
    cols: dict[str, list] = {}
    for split in ("val", "test"):
        idx = p.splits[split]
        cols.setdefault("split", []).extend([split] * idx.size)
        cols.setdefault("sample", []).extend(idx.tolist())
        for j, h in enumerate(HORIZONS):
            proba = rng.dirichlet([1, 1, 1], idx.size).astype(np.float32)
            for c, name in enumerate(("down", "flat", "up")):
                cols.setdefault(f"p_{name}_h{h}", []).extend(proba[:, c].tolist())
            cols.setdefault(f"pred_class_h{h}", []).extend(proba.argmax(1).tolist())
            cols.setdefault(f"pred_return_h{h}", []).extend(ret[idx, j].tolist())
            cols.setdefault(f"y_class_h{h}", []).extend(p.y_class[idx, j].tolist())
    frame = pd.DataFrame(cols)
    return frame.sample(frac=1.0, random_state=seed)  # stored order must not matter


def test_ensemble_rows_recompute_from_the_members_stored_predictions() -> None:
    p = _prepared()
    frames = {m: _stored_predictions(p, s) for m, s in (("ols", 5), ("mlp", 6), ("lstm", 7))}
    rows = ensemble_rows_from_predictions("AUD", p, frames)
    names = sorted(frames)
    by = {m: f.sort_values("sample") for m, f in frames.items()}
    train = p.splits["train"]
    for j, h in enumerate(HORIZONS):
        val = {m: f[f.split == "val"] for m, f in by.items()}
        f1 = np.array([skm.f1_score(val[m][f"y_class_h{h}"], val[m][f"pred_class_h{h}"],
                                    labels=[0, 1, 2], average="macro", zero_division=0)
                       for m in names])  # fmt: skip
        weights = {"ensemble_equal": np.full(3, 1 / 3), "ensemble_f1": f1 / f1.sum()}
        for split in ("val", "test"):
            idx = p.splits[split]
            part = {m: f[f.split == split] for m, f in by.items()}
            for model, w in weights.items():
                proba = sum(wi * part[m][[f"p_down_h{h}", f"p_flat_h{h}", f"p_up_h{h}"]]
                            .to_numpy(np.float64) for wi, m in zip(w, names, strict=True))
                ret = sum(wi * part[m][f"pred_return_h{h}"].to_numpy(np.float64)
                          for wi, m in zip(w, names, strict=True))
                (row,) = [r for r in rows if (r["model"], r["split"], r["horizon"])
                          == (model, split, h)]  # fmt: skip
                _check(row, _audit_row(
                    p.y_class[idx, j], proba.argmax(1), p.y_return[idx, j].astype(np.float64),
                    ret, float(p.y_return[train, j].astype(np.float64).mean()), h))


def _lb(scores: dict[tuple[str, str], float]) -> pd.DataFrame:
    rows = [{**dict.fromkeys(SUMMARY_METRICS, np.nan), "symbol": s, "model": m, "horizon": 1,
             "fold": 0, "split": "test", "error": None, "macro_f1": v, "accuracy": v}
            for (s, m), v in scores.items()]  # fmt: skip
    frame = pd.DataFrame(rows)
    for c in ("symbol", "model", "split", "error"):
        frame[c] = frame[c].astype("string")
    return frame


def test_models_tied_for_a_symbols_best_score_each_win_it() -> None:
    """ols, ridge and lasso often give identical classes (a negligible penalty): a tie at
    the top must not go to the alphabetically first model (it gave lasso every such win)."""
    f1 = 0.4075823
    frame = _lb({("AAPL", "lasso"): f1, ("AAPL", "ols"): f1, ("AAPL", "ridge"): f1,
                 ("AAPL", "mlp"): 0.27, ("AMZN", "ols"): 0.30, ("AMZN", "mlp"): 0.35})
    assert win_counts(frame) == {"1": {"lasso": 1, "ols": 1, "ridge": 1, "mlp": 1}}
    assert summarize(frame)["wins"] == win_counts(frame)


def test_a_fold_mean_tie_is_a_tie_and_a_lower_score_is_not() -> None:
    a, b, c = 0.1, 0.2, 0.3  # (a + b + c) / 3 and (c + b + a) / 3 may differ in the last bit
    rows = [("S", "ols", k, v) for k, v in enumerate((a, b, c))]
    rows += [("S", "ridge", k, v) for k, v in enumerate((c, b, a))]
    rows += [("S", "mlp", k, v - 1e-6) for k, v in enumerate((a, b, c))]
    frame = pd.DataFrame([{"symbol": s, "model": m, "horizon": 5, "fold": k, "split": "test",
                           "error": None, "macro_f1": v} for s, m, k, v in rows])  # fmt: skip
    frame["model"] = frame["model"].astype("string")
    assert win_counts(frame) == {"5": {"ols": 1, "ridge": 1}}
