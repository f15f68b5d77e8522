"""Job results: the leaderboard table, the per model x horizon summary, and win counts.

Pure pandas; no Ray. Rows follow `models.metrics.LEADERBOARD_COLUMNS` plus the job's own
columns (`unit_id`, `artifact_uri`).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd

JOB_COLUMNS = ("unit_id", "artifact_uri")
SUMMARY_METRICS = (
    "accuracy",
    "macro_f1",
    "mcc",
    "baseline_accuracy",
    "p_value",
    "r2",
    "ic",
    "ic_p_value",
    "rank_ic",
    "directional_accuracy",
    "baseline_directional_accuracy",
    "train_seconds",
)


def leaderboard_frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """Rows -> a frame with exactly `columns` + JOB_COLUMNS, in that order, sorted."""
    cols = list(columns) + [c for c in JOB_COLUMNS if c not in columns]
    frame = pd.DataFrame(rows, columns=cols)
    for c in ("horizon", "fold", "epochs", "best_epoch", "params"):
        if c in frame:
            frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("Int64")
    for c in ("symbol", "model", "split", "error", *JOB_COLUMNS):
        if c in frame:
            frame[c] = frame[c].astype("string")
    numeric = [c for c in cols if c not in ("symbol", "model", "split", "error", *JOB_COLUMNS)]
    for c in numeric:
        if frame[c].dtype == object:
            frame[c] = pd.to_numeric(frame[c], errors="coerce")
    _ensemble_stats(frame)
    return frame.sort_values(["symbol", "model", "fold", "split", "horizon"], na_position="last")


def _ensemble_stats(frame: pd.DataFrame) -> None:
    """An ensemble row's train_seconds and params: the sums over its members (the
    symbol's and fold's units that ended without an error; params at the row's horizon),
    as `quantray train`'s `models.ensemble` gives them; null when a member has none. Its
    rows are computed from stored predictions, without the members' fit statistics."""
    needed = {"symbol", "model", "fold", "horizon", "error", "train_seconds", "params"}
    if not needed <= set(frame.columns) or frame.empty:
        return
    model = frame["model"].astype("string")
    ensemble = model.str.startswith("ensemble_").fillna(False).to_numpy(bool)
    if not ensemble.any():
        return
    members = frame[~ensemble & frame["error"].isna().to_numpy()]
    # per horizon: a linear member's params are that horizon's regression's own
    key = ["symbol", "fold", "horizon"]
    per_unit = members.groupby([*key, "model"], dropna=False)[
        ["train_seconds", "params"]].first()
    sums = per_unit.groupby(level=key, dropna=False).agg(
        lambda v: v.sum() if v.notna().all() else np.nan)
    at = pd.MultiIndex.from_frame(frame.loc[ensemble, key])
    frame.loc[ensemble, "train_seconds"] = sums["train_seconds"].reindex(at).to_numpy(float)
    params = pd.array(sums["params"].reindex(at).to_numpy(float), dtype="Float64")
    frame.loc[ensemble, "params"] = params.astype("Int64")  # NaN: <NA>


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _clean(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _per_symbol(group: pd.DataFrame, metric: str) -> pd.Series:
    """`metric` per symbol: the mean over its folds (walk-forward), so that every symbol
    weighs the same and the std is over symbols, not over symbol x fold rows."""
    values = pd.to_numeric(group[metric], errors="coerce")
    return values.groupby(group["symbol"].astype(str)).mean().dropna()


def summarize(frame: pd.DataFrame, split: str = "test") -> dict[str, Any]:
    """Mean +- std over symbols per model x horizon on `split` (a symbol's walk-forward
    folds averaged first), win counts, failures. `share_significant_1pct` (p_value, the
    class accuracy) and `share_ic_significant_1pct` (ic_p_value, the return forecast; None
    for classifiers) are over the symbol x fold tests, an undefined test (a constant
    forecast has no ic) counting as not significant. Each metric's `n` is the number of
    symbols behind its mean (those where it is defined), which may be below `n_symbols`.
    `symbols` counts every symbol with a row (a symbol whose units all failed too),
    `symbols_scored` those with a score."""
    ok = frame[(frame["split"] == split) & frame["error"].isna()]
    failed = frame[frame["error"].notna()]
    models: list[dict[str, Any]] = []
    for (model, horizon), group in ok.groupby(["model", "horizon"], sort=True):
        entry: dict[str, Any] = {
            "model": str(model),
            "horizon": int(horizon),
            "n_symbols": int(group["symbol"].nunique()),
            "n_folds": int(group["fold"].nunique()) if "fold" in group else 1,
        }
        for metric in SUMMARY_METRICS:
            values = _per_symbol(group, metric)
            entry[metric] = {
                "mean": _clean(values.mean()) if len(values) else None,
                "std": _clean(values.std(ddof=1)) if len(values) > 1 else None,
                "n": int(len(values)),  # the symbols it is defined for (ic: not constant)
            }
        sig = pd.to_numeric(group["p_value"], errors="coerce")
        entry["share_significant_1pct"] = _clean((sig < 0.01).mean()) if sig.notna().any() else None
        ic_sig = pd.to_numeric(group["ic_p_value"], errors="coerce") if "ic_p_value" in group \
            else pd.Series(dtype=float)
        # a return forecaster (its rmse is defined) has a share, 0 when its forecast was
        # constant on every symbol (no ic anywhere); a classifier has none
        forecasts = ic_sig.notna().any() or any(
            pd.to_numeric(group[c], errors="coerce").notna().any()
            for c in ("rmse", "r2") if c in group)
        entry["share_ic_significant_1pct"] = (_clean((ic_sig < 0.01).mean())
                                              if forecasts else None)
        models.append(entry)
    return {
        "split": split,
        "rows": int(len(frame)),
        "symbols": int(frame["symbol"].nunique()),  # every symbol with a row, failed ones too
        "symbols_scored": int(ok["symbol"].nunique()),  # with a score on `split`
        "models": models,
        "wins": win_counts(ok),
        "failed_units": sorted(
            {
                (str(r.symbol), str(r.model), str(r.error))
                for r in failed[["symbol", "model", "error"]].itertuples(index=False)
            }
        ),
    }


# Scores within this of a symbol's best tie with it (a fold mean of equal scores may differ
# in the last bits by the order of its sum).
WIN_TIE_TOL = 1e-12


def win_counts(ok: pd.DataFrame, metric: str = "macro_f1") -> dict[str, dict[str, int]]:
    """horizon -> model -> number of symbols on which the model has the best `metric`
    (averaged over the symbol's folds). Models tied for a symbol's best each count it, so a
    horizon's counts may add up to more than its symbols: ties are common (ols, ridge and
    lasso give the same classes when the selected penalty is negligible), and crediting the
    first in alphabetical order gave lasso wins that ols and ridge shared."""
    scored = ok.dropna(subset=[metric])
    scored = scored[~scored["model"].str.startswith("ensemble")]
    out: dict[str, dict[str, int]] = {}
    for horizon, group in scored.groupby("horizon"):
        means = group.groupby(["symbol", "model"], observed=True)[metric].mean()
        best = means.groupby(level="symbol", observed=True).transform("max")
        winners = means[means >= best - WIN_TIE_TOL].index.get_level_values("model")
        counts = pd.Series(winners.astype(str)).value_counts()
        out[str(int(horizon))] = {str(k): int(v) for k, v in counts.items()}
    return out


def format_summary_table(summary: dict[str, Any]) -> str:
    """A plain-text table of the summary: one line per model x horizon. `sig<1%`: the
    share of tests whose class accuracy beats the baseline at 1%; `ic<1%`: whose IC is
    above 0 at 1% (models that forecast returns)."""
    header = f"{'model':<20}{'h':>4}{'n':>5}{'accuracy':>17}{'macro_f1':>17}{'baseline':>10}"
    header += f"{'r2':>17}{'sig<1%':>8}{'ic<1%':>7}"
    lines = [header, "-" * len(header)]

    def ms(d: dict[str, Any]) -> str:
        if d["mean"] is None:
            return "-"
        std = f"{d['std']:.3f}" if d["std"] is not None else "-"
        return f"{d['mean']:.3f}±{std}"

    for e in summary["models"]:
        base = e["baseline_accuracy"]["mean"]
        sig = e["share_significant_1pct"]
        ic_sig = e.get("share_ic_significant_1pct")
        lines.append(
            f"{e['model']:<20}{e['horizon']:>4}{e['n_symbols']:>5}{ms(e['accuracy']):>17}"
            f"{ms(e['macro_f1']):>17}{(f'{base:.3f}' if base is not None else '-'):>10}"
            f"{ms(e['r2']):>17}{(f'{sig:.0%}' if sig is not None else '-'):>8}"
            f"{(f'{ic_sig:.0%}' if ic_sig is not None else '-'):>7}"
        )
    return "\n".join(lines)
