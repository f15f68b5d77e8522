"""Presets and Tune search spaces of the deep models: plain data, keyed by model name.

Presets (format in `models/spec.py`): `fast` trains one symbol of daily data (~800 training
samples) in seconds on one CPU core; `balanced` is the everyday setting; `quality` is wider,
deeper and trains longer with a lower learning rate. Widths stay modest on purpose: daily
bars give a few hundred samples per symbol, where wide nets only memorise.

Search spaces: every key is a model-config field or `train.<TrainConfig field>`, so a sampled
point is a valid `overrides` dict for `models.registry.resolve`. Batch sizes stop at 256
because a symbol's training split has ~800 samples; larger batches leave 1-2 steps per epoch.

`python -m models.presets docs/presets.md` regenerates the preset table from this file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from models.config import TrainConfig


def _train(epochs: int, patience: int, batch_size: int, lr: float, **more: Any) -> dict[str, Any]:
    return {"epochs": epochs, "patience": patience, "batch_size": batch_size, "lr": lr, **more}


# Shared training tiers; a model overrides single fields where its optimisation differs.
FAST = _train(10, 3, 64, 2e-3)
BALANCED = _train(30, 6, 64, 1e-3)
QUALITY = _train(60, 10, 128, 5e-4, weight_decay=1e-3)
SEQ_LEN = {"fast": 30, "balanced": 60, "quality": 60}


def _tiers(
    fast: dict[str, Any],
    balanced: dict[str, Any],
    quality: dict[str, Any],
    train: dict[str, dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """{"fast" | "balanced" | "quality": {"model", "train", "seq_len"}}; `train` tweaks tiers."""
    train = train or {}
    models = {"fast": fast, "balanced": balanced, "quality": quality}
    base = {"fast": FAST, "balanced": BALANCED, "quality": QUALITY}
    return {
        tier: {
            "model": models[tier],
            "train": {**base[tier], **train.get(tier, {})},
            "seq_len": SEQ_LEN[tier],
        }
        for tier in models
    }


PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "mlp": _tiers(
        {"hidden_size": 32, "num_layers": 2, "dropout": 0.2},
        {"hidden_size": 64, "num_layers": 2, "dropout": 0.3},
        {"hidden_size": 128, "num_layers": 3, "dropout": 0.3},
    ),
    "lstm": _tiers(
        {"hidden_size": 32, "num_layers": 1, "dropout": 0.2},
        {"hidden_size": 64, "num_layers": 2, "dropout": 0.3},
        {"hidden_size": 96, "num_layers": 2, "dropout": 0.3, "bidirectional": True},
    ),
    "gru": _tiers(
        {"hidden_size": 32, "num_layers": 1, "dropout": 0.2},
        {"hidden_size": 64, "num_layers": 2, "dropout": 0.3},
        {"hidden_size": 128, "num_layers": 2, "dropout": 0.3},
    ),
    "cnn": _tiers(
        {"channels": 32, "num_layers": 2, "kernel_size": 5, "dropout": 0.2},
        {"channels": 48, "num_layers": 3, "kernel_size": 5, "dropout": 0.3},
        {"channels": 64, "num_layers": 4, "kernel_size": 7, "dropout": 0.3},
    ),
    # kernel 3 with levels 3 / 4 gives receptive fields of 29 / 61 steps: the whole window.
    "tcn": _tiers(
        {"channels": 32, "num_levels": 3, "kernel_size": 3, "dropout": 0.2},
        {"channels": 48, "num_levels": 4, "kernel_size": 3, "dropout": 0.3},
        {"channels": 64, "num_levels": 4, "kernel_size": 3, "dropout": 0.3},
    ),
    "deeplob": _tiers(
        {"conv_channels": 8, "inception_channels": 16, "hidden_size": 32, "dropout": 0.2},
        {"conv_channels": 16, "inception_channels": 32, "hidden_size": 48, "dropout": 0.3},
        {"conv_channels": 32, "inception_channels": 64, "hidden_size": 64, "dropout": 0.3},
    ),
    "seq2seq": _tiers(
        {"cell": "gru", "hidden_size": 32, "num_layers": 1, "attention_size": 16, "dropout": 0.2},
        {"cell": "gru", "hidden_size": 64, "num_layers": 1, "attention_size": 32, "dropout": 0.3},
        {"cell": "lstm", "hidden_size": 96, "num_layers": 2, "attention_size": 48, "dropout": 0.3},
    ),
    # Attention is the least stable on small data: lower learning rates than the tiers.
    "transformer": _tiers(
        {"d_model": 32, "n_heads": 4, "num_layers": 1, "ff_dim": 64, "dropout": 0.1},
        {"d_model": 48, "n_heads": 4, "num_layers": 2, "ff_dim": 96, "dropout": 0.2},
        {"d_model": 64, "n_heads": 8, "num_layers": 3, "ff_dim": 128, "dropout": 0.2},
        train={"fast": {"lr": 1e-3}, "balanced": {"lr": 5e-4}, "quality": {"lr": 3e-4}},
    ),
    "temporal_attention": _tiers(
        {"channels": 8, "scales": (1, 2, 4), "d_model": 32, "dropout": 0.2},
        {"channels": 16, "scales": (1, 2, 4, 8), "d_model": 48, "dropout": 0.3},
        {"channels": 32, "scales": (1, 2, 4, 8, 16), "d_model": 64, "dropout": 0.3},
        train={"fast": {"lr": 1e-3}, "balanced": {"lr": 5e-4}, "quality": {"lr": 3e-4}},
    ),
    "cnn_gru": _tiers(
        {
            "conv_channels": 16,
            "conv_layers": 1,
            "kernel_size": 3,
            "hidden_size": 32,
            "num_layers": 1,
            "dropout": 0.2,
        },
        {
            "conv_channels": 32,
            "conv_layers": 2,
            "kernel_size": 3,
            "hidden_size": 64,
            "num_layers": 1,
            "dropout": 0.3,
        },
        {
            "conv_channels": 64,
            "conv_layers": 3,
            "kernel_size": 5,
            "hidden_size": 96,
            "num_layers": 2,
            "dropout": 0.3,
        },
    ),
    "cnn_bilstm": _tiers(
        {
            "conv_channels": 16,
            "conv_layers": 1,
            "kernel_size": 3,
            "hidden_size": 24,
            "num_layers": 1,
            "dropout": 0.2,
        },
        {
            "conv_channels": 32,
            "conv_layers": 2,
            "kernel_size": 3,
            "hidden_size": 48,
            "num_layers": 1,
            "dropout": 0.3,
        },
        {
            "conv_channels": 64,
            "conv_layers": 3,
            "kernel_size": 5,
            "hidden_size": 64,
            "num_layers": 2,
            "dropout": 0.3,
        },
    ),
}


def _choice(*values: Any) -> dict[str, Any]:
    return {"type": "choice", "values": list(values)}


TRAIN_SPACE: dict[str, dict[str, Any]] = {
    "train.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3},
    "train.batch_size": _choice(32, 64, 128, 256),
    "train.weight_decay": _choice(0.0, 1e-4, 1e-3),
}
DROPOUT = {"dropout": {"type": "uniform", "low": 0.2, "high": 0.5}}
_RNN = {"hidden_size": _choice(32, 64, 128), "num_layers": _choice(1, 2, 3)}
_CONV_RNN = {
    "conv_channels": _choice(16, 32, 64),
    "conv_layers": _choice(1, 2, 3),
    "hidden_size": _choice(32, 64, 128),
    "num_layers": _choice(1, 2),
}

SEARCH_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    name: {**space, **DROPOUT, **TRAIN_SPACE}
    for name, space in {
        "mlp": {"hidden_size": _choice(32, 64, 128, 256), "num_layers": _choice(1, 2, 3)},
        "lstm": {**_RNN, "bidirectional": _choice(False, True)},
        "gru": _RNN,
        "cnn": {
            "channels": _choice(16, 32, 64),
            "num_layers": _choice(1, 2, 3, 4),
            "kernel_size": _choice(3, 5, 7),
        },
        "tcn": {
            "channels": _choice(16, 32, 64),
            "num_levels": _choice(2, 3, 4, 5),
            "kernel_size": _choice(2, 3, 5),
        },
        "deeplob": {
            "conv_channels": _choice(8, 16, 32),
            "inception_channels": _choice(16, 32, 64),
            "hidden_size": _choice(32, 64),
        },
        "seq2seq": {
            "cell": _choice("gru", "lstm"),
            "hidden_size": _choice(32, 64, 128),
            "num_layers": _choice(1, 2),
            "attention_size": _choice(16, 32, 64),
        },
        # every d_model below is divisible by every n_heads
        "transformer": {
            "d_model": _choice(32, 64),
            "n_heads": _choice(2, 4, 8),
            "num_layers": _choice(1, 2, 3),
            "ff_dim": _choice(64, 128, 256),
        },
        "temporal_attention": {
            "channels": _choice(8, 16, 32),
            "d_model": _choice(32, 64),
            "scales": _choice((1, 2, 4), (1, 2, 4, 8)),
        },
        "cnn_gru": _CONV_RNN,
        "cnn_bilstm": _CONV_RNN,
    }.items()
}

TABLE_COLUMNS = ("model", "preset", "epochs", "patience", "batch_size", "seq_len", "lr", "widths")


def presets_table() -> list[dict[str, Any]]:
    """One row per (deep model, preset); train values include TrainConfig defaults."""
    rows = []
    for model, tiers in PRESETS.items():
        for preset, values in tiers.items():
            train = TrainConfig(**values["train"])
            widths = ", ".join(f"{k}={v}" for k, v in values["model"].items() if k != "dropout")
            rows.append(
                {
                    "model": model,
                    "preset": preset,
                    "epochs": train.epochs,
                    "patience": train.patience,
                    "batch_size": train.batch_size,
                    "seq_len": values["seq_len"],
                    "lr": train.lr,
                    "widths": widths,
                }
            )
    return rows


def presets_markdown() -> str:
    """The README / docs table of presets, generated from `presets_table()`."""
    lines = [
        "# Deep model presets",
        "",
        "Generated by `python -m models.presets docs/presets.md` from `models/presets.py`;",
        "do not edit by hand. Override any value per job with `overrides` (`train.<field>`",
        "or a model field). The `seq_len` column is a model's own default in the Python API",
        "(`models.api`); a job's sequence models share one window, `features.seq_len`, and",
        "`quantray train`'s is `--seq-len` (both default 60).",
        "",
        "| " + " | ".join(TABLE_COLUMNS) + " |",
        "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|",
    ]
    for row in presets_table():
        lines.append(
            "| "
            + " | ".join(f"{row[c]:g}" if c == "lr" else str(row[c]) for c in TABLE_COLUMNS)
            + " |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m models.presets OUTPUT.md")
    Path(sys.argv[1]).write_text(presets_markdown())
