"""Ray sweep benchmarks (issue 4), each measured side by side in one run.

    .venv/bin/python bench/ray_sweep.py linear [--symbols 102]
    .venv/bin/python bench/ray_sweep.py deep1 [--model lstm] [--units 4] [--preset fast]
    .venv/bin/python bench/ray_sweep.py full [--symbols 102] [--seq-symbols 6]
    .venv/bin/python bench/ray_sweep.py linear-cli [--symbols 102] [--repeats 2]

linear: 102 symbols x {ols, ridge, lasso} x 4 horizons. Sequential = the in-process loop of
        `quantray train` (load, validate, prepare, fit, score; models.api.train_symbols);
        Ray = the job driver on a local 2-CPU Ray (prepare tasks + one task per unit, with
        artifacts, predictions, ensembles, leaderboard and plots written to storage).
linear-cli: the same sweep as a user runs it, each a fresh process timed end to end
        (imports included): `quantray train` (its defaults: ensembles on, one BLAS thread),
        `quantray train --save-dir` (models saved too), and the job entrypoint
        `python -m ray_jobs.run` against the already running local Ray (2 CPUs), which
        also stores per-unit predictions, metrics, statuses and plots; runs alternate.
deep1:  one deep run of --units units: the bare loop's samples/s vs the same units inside
        one TorchTrainer run (one torch thread each), and the run's fixed overhead (job wall
        time - the units' own fit time).
full:   symbols x all 14 models, fast preset, through Ray: wall time, units/min, and the
        share of (wall x CPUs) not spent fitting; sequential loop timed on --seq-symbols
        symbols and scaled up.
Ray starts before the clock (a cluster is already up in production); each timing is wall.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import tempfile
import time
from typing import Any

HORIZONS = (1, 5, 10, 20)
LINEAR = ["ols", "ridge", "lasso"]


def _spec(models: list[str], symbols: int, name: str, *, preset: str = "fast",
          seq_len: int = 30, **extra: Any):
    from ray_jobs.spec import JobSpec

    return JobSpec.from_dict({
        "name": name, "dataset": {"uri": "sample:sp500", "symbols": symbols},
        "target": {"kind": "direction", "horizons": list(HORIZONS)},
        "features": {"seq_len": seq_len}, "models": models, "preset": preset, **extra,
    })  # fmt: skip


def sequential(models: list[str], symbols: int) -> dict[str, Any]:
    """What `quantray train` does, timed: load, validate, prepare, fit and score."""
    from data.loading import list_symbols, load_bars
    from data.prepare import PrepareConfig, prepare_frame
    from models.api import train_symbols

    t0 = time.perf_counter()
    syms = list_symbols("sample:sp500")[:symbols]
    frame = load_bars("sample:sp500", symbols=syms)
    prep = prepare_frame(frame, PrepareConfig(horizons=HORIZONS, seq_len=30))
    t1 = time.perf_counter()
    rows = train_symbols(prep.prepared, models, preset="fast")
    t2 = time.perf_counter()
    fit_s = sum(r["train_seconds"] or 0 for r in rows if r["split"] == "test"
                and r["horizon"] == HORIZONS[0])
    return {"wall_s": t2 - t0, "prepare_s": t1 - t0, "train_s": t2 - t1, "rows": len(rows),
            "units": symbols * len(models), "fit_s": fit_s,
            "errors": sum(1 for r in rows if r.get("error"))}


def ray_job(spec, storage_root: str) -> dict[str, Any]:
    from ray_jobs.driver import run_job
    from ray_jobs.storage import JobStorage

    storage = JobStorage(f"file://{storage_root}", spec.name)
    t0 = time.perf_counter()
    summary = run_job(spec, storage, progress_interval_s=5.0)
    wall = time.perf_counter() - t0
    statuses = storage.unit_statuses()
    fit_s = 0.0
    for s in statuses.values():
        rows = [r for r in s.get("rows", []) if r.get("train_seconds") is not None]
        fit_s += rows[0]["train_seconds"] if rows else 0.0
    return {"wall_s": wall, "units": len(statuses), "fit_s": fit_s,
            "failed": len(summary["failed_units"]), "plan": summary["plan"]}


def sequential_one_thread(models: list[str], symbols: int) -> dict[str, Any]:
    """The sequential loop with BLAS and torch on one thread: on small daily-bar problems
    a multi-threaded BLAS only adds contention, so this is the faster, honest baseline."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            return sequential(models, symbols)
    finally:
        torch.set_num_threads(before)


def bench_linear(args) -> dict[str, Any]:
    seq_default = sequential(LINEAR, args.symbols)
    seq_one = sequential_one_thread(LINEAR, args.symbols)
    with tempfile.TemporaryDirectory() as d:
        ray_res = ray_job(_spec(LINEAR, args.symbols, "bench-linear"), d)
    return {"sequential_default_threads": seq_default, "sequential_one_thread": seq_one,
            "ray": ray_res,
            "speedup_vs_default_threads": seq_default["wall_s"] / ray_res["wall_s"],
            "speedup_vs_one_thread": seq_one["wall_s"] / ray_res["wall_s"]}


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    import subprocess
    import sys

    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise RuntimeError(f"{cmd[:4]}... exited {proc.returncode}")
    return wall


def bench_linear_cli(args) -> dict[str, Any]:
    import ray

    from data.loading import list_symbols

    bin_dir = os.path.dirname(os.path.abspath(__import__("sys").executable))
    symbols = ",".join(list_symbols("sample:sp500")[: args.symbols])
    train = [os.path.join(bin_dir, "quantray"), "train", "--data", "sample:sp500",
             "--symbols", symbols, "--models", ",".join(LINEAR), "--preset", "fast",
             "--horizons", ",".join(map(str, HORIZONS)), "--output", "csv"]
    address = ray.get_runtime_context().gcs_address
    runs: dict[str, list[float]] = {"train": [], "train_save": [], "ray_job": []}
    with tempfile.TemporaryDirectory() as d:
        spec_path = os.path.join(d, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(_spec(LINEAR, args.symbols, "bench-linear-cli").to_dict(), f)
        for r in range(args.repeats):
            runs["train"].append(_timed(train))
            runs["train_save"].append(_timed([*train, "--save-dir", os.path.join(d, f"m{r}")]))
            runs["ray_job"].append(_timed(
                [os.path.join(bin_dir, "python"), "-m", "ray_jobs.run", "--spec", spec_path,
                 "--storage", f"file://{d}/store{r}", "--name", f"lin{r}"],
                env={"RAY_ADDRESS": address}))
    best = {k: min(v) for k, v in runs.items()}
    return {"runs_s": runs, "best_s": best,
            "speedup_vs_train": best["train"] / best["ray_job"],
            "speedup_vs_train_save": best["train_save"] / best["ray_job"]}


def bench_deep1(args) -> dict[str, Any]:
    """One deep run of `--units` units (the model on the first symbols), against the bare
    loop training the same units one after another in this process, after a warm-up fit.
    Throughput = training samples / epoch seconds (validation included, the per-epoch
    report and checkpoint excluded: `models.training.loop`), summed over the units; the
    run's first unit is left out of the Ray figure (the fresh worker process pays its
    first-call costs there, which the bare loop paid in its warm-up)."""
    import torch

    from data.loading import list_symbols, load_bars
    from data.prepare import PrepareConfig, prepare_frame
    from models.deep import fit_deep

    symbols = list_symbols("sample:sp500")[: args.units]
    seq_len = 30 if args.preset == "fast" else 60
    prepared = prepare_frame(load_bars("sample:sp500", symbols=symbols),
                             PrepareConfig(horizons=HORIZONS, seq_len=seq_len)).prepared
    overrides = {"seq_len": seq_len} if args.model != "mlp" else {}
    fit = functools.partial(fit_deep, args.model, preset=args.preset, overrides=overrides)
    # One torch thread, as the Ray worker has (1 CPU) and as `quantray train` runs by default.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit(prepared[symbols[0]][0])  # warm-up
        t0 = time.perf_counter()
        bare = [fit(prepared[s][0]).result.history for s in symbols]
        bare_wall = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    spec = _spec([args.model], len(symbols), "bench-deep1", preset=args.preset,
                 seq_len=seq_len, dataset={"uri": "sample:sp500", "symbols": symbols},
                 resources={"units_per_run": len(symbols)})
    with tempfile.TemporaryDirectory() as d:
        res = ray_job(spec, d)
        from ray_jobs.storage import JobStorage

        statuses = JobStorage(f"file://{d}", spec.name).unit_statuses()
    in_run = sorted(statuses.values(), key=lambda st: st["started"])
    assert res["plan"]["deep_runs"] == 1, res["plan"]

    def throughput(histories: list[list[dict[str, Any]]]) -> float:
        epochs = [h for hist in histories for h in hist]
        samples = sum(h["samples_per_sec"] * h["epoch_seconds"] for h in epochs)
        return samples / sum(h["epoch_seconds"] for h in epochs)

    ray_sps = throughput([st["history"] for st in in_run[1:]])
    bare_sps = throughput(bare)
    return {"model": args.model, "preset": args.preset, "units": len(symbols),
            "epochs": sum(len(st["history"]) for st in in_run),
            "bare_samples_per_s": bare_sps, "ray_samples_per_s": ray_sps,
            "ratio": ray_sps / bare_sps,
            "ray_first_unit_samples_per_s": throughput([in_run[0]["history"]]),
            "bare_fit_wall_s": bare_wall, "ray_job_wall_s": res["wall_s"],
            "ray_unit_fit_s": res["fit_s"], "fixed_overhead_s": res["wall_s"] - res["fit_s"]}


def bench_full(args) -> dict[str, Any]:
    from ray_jobs.spec import MODEL_NAMES

    # one BLAS/torch thread: what `quantray train` does by default, and faster on 2 cores
    seq = sequential_one_thread(list(MODEL_NAMES), args.seq_symbols)
    with tempfile.TemporaryDirectory() as d:
        res = ray_job(_spec(list(MODEL_NAMES), args.symbols, "bench-full"), d)
    cpus = 2
    scaled = seq["wall_s"] * args.symbols / args.seq_symbols
    return {"sequential_subset": seq, "sequential_scaled_s": scaled, "ray": res,
            "units_per_min": res["units"] / res["wall_s"] * 60,
            "not_training_share": 1 - res["fit_s"] / (res["wall_s"] * cpus),
            "speedup_vs_scaled_sequential": scaled / res["wall_s"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("which", choices=["linear", "linear-cli", "deep1", "full"])
    p.add_argument("--symbols", type=int, default=102)
    p.add_argument("--seq-symbols", type=int, default=6)
    p.add_argument("--model", default="lstm")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--units", type=int, default=4, help="deep1: units in the run")
    p.add_argument("--preset", default="fast", help="deep1: the models' preset")
    args = p.parse_args()
    import logging

    import ray

    # progress lines (every 5 s) on stderr; the figures go to stdout as JSON
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    out = {"which": args.which, "machine": f"{platform.node()} {os.cpu_count()} CPUs",
           "load_avg_start": os.getloadavg()}
    modes = {"linear": bench_linear, "linear-cli": bench_linear_cli, "deep1": bench_deep1,
             "full": bench_full}
    out.update(modes[args.which](args))
    out["load_avg_end"] = os.getloadavg()
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
