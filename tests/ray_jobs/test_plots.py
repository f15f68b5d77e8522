"""ray_jobs.plots: a model keeps its colour across the comparison panels, ticks sit at the
horizons, and a job without a finished unit gets no fake heatmap."""

from __future__ import annotations

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd

from ray_jobs.plots import comparison_figure, heatmap_figure, heatmap_plot, learning_curves_plot


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


def test_heatmap_of_a_job_with_no_finished_unit_shows_a_message() -> None:
    failed = _frame(["ols"], error="data: too short")
    (ax,) = heatmap_figure(failed).axes
    assert not ax.get_images() and "no unit finished" in ax.texts[0].get_text()
    (ax, _colorbar) = heatmap_figure(_frame(["ols", "ridge"])).axes
    assert ax.get_images()[0].get_array().shape == (2, 2)  # symbols x models
    assert heatmap_plot(failed)[:8] == b"\x89PNG\r\n\x1a\n"
    assert learning_curves_plot({"lstm": [[{"train_loss": 1.0, "val_loss": 1.1}]]})[:4] == \
        b"\x89PNG"


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

