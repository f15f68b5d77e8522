"""Measure the fixed cost of a Ray Train V2 `TorchTrainer` run on this machine.

What it times (each on the same tiny torch unit: a 2-layer MLP, a few epochs on random data):

- ``inline``: the unit called directly in this process (the floor).
- ``trainer``: one `TorchTrainer.fit()` per unit, driven from this process.
- ``tune``: a Tune function that builds the `TorchTrainer` (Train V2 style, never
  `Tuner(trainer)`), one trial per unit, trials one after another.
- ``grouped``: N units trained one after another inside ONE `TorchTrainer` run, each
  reporting its own checkpoint (`checkpoint_dir_name=<unit>/epoch_k`).
- ``resume``: a grouped run that fails part-way, then the same (storage_path, name) again:
  does V2 hand the latest checkpoint back through `ray.train.get_checkpoint()`?

- ``--ab UNITS``: instead of the above, alternate the `AB_CONFIGS` (controller poll
  interval, async checkpoint upload, fewer helper actors) run by run, one UNITS-unit run
  each, so a changing machine load hits every configuration alike.

Usage (never uses port 6379; starts its own local Ray with 2 CPUs):

    .venv/bin/python bench/trainer_overhead.py --repeats 3 --group-sizes 1 4 8
    .venv/bin/python bench/trainer_overhead.py --repeats 3 --skip-tune --skip-resume \
        --upload-mode ASYNC
    .venv/bin/python bench/trainer_overhead.py --ab 4 --repeats 3 --epochs 3
    .venv/bin/python bench/trainer_overhead.py --smoke-test

Prints one JSON document with all timings (seconds); `--out FILE` also writes it there.
Findings and figures: docs/ray-notes.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def tiny_unit(seed: int, epochs: int, report: Any = None, unit: str = "u") -> dict[str, float]:
    """Train a tiny MLP; call `report(metrics, ckpt_dir, epoch)` after each epoch if given."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    x = torch.randn(512, 16)  # (N, F)
    y = (x[:, 0] > 0).long()  # (N,)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = torch.tensor(0.0)
    for epoch in range(epochs):
        for i in range(0, 512, 64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
            loss.backward()
            opt.step()
        if report is not None:
            with tempfile.TemporaryDirectory() as d:
                torch.save({"model": model.state_dict(), "epoch": epoch, "unit": unit}, f"{d}/m.pt")
                report({"unit": unit, "epoch": epoch, "val_loss": float(loss)}, d, epoch)
    return {"val_loss": float(loss)}


def _train_loop(config: dict[str, Any]) -> None:
    """Per-worker loop: train `config["units"]` one after another, skipping finished ones."""
    import ray.train

    t_enter = time.time()
    done: set[str] = set()
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            import torch

            state = torch.load(f"{d}/m.pt", weights_only=False)
            done = set(state.get("done", []))
            # The latest checkpoint belongs to the unit that was running; in this probe a
            # unit whose checkpoint exists counts as done (a real executor resumes its epoch).
            done.add(state["unit"])
        if config.get("resume_log"):
            Path(config["resume_log"]).write_text(json.dumps(sorted(done)))

    mode = ray.train.CheckpointUploadMode[config.get("upload_mode", "SYNC")]

    def report(metrics: dict[str, Any], d: str, epoch: int) -> None:
        if mode == ray.train.CheckpointUploadMode.ASYNC:
            # Async upload outlives `d` (a TemporaryDirectory): hand Ray its own copy,
            # which it deletes after the upload.
            d = shutil.copytree(d, tempfile.mkdtemp(prefix="ckpt_"), dirs_exist_ok=True)
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(d),
            checkpoint_dir_name=f"{metrics['unit']}/epoch_{epoch:04d}",
            checkpoint_upload_mode=mode,
        )

    for k, unit in enumerate(config["units"]):
        if unit in done:
            continue
        if config.get("fail_at") == k:
            raise RuntimeError(f"injected failure before unit {unit}")
        tiny_unit(k, config["epochs"], report=report, unit=unit)
    if config.get("timing_file"):  # wall-clock marks for the startup / teardown split
        Path(config["timing_file"]).write_text(json.dumps([t_enter, time.time()]))


def _trainer(name: str, storage: str, config: dict[str, Any], callbacks: list | None = None):
    import ray.train
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        _train_loop,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=1, use_gpu=False, resources_per_worker={"CPU": 1}
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=ray.train.FailureConfig(max_failures=0),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks or [],
        ),
    )


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(
    repeats: int,
    group_sizes: list[int],
    epochs: int,
    storage: str,
    *,
    tune: bool = True,
    resume: bool = True,
    upload_mode: str = "SYNC",
) -> dict[str, Any]:
    import ray
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    out: dict[str, Any] = {
        "epochs_per_unit": epochs,
        "repeats": repeats,
        "upload_mode": upload_mode,
        "env": {k: v for k, v in os.environ.items() if k.startswith("RAY_TRAIN")},
    }
    tiny_unit(0, epochs)  # warm-up: torch import and first-call costs stay out of the timing
    out["inline_s"] = [_timed(lambda: tiny_unit(0, epochs)) for _ in range(repeats)]

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False)
    out["ray_init_s"] = time.perf_counter() - t0

    out["trainer_fit_s"], out["trainer_startup_s"], out["trainer_teardown_s"] = [], [], []
    for i in range(repeats):
        marks = str(Path(storage) / f"marks_{i}.json")
        cfg = {"units": ["u0"], "epochs": epochs, "timing_file": marks, "upload_mode": upload_mode}
        t0 = time.time()
        _trainer(f"direct_{i}", storage, cfg).fit()
        t1 = time.time()
        enter, leave = json.loads(Path(marks).read_text())
        out["trainer_fit_s"].append(t1 - t0)
        out["trainer_startup_s"].append(enter - t0)  # fit() -> train loop entered
        out["trainer_teardown_s"].append(t1 - leave)  # train loop returned -> fit() returns

    def driver(cfg: dict[str, Any]) -> None:
        t = time.perf_counter()
        _trainer(
            f"tune_{cfg['label']}_{cfg['i']}",
            storage,
            {"units": ["u0"], "epochs": epochs},
            [TuneReportCallback()],
        ).fit()
        ray.tune.report({"fit_s": time.perf_counter() - t})

    # cpu1: the Tune default (1 CPU per trial) -> on 2 CPUs one trial at a time.
    # cpu001: the trial is only a driver; 0.01 CPU lets two trials (two workers) overlap.
    tune_variants = ((1, 1, "tune_trial_cpu1"), (0.01, 2, "tune_trial_cpu001_conc2"))
    for cpu, conc, label in tune_variants if tune else ():
        tuner = ray.tune.Tuner(
            ray.tune.with_resources(driver, {"CPU": cpu}),
            param_space={"i": ray.tune.grid_search(list(range(repeats * conc))), "label": label},
            tune_config=ray.tune.TuneConfig(max_concurrent_trials=conc),
            run_config=ray.tune.RunConfig(name=f"probe_{label}", storage_path=storage),
        )
        t0 = time.perf_counter()
        grid = tuner.fit()
        total = time.perf_counter() - t0
        out[f"{label}_total_s"] = total
        out[f"{label}_per_trial_s"] = total / (repeats * conc)
        out[f"{label}_fit_inside_s"] = [r.metrics.get("fit_s") for r in grid]

    grouped: dict[str, float] = {}
    for n in group_sizes:
        units = [f"u{k}" for k in range(n)]
        grouped[str(n)] = _timed(
            lambda n=n, units=units: _trainer(
                f"group_{n}",
                storage,
                {"units": units, "epochs": epochs, "upload_mode": upload_mode},
            ).fit()
        )
    out["grouped_fit_s"] = grouped

    if not resume:
        ray.shutdown()
        return out
    # Resume: fail before unit 2 of 4, rerun the same name, see what get_checkpoint returns.
    resume_log = str(Path(storage) / "resume_log.json")
    units = ["a", "b", "c", "d"]
    try:
        _trainer("resume", storage, {"units": units, "epochs": 2, "fail_at": 2}).fit()
        out["resume_first_fit"] = "succeeded (unexpected)"
    except Exception as exc:  # noqa: BLE001 - probe records whatever V2 raises
        out["resume_first_fit"] = f"raised {type(exc).__name__}"
    t = _timed(
        lambda: _trainer(
            "resume", storage, {"units": units, "epochs": 2, "resume_log": resume_log}
        ).fit()
    )
    out["resume_second_fit_s"] = t
    out["resume_units_seen_done"] = (
        json.loads(Path(resume_log).read_text()) if Path(resume_log).exists() else None
    )
    out["resume_ckpt_dirs"] = sorted(
        str(p.relative_to(Path(storage) / "resume"))
        for p in (Path(storage) / "resume").glob("*/epoch_*")
    )
    ray.shutdown()
    return out


# A/B configurations: env vars the driver passes on to the Train controller at each fit(),
# so they can alternate inside one process (fair under a fluctuating machine load).
AB_CONFIGS: dict[str, tuple[dict[str, str], str]] = {
    "default": ({}, "SYNC"),
    "poll_0.2s": ({"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}, "SYNC"),
    "poll_0.2s_async": ({"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}, "ASYNC"),
    "lean": (
        {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
         "RAY_TRAIN_METRICS_ENABLED": "0"},
        "ASYNC",
    ),
}  # fmt: skip


def measure_ab(repeats: int, units: int, epochs: int, storage: str) -> dict[str, Any]:
    """Alternate AB_CONFIGS run by run: one `units`-unit run each, `repeats` rounds."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    tiny_unit(0, epochs)  # warm-up
    out: dict[str, Any] = {name: [] for name in AB_CONFIGS}
    for rep in range(repeats):
        for name, (env, mode) in AB_CONFIGS.items():
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            marks = str(Path(storage) / f"ab_{name}_{rep}.json")
            cfg = {"units": [f"u{k}" for k in range(units)], "epochs": epochs,
                   "timing_file": marks, "upload_mode": mode}  # fmt: skip
            t0 = time.time()
            _trainer(f"ab_{name}_{rep}", storage, cfg).fit()
            t1 = time.time()
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
            enter, leave = json.loads(Path(marks).read_text())
            out[name].append({"fit_s": t1 - t0, "startup_s": enter - t0,
                              "body_s": leave - enter, "teardown_s": t1 - leave})  # fmt: skip
    ray.shutdown()
    med = statistics.median
    return {
        "units_per_run": units, "epochs_per_unit": epochs, "repeats": repeats, "runs": out,
        "median": {n: {k: round(med(r[k] for r in rs), 2) for k in rs[0]}
                   for n, rs in out.items()},
    }  # fmt: skip


def summarize(r: dict[str, Any]) -> dict[str, float]:
    med = statistics.median
    inline = med(r["inline_s"])
    s = {
        "inline_unit_s": inline,
        "trainer_fixed_s": med(r["trainer_fit_s"]) - inline,
        "trainer_startup_s": med(r["trainer_startup_s"]),
        "trainer_teardown_s": med(r["trainer_teardown_s"]),
    }
    if "tune_trial_cpu1_per_trial_s" in r:
        s["tune_trial_cpu1_fixed_s"] = r["tune_trial_cpu1_per_trial_s"] - inline
        s["tune_conc2_throughput_s_per_unit"] = r["tune_trial_cpu001_conc2_per_trial_s"]
    sizes = sorted(int(n) for n in r["grouped_fit_s"])
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        per_unit = (r["grouped_fit_s"][str(hi)] - r["grouped_fit_s"][str(lo)]) / (hi - lo)
        s["grouped_marginal_unit_s"] = per_unit
        s["grouped_marginal_overhead_s"] = per_unit - inline
        s["grouped_fixed_s"] = r["grouped_fit_s"][str(lo)] - lo * per_unit
        s["per_report_s"] = (per_unit - inline) / r["epochs_per_unit"]
    return s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--group-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--smoke-test", action="store_true", help="1 repeat, groups 1 and 2")
    parser.add_argument("--out", help="also write the JSON here (Tune prints to stdout too)")
    parser.add_argument("--skip-tune", action="store_true", help="skip the Tune experiments")
    parser.add_argument("--skip-resume", action="store_true", help="skip the resume check")
    parser.add_argument("--upload-mode", choices=["SYNC", "ASYNC"], default="SYNC")
    parser.add_argument(
        "--ab", type=int, metavar="UNITS", help="instead: alternate AB_CONFIGS, UNITS per run"
    )
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.repeats, args.group_sizes, args.epochs = 1, [1, 2], 1
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if args.ab:
        with tempfile.TemporaryDirectory(prefix="quantray_probe_") as storage:
            result = measure_ab(args.repeats, args.ab, args.epochs, storage)
        text = json.dumps(result, indent=2)
        if args.out:
            Path(args.out).write_text(text)
        print(text)
        return 0
    with tempfile.TemporaryDirectory(prefix="quantray_probe_") as storage:
        raw = measure(
            args.repeats, args.group_sizes, args.epochs, storage, tune=not args.skip_tune,
            resume=not args.skip_resume, upload_mode=args.upload_mode,
        )  # fmt: skip
    text = json.dumps({"raw": raw, "summary": summarize(raw)}, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
