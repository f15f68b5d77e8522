"""ray_jobs.plots: a model keeps its colour across the comparison panels, ticks sit at the
horizons, and a job without a finished unit gets no fake heatmap."""

from __future__ import annotations

import io

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ray_jobs.plots import (
    comparison_figure,
    heatmap_figure,
    heatmap_plot,
    learning_curves_figure,
    learning_curves_plot,
)


def _frame(models: list[str], error: str | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [
        {"symbol": s, "model": m, "horizon": h, "split": "test", "error": error,
         "r2": rng.normal(0, 0.01), "accuracy": rng.uniform(0.3, 0.5),
         "macro_f1": rng.uniform(0.2, 0.4), "baseline_accuracy": 0.4}
        for s in ("AAA", "BBB") for m in models for h in (1, 5, 10, 20)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def _line_colors(ax) -> dict[str, str]:
    return {line.get_label(): mcolors.to_hex(line.get_color()) for line in ax.get_lines()
            if not line.get_label().startswith("_") and line.get_label() != "baseline"}


def test_a_model_has_one_colour_in_every_panel() -> None:
    models = ["ensemble_equal", "lstm", "ols", "ridge"]
    fig = comparison_figure(_frame(models), {"ols", "ridge"})
    r2, acc, f1 = fig.axes[0], fig.axes[1], fig.axes[2]
    linear, everyone, f1_colors = _line_colors(r2), _line_colors(acc), _line_colors(f1)
    assert set(linear) == {"ols", "ridge"} and set(everyone) == set(models)
    assert all(everyone[m] == linear[m] for m in linear)
    assert everyone == f1_colors
    assert len(set(everyone.values())) == len(models)
    legend = {t.get_text(): mcolors.to_hex(h.get_color())
              for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles,
                              strict=True) if t.get_text() != "baseline"}  # fmt: skip
    assert legend == everyone  # the shared legend tells the truth for every panel
    assert list(acc.get_xticks()) == [1, 5, 10, 20]
    assert r2.get_legend() is None  # the figure's one legend, not a second in a panel
    # macro-F1 has no baseline column: its panels show where no skill lies (~1/3)
    for ax in (f1, fig.axes[3]):
        assert [line.get_ydata()[0] for line in ax.get_lines()
                if line.get_label() == "_no_skill"] == [pytest.approx(1 / 3)]


def test_heatmap_of_a_job_with_no_finished_unit_shows_a_message() -> None:
    failed = _frame(["ols"], error="data: too short")
    (ax,) = heatmap_figure(failed).axes
    assert not ax.get_images() and "no unit finished" in ax.texts[0].get_text()
    (ax, _colorbar) = heatmap_figure(_frame(["ols", "ridge"])).axes
    assert ax.get_images()[0].get_array().shape == (2, 2)  # symbols x models
    assert heatmap_plot(failed)[:8] == b"\x89PNG\r\n\x1a\n"
    assert learning_curves_plot({"lstm": [[{"train_loss": 1.0, "val_loss": 1.1}]]})[:4] == \
        b"\x89PNG"


def test_learning_curves_do_not_pass_off_fewer_units_as_the_same_ones() -> None:
    """Early stopping ends the worst units first: the mean over those still training fell
    where every unit's val loss rose. The mean is solid while every unit trains, dotted
    after, and the right axis says how many units are left."""
    def unit(epochs: int, start: float) -> list[dict]:  # every unit's val loss rises
        return [{"train_loss": 1.0, "val_loss": start + 0.01 * e} for e in range(epochs)]

    histories = {"lstm": [unit(2, 2.0), unit(2, 2.0), unit(4, 1.0)]}
    ax, right = learning_curves_figure(histories).axes
    lines = {(line.get_color(), line.get_linestyle()): line for line in ax.get_lines()}
    solid, dotted = lines[("tab:orange", "-")], lines[("tab:orange", ":")]
    assert list(solid.get_xdata()) == [1, 2]  # the epochs all three units trained
    assert np.allclose(solid.get_ydata(), [5 / 3, 5 / 3 + 0.01])
    assert list(dotted.get_xdata()) == [2, 3, 4]  # one unit left: the mean "falls"
    assert list(right.get_lines()[0].get_ydata()) == [3, 3, 1, 1]
    assert "dotted: fewer units (stopped early)" in [t.get_text() for t in ax.get_legend().texts]
    # units that all train every epoch: one solid line, no right axis
    (ax,) = learning_curves_figure({"mlp": [unit(3, 1.0), unit(3, 2.0)]}).axes
    assert [line.get_linestyle() for line in ax.get_lines()] == ["-", "-"]
    # a NaN val loss is an epoch trained, not a unit gone: the line stays whole
    nan_first = unit(3, 1.0)
    nan_first[0]["val_loss"] = float("nan")
    (ax,) = learning_curves_figure({"gru": [nan_first, unit(3, 2.0)]}).axes
    val = [line for line in ax.get_lines() if line.get_color() == "tab:orange"]
    assert [list(line.get_xdata()) for line in val] == [[1, 2, 3]]


def test_r2_panel_of_a_return_target_job_draws_its_deep_models() -> None:
    """With `target.kind: return` the deep models forecast returns too: their R² is drawn
    beside the linear models' (a direction job's deep models have none)."""
    from ray_jobs.reporting import r2_models
    from ray_jobs.spec import JobSpec

    base = {"name": "r2", "dataset": {"uri": "sample:sp500", "symbols": 2},
            "models": ["ols", "lstm"], "target": {"kind": "return", "horizons": [1, 5]}}
    returns = JobSpec.from_dict(base)
    direction = JobSpec.from_dict({**base, "target": {"kind": "direction", "horizons": [1]}})
    models = ["ensemble_equal", "lstm", "ols"]
    r2_ax = comparison_figure(_frame(models), r2_models(returns)).axes[0]
    assert set(_line_colors(r2_ax)) == {"lstm", "ols"}
    assert r2_ax.get_title() == "Return forecasts: out-of-sample R² (test)"
    r2_ax = comparison_figure(_frame(models), r2_models(direction)).axes[0]
    assert set(_line_colors(r2_ax)) == {"ols"}
    assert r2_ax.get_title() == "Linear models: out-of-sample R² (test)"



def _many_symbols(n: int, failed: int = 0) -> pd.DataFrame:
    """n symbols x 3 models x 2 horizons; symbol i scores 0.2 + i / (10 n), so the best are
    the last ones; the first `failed` symbols failed (error rows, no score)."""
    rows = [
        {"symbol": f"S{i:03d}", "model": m, "horizon": h, "split": "test",
         "error": "data: too short" if i < failed else None,
         "macro_f1": None if i < failed else 0.2 + i / (10 * n) + 0.001 * j}
        for i in range(n) for j, m in enumerate(("lasso", "ols", "ridge")) for h in (1, 5)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_heatmap_of_505_symbols_shows_the_best_and_worst_30_and_says_so() -> None:
    """A 505-symbol job drew one 7,000-pixel strip (a row per symbol, model names at its
    foot): past HEATMAP_MAX_SYMBOLS the map keeps the best and worst halves by mean score,
    a blank row between them naming how many are left out, and the title says so."""
    fig = heatmap_figure(_many_symbols(505, failed=11))
    ax = fig.axes[0]
    data = ax.get_images()[0].get_array()
    assert data.shape == (61, 3)  # 30 best + the gap row + 30 worst, x 3 models
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[:30] == [f"S{i:03d}" for i in range(504, 474, -1)]  # best first
    assert labels[30] == "... 434 more ..."  # 494 scored - 60 shown
    assert labels[31:] == [f"S{i:03d}" for i in range(40, 10, -1)]  # the worst, last
    assert np.isnan(np.asarray(data[30], dtype=float)).all()  # no colour for the gap
    title = ax.get_title()
    assert "best 30 and worst 30 of 494 symbols" in title
    assert "11 symbols without a test score (failed) not shown" in title
    assert fig.get_size_inches()[1] < 16  # a readable page, not a strip
    png = heatmap_plot(_many_symbols(505))
    assert Image.open(io.BytesIO(png)).size[1] < 1600


def test_heatmap_of_up_to_60_symbols_keeps_every_symbol_in_order() -> None:
    ax = heatmap_figure(_many_symbols(60)).axes[0]
    assert ax.get_images()[0].get_array().shape == (60, 3)
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"S{i:03d}" for i in range(60)]
    assert ax.get_title() == "test macro_f1 (mean over horizons)"


def test_r2_panel_of_a_job_without_return_forecasts_says_so() -> None:
    """A direction job of deep models only has no R²: the panel was a blank 0..1 axis
    titled "Linear models" (in a job without one), which reads as a scored empty chart."""
    fig = comparison_figure(_frame(["ensemble_equal", "gru", "mlp"]), {"ols", "ridge", "lasso"})
    r2_ax = fig.axes[0]
    assert not _line_colors(r2_ax) and not list(r2_ax.get_yticks())
    assert "no model of this job forecasts returns" in r2_ax.texts[0].get_text()
    assert r2_ax.get_title() == "Out-of-sample R² (test)"
    assert set(_line_colors(fig.axes[1])) == {"ensemble_equal", "gru", "mlp"}


def _folds_frame() -> pd.DataFrame:
    """2 symbols x 2 models x 2 horizons x 3 folds; model m scores 0.3 + 0.01 m + 0.02 fold."""
    rows = [
        {"symbol": s, "model": m, "horizon": h, "fold": f, "split": "test", "error": None,
         "accuracy": 0.3 + 0.01 * j + 0.02 * f, "macro_f1": 0.2 + 0.01 * j + 0.02 * f,
         "baseline_accuracy": 0.45}
        for s in ("AAA", "BBB") for j, m in enumerate(("gru", "mlp")) for h in (1, 5)
        for f in range(3)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_folds_plot_draws_each_model_per_walk_forward_fold() -> None:
    """A walk-forward job's plots were means over its folds only: folds.png shows each
    model's accuracy (with the baseline) and macro-F1 per fold."""
    from ray_jobs.plots import folds_figure, folds_plot

    acc, f1 = folds_figure(_folds_frame()).axes[:2]
    lines = {line.get_label(): line for line in acc.get_lines()}
    assert set(lines) == {"gru", "mlp", "baseline"}
    assert list(lines["mlp"].get_xdata()) == [0, 1, 2]
    assert np.allclose(lines["mlp"].get_ydata(), [0.31, 0.33, 0.35])
    assert np.allclose(lines["baseline"].get_ydata(), 0.45)
    f1_lines = {line.get_label(): line for line in f1.get_lines()}
    assert np.allclose(f1_lines["gru"].get_ydata(), [0.2, 0.22, 0.24])
    assert "by walk-forward fold" in f1.get_title()
    assert folds_plot(_folds_frame())[:4] == b"\x89PNG"
    failed = _folds_frame().assign(error="data: too short")
    assert "no unit finished" in folds_figure(failed).axes[0].texts[0].get_text()
    heat = heatmap_figure(_folds_frame()).axes[0]
    assert heat.get_title() == "test macro_f1 (mean over horizons and folds)"


def test_warm_up_imports_matplotlib_in_the_background_and_plots_wait_for_it() -> None:
    """The driver starts `warm_up` while its job trains: matplotlib is imported and a first
    figure drawn in another thread, and a plot made meanwhile waits for it, then draws."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, threading\n"
        "import ray_jobs.plots as p\n"
        "assert 'matplotlib' not in sys.modules\n"
        "p.warm_up('models.metrics')\n"
        "assert p._warm_up.name == 'plots-warm-up' and p._warm_up.daemon\n"
        "import pandas as pd\n"
        "png = p.heatmap_plot(pd.DataFrame({'symbol': ['A'], 'model': ['ols'],\n"
        "    'split': ['test'], 'error': [None], 'macro_f1': [0.5], 'horizon': [1],\n"
        "    'fold': [0]}))\n"
        "assert not p._warm_up.is_alive() and 'matplotlib.figure' in sys.modules\n"
        "assert 'models.metrics' in sys.modules\n"
        "assert png[:8] == b'\\x89PNG\\r\\n\\x1a\\n'\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
