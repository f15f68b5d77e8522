"""Result plots, rendered headless (Agg) to PNG bytes.

- `comparison.png`: four panels: R² by horizon of the return forecasts (linear models;
  deep models too for return targets), classifiers' accuracy by horizon
  (with the baseline), macro-F1 by horizon, best model per horizon (the highest mean
  macro-F1 over symbols, ensembles included; summary.json's win counts leave them out).
- `heatmap_macro_f1.png`: symbol x model test macro-F1 (mean over horizons and folds); past
  HEATMAP_MAX_SYMBOLS symbols, the best and the worst half of them.
- `folds.png` (walk-forward jobs): accuracy and macro-F1 per fold, per model.
- `learning_curves.png`: per deep model, mean train/val loss by epoch over its symbols (a
  model refit on train+val after a Tune search: its val loss is in-sample, and says so).
"""

from __future__ import annotations

import io
import threading
import warnings
from typing import Any

import numpy as np
import pandas as pd

from ray_jobs.spec import LINEAR_MODELS

# The heatmap draws at most this many symbols (the best and worst half by mean score).
HEATMAP_MAX_SYMBOLS = 60


_warm_up: threading.Thread | None = None


def warm_up(*modules: str) -> None:
    """Import matplotlib and draw a first figure (its font cache, the Agg canvas) in a
    background thread, after importing `modules` (the report's other heavy imports), while
    the job trains: at the end the report renders at once, and a stopped job's partial plots
    do not spend Ray's stop grace period on the imports (~12 s under heavy load). Plotting
    waits for it (no two threads draw at once)."""
    global _warm_up
    if _warm_up is None:
        _warm_up = threading.Thread(target=_draw_once, args=modules, name="plots-warm-up",
                                    daemon=True)
        _warm_up.start()


def _draw_once(*modules: str) -> None:
    try:
        import importlib

        for module in modules:
            importlib.import_module(module)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(1, 1))
        FigureCanvasAgg(fig)
        fig.add_subplot().plot([0, 1], [0, 1], label="x")
        fig.savefig(io.BytesIO(), format="png")
    except Exception:  # noqa: BLE001 - only a warm-up: the real imports and plots raise
        pass


def _warmed() -> None:
    if _warm_up is not None:
        _warm_up.join()


def _pyplot():
    _warmed()
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def model_colors(models: list[str]) -> dict[str, Any]:
    """One colour per model, the same in every panel (up to 20 distinct)."""
    _warmed()
    import matplotlib

    palette = matplotlib.colormaps["tab20"] if len(models) > 10 else matplotlib.colormaps["tab10"]
    return {m: palette(i % palette.N) for i, m in enumerate(models)}


def _lines(ax: Any, table: pd.DataFrame, colors: dict[str, Any], **kwargs: Any) -> None:
    """One line per model (column) over the horizons (index), ticks at the horizons."""
    if table.empty:
        return
    table.plot(ax=ax, marker="o", color=[colors[c] for c in table.columns], **kwargs)
    ax.set_xticks(list(table.index), [str(h) for h in table.index])


def _by_horizon(ok: pd.DataFrame, metric: str, models: list[str]) -> pd.DataFrame:
    table = ok[ok["model"].isin(models)].pivot_table(
        index="horizon", columns="model", values=metric, aggfunc="mean"
    )
    return table.sort_index()


def comparison_plot(frame: pd.DataFrame, r2_models: set[str], split: str = "test") -> bytes:
    return _png(comparison_figure(frame, r2_models, split))


def comparison_figure(frame: pd.DataFrame, r2_models: set[str], split: str = "test") -> Any:
    """The four-panel figure of `comparison_plot` (a model keeps its colour in every panel);
    the R² panel draws `r2_models`, the models that forecast returns."""
    plt = _pyplot()
    ok = frame[(frame["split"] == split) & frame["error"].isna()].copy()
    ok["horizon"] = ok["horizon"].astype(int)
    all_models = sorted(ok["model"].unique())
    regressors = [m for m in all_models if m in r2_models]
    colors = model_colors(all_models)
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))

    ax = axes[0, 0]
    r2 = _by_horizon(ok, "r2", regressors)
    linear_only = not set(regressors) - set(LINEAR_MODELS)
    who = "" if r2.empty else ("Linear models: " if linear_only else "Return forecasts: ")
    ax.set_title(f"{who}{'o' if who else 'O'}ut-of-sample R² ({split})")
    if r2.empty:  # a direction job of deep models only: no empty 0..1 axes that look scored
        ax.text(0.5, 0.5, f"no {split} R² to show: no model of this job forecasts returns\n"
                "(linear models do; deep models with target.kind: return)", ha="center",
                va="center", transform=ax.transAxes, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        _lines(ax, r2, colors, legend=False)  # the figure's legend names every model
        ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("horizon (bars)")
        ax.set_ylabel("R² (mean over symbols)")

    ax = axes[0, 1]
    acc = _by_horizon(ok, "accuracy", all_models)
    _lines(ax, acc, colors, legend=False)
    if not acc.empty:
        base = ok.groupby("horizon")["baseline_accuracy"].mean()
        ax.plot(base.index, base.values, color="black", ls="--", lw=2, label="baseline")
    ax.set_title(f"Accuracy, 3 classes down/flat/up, by horizon ({split}, mean over "
                 "symbols)", fontsize=10)
    ax.set_xlabel("horizon (bars)")
    ax.set_ylabel("accuracy")

    ax = axes[1, 0]
    f1 = _by_horizon(ok, "macro_f1", all_models)
    _lines(ax, f1, colors, legend=False)
    if not f1.empty:
        _no_skill_f1(ax)
    ax.set_title(f"Macro-F1 by horizon ({split}, mean over symbols)")
    ax.set_xlabel("horizon (bars)")
    ax.set_ylabel("macro-F1")

    ax = axes[1, 1]
    if not f1.empty:
        best = f1.idxmax(axis=1)
        vals = f1.max(axis=1)
        pos = np.arange(len(f1.index))
        bars = ax.bar(pos, vals.values, color=[colors[m] for m in best.values])
        ax.set_xticks(pos, [str(h) for h in f1.index])
        top = max(float(np.nanmax(vals.values)), NO_SKILL_MACRO_F1)
        ax.set_ylim(0, top * 1.2)  # room for the labels
        for bar, name in zip(bars, best.values, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), name,
                    ha="center", va="bottom", fontsize=8, rotation=20)
        _no_skill_f1(ax)
    ax.set_title("Best model per horizon (mean macro-F1, ensembles too)")
    ax.set_xlabel("horizon (bars)")
    ax.set_ylabel("macro-F1")

    handles, labels = axes[0, 1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    return fig


# Macro-F1 has no baseline column (README, "Models, presets and metrics"): a guess at the
# class frequencies scores about 1/3 with the auto threshold's three even classes, and a
# mean under it is no skill, whichever model is "best" (the demo's were all 0.25-0.32)
NO_SKILL_MACRO_F1 = 1 / 3


def _no_skill_f1(ax: Any) -> None:
    ax.axhline(NO_SKILL_MACRO_F1, color="grey", lw=1.2, ls=":", label="_no_skill")
    ax.annotate("1/3: about a no-skill guess (auto threshold)", (0.01, NO_SKILL_MACRO_F1),
                xycoords=("axes fraction", "data"), xytext=(0, 2), textcoords="offset points",
                fontsize=7, color="dimgrey", va="bottom")


def folds_plot(frame: pd.DataFrame, split: str = "test") -> bytes:
    return _png(folds_figure(frame, split))


def folds_figure(frame: pd.DataFrame, split: str = "test") -> Any:
    """Walk-forward jobs: accuracy (with the baseline) and macro-F1 per fold, one line per
    model, mean over symbols and horizons: whether a model holds up from one test block to
    the next, which the other plots (means over the folds) cannot show."""
    plt = _pyplot()
    ok = frame[(frame["split"] == split) & frame["error"].isna() & frame["fold"].notna()].copy()
    ok["fold"] = ok["fold"].astype(int)
    models = sorted(ok["model"].unique())
    colors = model_colors(models)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, metric, label in ((axes[0], "accuracy", "accuracy"),
                              (axes[1], "macro_f1", "macro-F1")):  # fmt: skip
        table = ok.pivot_table(index="fold", columns="model", values=metric, aggfunc="mean")
        if not table.empty:
            table.sort_index().plot(ax=ax, marker="o", color=[colors[c] for c in table.columns],
                                    legend=False)
            ax.set_xticks(list(table.index), [str(f) for f in table.index])
        if metric == "accuracy" and not table.empty:
            base = ok.groupby("fold")["baseline_accuracy"].mean().sort_index()
            ax.plot(base.index, base.values, color="black", ls="--", lw=2, label="baseline")
        ax.set_title(f"{label} by walk-forward fold ({split}, mean over symbols and horizons)",
                     fontsize=10)
        ax.set_xlabel("fold (test blocks in time order)")
        ax.set_ylabel(label)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center right", fontsize=8)
    else:
        axes[0].text(0.5, 0.5, f"no unit finished: no {split} score to show", ha="center",
                     va="center", transform=axes[0].transAxes)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    return fig


def heatmap_plot(frame: pd.DataFrame, split: str = "test", metric: str = "macro_f1") -> bytes:
    return _png(heatmap_figure(frame, split, metric))


def heatmap_figure(frame: pd.DataFrame, split: str = "test", metric: str = "macro_f1") -> Any:
    """Symbol x model `metric` on `split` (mean over horizons and folds). Up to
    HEATMAP_MAX_SYMBOLS symbols, one row each, in the data's order; more (a 505-symbol job
    drew a 7,000-pixel strip whose model names sat at its foot) are cut to the best and the
    worst HEATMAP_MAX_SYMBOLS / 2 by their mean over the models, best first, and the title
    says how many were left out (every one is in the leaderboard). Symbols with no score on
    `split` (their units failed) are counted in the title too."""
    plt = _pyplot()
    ok = frame[(frame["split"] == split) & frame["error"].isna()]
    table = ok.pivot_table(index="symbol", columns="model", values=metric, aggfunc="mean")
    unscored = int(frame["symbol"].nunique()) - len(table.index)
    n_all = len(table.index)
    cut = n_all > HEATMAP_MAX_SYMBOLS
    if cut:
        order = table.mean(axis=1).sort_values(ascending=False, kind="stable").index
        half = HEATMAP_MAX_SYMBOLS // 2
        gap = f"... {n_all - 2 * half} more ..."  # a blank row between the two halves
        table = pd.concat([table.loc[order[:half]],
                           pd.DataFrame(np.nan, index=[gap], columns=table.columns),
                           table.loc[order[-half:]]])
    n_sym, n_mod = max(len(table.index), 1), max(len(table.columns), 1)
    fig, ax = plt.subplots(figsize=(3.5 + 0.7 * n_mod, 2.5 + 0.18 * n_sym))
    if table.empty:  # no tile coloured as if 0.0 were a score
        ax.text(0.5, 0.5, f"no unit finished: no {split} {metric} to show", ha="center",
                va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    data = table.to_numpy(dtype=float)
    im = ax.imshow(data, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(table.columns)), list(table.columns), rotation=45, ha="right")
    ax.set_yticks(range(len(table.index)), list(table.index), fontsize=6 if n_sym > 30 else 8)
    folds = ok["fold"].nunique() if "fold" in ok else 1
    title = f"{split} {metric} (mean over horizons{' and folds' if folds > 1 else ''})"
    if cut:
        half = HEATMAP_MAX_SYMBOLS // 2
        ax.get_yticklabels()[half].set_fontweight("bold")
        title += (f"\nbest {half} and worst {half} of {n_all} symbols by mean {metric} "
                  "over models;\nevery symbol is in the leaderboard")
    if unscored > 0:
        title += f"\n{unscored} symbols without a {split} score (failed) not shown"
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.6 if n_sym > 10 else 0.9).set_label(f"{split} {metric}")
    return fig


def learning_curves_plot(
    histories: dict[str, list[list[dict[str, Any]]]], refit: set[str] = frozenset()
) -> bytes:
    return _png(learning_curves_figure(histories, refit))


def learning_curves_figure(
    histories: dict[str, list[list[dict[str, Any]]]], refit: set[str] = frozenset()
) -> Any:
    """histories: model -> list (one per unit) of per-epoch dicts with train_loss/val_loss;
    `refit`: models refit on train+val after a search, whose val loss is in-sample.

    Each loss is the mean over the units that trained that epoch. Early stopping ends units
    at different epochs, and the worst tend to stop first: a mean over fewer units fell
    where every unit's loss rose. So the line is solid while every unit trains (one set of
    units), dotted after, and the units still training are drawn on the right axis."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    names = sorted(histories)
    cols = min(3, max(1, len(names)))
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        val_label = "val_loss (in-sample: refit on train+val)" if name in refit else "val_loss"
        # units training at each epoch: from the histories' lengths (a NaN val loss is an
        # epoch trained, not a unit gone)
        lengths = np.array([len(h) for h in histories[name] if h], dtype=int)
        training = ((lengths[:, None] > np.arange(lengths.max(initial=0))).sum(axis=0)
                    if lengths.size else np.zeros(0, dtype=int))
        for key, color, label in (("train_loss", "tab:blue", "train_loss"),
                                  ("val_loss", "tab:orange", val_label)):
            curves = [[e.get(key) for e in h if e.get(key) is not None] for h in histories[name]]
            curves = [c for c in curves if c]
            if not curves:
                continue
            length = max(len(c) for c in curves)
            padded = np.full((len(curves), length), np.nan)
            for i, c in enumerate(curves):
                padded[i, : len(c)] = c
            with warnings.catch_warnings():  # an epoch whose every value is NaN: a gap
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(padded, axis=0)
            epochs = np.arange(1, length + 1)
            every = min(len(c) for c in curves)  # the epochs every unit trained
            dashed = key == "val_loss" and name in refit
            ax.plot(epochs[:every], mean[:every], color=color, label=label, marker="o",
                    markersize=3, ls="--" if dashed else "-")  # a 1-epoch curve is a point
            if every < length:  # from the last epoch of all units on: fewer units
                ax.plot(epochs[every - 1:], mean[every - 1:], color=color, ls=":",
                        marker="o", markersize=2, alpha=0.8)
        refit_note = ", refit on train+val" if name in refit else ""
        n = len(histories[name])
        ax.set_title(f"{name} ({n} unit{'' if n == 1 else 's'}{refit_note})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (mean over units training)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # 1 epoch: "1"
        if training.size and training.min() < training.max():  # some stopped early
            right = ax.twinx()
            right.step(np.arange(1, len(training) + 1), training, where="mid", color="grey",
                       lw=1, alpha=0.6)
            right.set_ylim(0, training.max() * 1.05)
            right.set_ylabel("units still training (grey)", fontsize=7, color="grey")
            right.tick_params(axis="y", labelsize=7, colors="grey")
            ax.plot([], [], color="black", ls=":", label="dotted: fewer units (stopped early)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig
