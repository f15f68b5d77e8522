"""Training throughput of every deep model with the one training loop, and the loop's overhead.

For each deep model of the registry: `fit_deep(name, prepared, preset=...)` on one symbol
of real daily bars (prepared with `data.prepare`), or on synthetic planted bars when the
data file is missing (`--synthetic` forces it). Reports per model:

- samples_per_sec: training samples per second of epoch wall time (validation included);
- compute_samples_per_sec: training samples per second of forward + backward + step alone;
- cpu_samples_per_sec: training samples per CPU-second of the whole `fit_deep` (robust to
  other processes competing for the cores, unlike the wall-clock figures);
- overhead: share of epoch time outside the training forward/backward/step and the
  validation forward (shuffling, batch gathering, validation metrics, bookkeeping, callbacks),
  overall and in steady state (epoch 0, with its one-off allocations, left out). Target < 10%.

Usage:

    .venv/bin/python bench/train_throughput.py                      # all deep models, AAPL
    .venv/bin/python bench/train_throughput.py --models lstm mlp --threads 2 --json out.json
    .venv/bin/python bench/train_throughput.py --preset quality --quantize  # + int8 report
    .venv/bin/python bench/train_throughput.py --smoke-test          # tiny synthetic run

Prints a Markdown table (and the machine it ran on); `--json` also writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "sp500_daily.parquet"


def load_prepared(args: argparse.Namespace) -> tuple[Any, str]:
    """One PreparedSymbol and a label saying where it came from."""
    from data.prepare import PrepareConfig, prepare_symbol

    cfg = PrepareConfig(seq_len=args.seq_len)
    if args.synthetic or not Path(args.data).is_file():
        from data.synthetic import planted_bars

        days = 600 if args.smoke_test else 1259
        df, _ = planted_bars(n_symbols=1, n_days=days, seed=0, n_paths=8)
        label = f"synthetic planted_bars (1 symbol, {days} days)"
    else:
        from data.loading import load_bars

        df = load_bars(str(Path(args.data).resolve()), symbols=[args.symbol])
        label = f"{Path(args.data).name} symbol {args.symbol} ({len(df)} daily bars)"
    from data.validation import validate_bars

    df, _ = validate_bars(df, on_error="raise")
    return prepare_symbol(df, cfg)[0], label


def run_model(name: str, prepared: Any, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from models.deep import fit_deep

    overrides: dict[str, Any] = {}
    if args.epochs:
        overrides["train.epochs"] = args.epochs
    if args.no_early_stop:
        overrides["train.patience"] = 10_000
    start, cpu_start = time.perf_counter(), time.process_time()
    model = fit_deep(name, prepared, preset=args.preset, overrides=overrides, device=args.device)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    quant = None
    if args.quantize:
        from models.quantize import quantization_report

        quant = quantization_report(model, prepared, "test", repeats=args.repeats)
    r = model.result
    hist = r.history
    steady = hist[1:] or hist
    n_train = len(prepared.splits["train"])
    compute = sum(h["compute_seconds"] for h in hist)
    epoch_time = sum(h["epoch_seconds"] for h in hist)

    def share(rows: list[dict[str, Any]], key: str) -> float:
        return sum(h[key] for h in rows) / sum(h["epoch_seconds"] for h in rows)

    return {
        "model": name,
        "params": sum(p.numel() for p in model.module.parameters()),
        "seq_len": model.seq_len,
        "batch_size": model.train_config.batch_size,
        "n_train": n_train,
        "epochs_run": r.epochs_run,
        "samples_per_sec": r.samples_per_sec,
        "compute_samples_per_sec": n_train * len(hist) / compute if compute else 0.0,
        # per CPU-second of this process: robust to other load on a shared machine
        "cpu_samples_per_sec": n_train * len(hist) / cpu if cpu else 0.0,
        "compute_share": compute / epoch_time,
        "eval_share": share(hist, "eval_seconds"),
        "overhead_fraction": r.overhead_fraction,
        "steady_overhead_fraction": share(steady, "other_seconds"),
        "epoch_seconds_mean": epoch_time / len(hist),
        "fit_deep_seconds": wall,
        "device": r.device,
        "precision": r.precision,
        "torch_threads": torch.get_num_threads(),
        "quantization": quant,
    }


def machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| model | params | L | batch | epochs | samples/s | compute samples/s | "
            "samples/CPU-s | compute % | val fwd % | overhead % | steady overhead % | s/epoch |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | error: {r['error']} |" + " |" * 11)
            continue
        lines.append(
            f"| {r['model']} | {r['params']:,} | {r['seq_len'] or '-'} | {r['batch_size']} | "
            f"{r['epochs_run']} | {r['samples_per_sec']:,.0f} | "
            f"{r['compute_samples_per_sec']:,.0f} | {r['cpu_samples_per_sec']:,.0f} | "
            f"{100 * r['compute_share']:.1f} | "
            f"{100 * r['eval_share']:.1f} | {100 * r['overhead_fraction']:.1f} | "
            f"{100 * r['steady_overhead_fraction']:.1f} | {r['epoch_seconds_mean']:.3f} |"
        )
    return "\n".join(lines)


def quant_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | test n | float acc | int8 acc | change | agreement | max dP | float ms | "
        "int8 ms | speedup | float KB | int8 KB |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        q = r.get("quantization")
        if not q:
            continue
        lines.append(
            f"| {r['model']} | {q['n']} | {q['float_accuracy']:.3f} | {q['int8_accuracy']:.3f} | "
            f"{q['accuracy_change']:+.3f} | {q['agreement']:.3f} | {q['max_proba_diff']:.3f} | "
            f"{1e3 * q['float_seconds']:.2f} | {1e3 * q['int8_seconds']:.2f} | "
            f"{q['speedup']:.2f}x | {q['float_bytes'] / 1024:.0f} | {q['int8_bytes'] / 1024:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="bars Parquet/CSV file")
    parser.add_argument("--symbol", default="AAPL")
    parser.add_argument("--synthetic", action="store_true", help="use synthetic planted bars")
    parser.add_argument("--preset", default="fast", choices=("fast", "balanced", "quality"))
    parser.add_argument("--models", nargs="*", help="deep model names (default: all)")
    parser.add_argument("--seq-len", type=int, default=60, help="prepared window length")
    parser.add_argument("--epochs", type=int, default=0, help="override the preset's epochs")
    parser.add_argument("--no-early-stop", action="store_true", help="run every epoch")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: preset)")
    parser.add_argument("--quantize", action="store_true",
                        help="also report int8 dynamic quantization on the test split")
    parser.add_argument("--repeats", type=int, default=20, help="timing repeats (--quantize)")
    parser.add_argument("--json", help="also write all figures to this JSON file")
    parser.add_argument("--smoke-test", action="store_true", help="2 models, 2 epochs, synthetic")
    args = parser.parse_args(argv)

    import torch

    from models.registry import list_models

    if args.smoke_test:
        args.synthetic, args.epochs = True, 2
        args.models = args.models or ["mlp", "lstm"]
    torch.set_num_threads(args.threads)
    names = args.models or list_models("deep")
    prepared, label = load_prepared(args)
    # warm-up: one-off costs of the first fit in a process (lazy imports, allocator, kernel
    # selection) must not land on the first model's figures
    from models.deep import fit_deep

    fit_deep(names[0], prepared, preset=args.preset, overrides={"train.epochs": 1},
             device=args.device)  # fmt: skip
    rows = []
    for name in names:
        try:
            rows.append(run_model(name, prepared, args))
        except Exception as exc:  # one failing model must not hide the others' figures
            rows.append({"model": name, "error": f"{type(exc).__name__}: {exc}"})
        print(f"done {name}", file=sys.stderr, flush=True)
    info = {"data": label, "preset": args.preset, "argv": sys.argv[1:], "machine": machine()}
    print(f"data: {label}; preset {args.preset}; machine: {json.dumps(info['machine'])}")
    print(table(rows))
    if args.quantize:
        print("\nint8 dynamic quantization (CPU inference over the test split):")
        print(quant_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({**info, "rows": rows}, indent=2))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
