"""Where a job's deep runs go: the share of a GPU each TorchTrainer run asks for, and how
many runs go at once. Decided once per job, before planning (`units_per_run: auto` groups
the units for that many slots), and used by the runs and the Tune search alike.

- No GPU in the cluster: a run's worker takes one CPU; runs at once = CPUs.
- `resources.gpu_fraction: 0.5` (a number): each run's worker asks for that share.
- `resources.gpu_fraction: auto`: the share is set by memory, 1/k of a GPU with

      need = CUDA_CONTEXT_BYTES + HEADROOM x (largest deep model's training memory
                                               + the symbol's arrays on the device)
      k    = floor(smallest GPU memory in the cluster / need), clamped to
             [1, MAX_RUNS_PER_GPU]

  A model's training memory is `models.training.memory.estimate_memory` (parameters,
  gradients, optimizer state, measured activations) at its batch size, plus the inputs of
  a validation batch, for the dimensions of a probe symbol: the first of the job's
  symbols whose data prepares (the job's symbols are assumed alike in size; set a share
  by hand for very uneven data). The GPU memory is read through NVML (Ray's bundled
  pynvml, or `nvidia-smi`) by a zero-CPU task on every GPU node. A share that cannot be
  worked out (no GPU memory readable, no symbol prepares) is 1.0, with a warning that
  says why and which field to set.

Runs at once: `resources.max_concurrent_runs`, or min(CPUs, GPUs x runs per GPU) with
GPUs, or CPUs without.

With GPUs, each GPU node is asked first whether it can train on them (an NVIDIA driver and
a torch built with CUDA and NCCL, `cluster_gpu_problems`); a node that advertises GPUs but
cannot fails the job before anything trains, naming the node and the cause.
"""

from __future__ import annotations

import logging
import math
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray

from ray_jobs.spec import JobSpec

log = logging.getLogger("quantray.placement")

CUDA_CONTEXT_BYTES = 1 << 30  # torch's CUDA context with cuBLAS/cuDNN handles, per process
HEADROOM = 1.5  # allocator fragmentation, cuDNN workspaces, backward-pass transients
MAX_RUNS_PER_GPU = 8  # beyond this, runs on daily data queue on the GPU's kernels anyway
GPU_QUERY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DeepPlacement:
    """The GPU share of one deep run (0.0 on CPUs) and the runs that go at once."""

    gpu: float
    slots: int
    reason: str = ""


def deep_placement(
    spec: JobSpec,
    resources: dict[str, float],
    symbols: Sequence[str] = (),
    *,
    gpu_memory: Callable[[], int | None] | None = None,
    need_bytes: Callable[[JobSpec, Sequence[str]], int | None] | None = None,
    gpu_problems: Callable[[], dict[str, str]] | None = None,
) -> DeepPlacement:
    """The placement of `spec`'s deep runs on a cluster with `resources`
    (`ray.cluster_resources()`). `gpu_memory` and `need_bytes` default to reading the
    cluster's GPUs and estimating the job's largest model on its first preparable symbol
    of `symbols`, `gpu_problems` to `cluster_gpu_problems`; tests pass their own.

    Raises RuntimeError, before anything trains, when a GPU node cannot train on its GPU
    (no NVIDIA driver, or a torch built without CUDA/NCCL): its runs would otherwise each
    fail in Ray Train's set-up with "Distributed package doesn't have NCCL built in"."""
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = float(resources.get("GPU", 0) or 0)
    fixed_slots = spec.resources.max_concurrent_runs
    if gpus <= 0 or not spec.deep_models:
        slots = int(fixed_slots) if fixed_slots != "auto" else cpus
        why = "no GPU: one CPU per run"
        if spec.resources.gpu_fraction != "auto":  # asked for, but nothing to share
            why += f" (resources.gpu_fraction={spec.resources.gpu_fraction} not used)"
        return DeepPlacement(0.0, slots, why if spec.deep_models else "")
    problems = (gpu_problems or cluster_gpu_problems)()
    if problems:
        nodes = "; ".join(f"node {node}: {why}" for node, why in sorted(problems.items()))
        raise RuntimeError(
            f"the cluster has {gpus:g} GPU(s) for the deep runs of models "
            f"{', '.join(spec.deep_models)}, but {len(problems)} GPU node(s) cannot train on "
            f"a GPU ({nodes}). Give GPU nodes the NVIDIA driver and the CUDA build of torch "
            "(cluster.yaml's gpu_worker), or start them without --num-gpus so the runs take "
            "CPUs")  # fmt: skip
    if spec.resources.gpu_fraction != "auto":
        share = float(spec.resources.gpu_fraction)
        reason = f"resources.gpu_fraction={share:g}"
    else:
        share, reason = _auto_share(spec, symbols, gpu_memory or cluster_gpu_memory,
                                    need_bytes or run_memory_bytes)  # fmt: skip
    per_gpu = max(1, math.floor(1.0 / share + 1e-9))
    slots = int(fixed_slots) if fixed_slots != "auto" else max(1, min(cpus, int(gpus) * per_gpu))
    return DeepPlacement(share, slots, reason)


def _auto_share(
    spec: JobSpec,
    symbols: Sequence[str],
    gpu_memory: Callable[[], int | None],
    need_bytes: Callable[[JobSpec, Sequence[str]], int | None],
) -> tuple[float, str]:
    memory = gpu_memory()
    if not memory:
        log.warning("resources.gpu_fraction auto: the GPUs' memory could not be read (see "
                    "above); each deep run takes a whole GPU. Set resources.gpu_fraction "
                    "(e.g. 0.25) to share GPUs")  # fmt: skip
        return 1.0, "auto: GPU memory unreadable, a whole GPU per run"
    need = need_bytes(spec, symbols)
    if need is None:
        log.warning("resources.gpu_fraction auto: no symbol of the job prepared for the "
                    "memory estimate; each deep run takes a whole GPU")  # fmt: skip
        return 1.0, "auto: no probe symbol, a whole GPU per run"
    total = CUDA_CONTEXT_BYTES + int(HEADROOM * need)
    k = memory // total
    if k < 1:
        log.warning("resources.gpu_fraction auto: a run needs about %.1f GiB, more than the "
                    "%.1f GiB of the smallest GPU; each run takes a whole GPU and may run out "
                    "of memory: lower train.batch_size or the model's size",
                    total / 2**30, memory / 2**30)  # fmt: skip
    k = max(1, min(MAX_RUNS_PER_GPU, int(k)))
    return 1.0 / k, (f"auto: a run needs ~{total / 2**30:.2f} GiB of a "
                     f"{memory / 2**30:.1f} GiB GPU, {k} per GPU")  # fmt: skip


def run_memory_bytes(spec: JobSpec, symbols: Sequence[str]) -> int | None:
    """Device bytes of the job's largest deep model in training, plus a symbol's arrays,
    for the first of `symbols` whose data prepares (None if none of the first few does)."""
    from ray_jobs.tasks import prepare_many

    for symbol in list(symbols)[:5]:
        prepared, errors = prepare_many(spec, [symbol])
        if symbol in prepared:
            fold = prepared[symbol][-1]  # walk-forward: the largest training window
            return max(model_memory_bytes(spec, m, fold) for m in spec.deep_models)
        log.info("gpu_fraction auto: probe symbol %s did not prepare: %s", symbol,
                 errors.get(symbol))
    return None


def model_memory_bytes(spec: JobSpec, model: str, prepared: Any) -> int:
    """Training-memory estimate of `model` as the job trains it on `prepared` (a
    PreparedSymbol): the module at its batch sizes plus the arrays the loop moves to the
    device (features, labels, row indices)."""
    from models.config import ModelDims
    from models.registry import build_module, get_spec, resolve
    from models.training.memory import estimate_memory
    from ray_jobs.units import unit_overrides

    model_spec = get_spec(model)
    resolved = resolve(model, spec.preset, unit_overrides(spec, model))
    seq_len = resolved.seq_len if model_spec.input == "sequence" else 1
    dims = ModelDims(prepared.n_features, seq_len, len(prepared.horizons), spec.target.kind)
    module = build_module(model, resolved.model, dims)
    batch = resolved.train.batch_size
    estimate = estimate_memory(module, dims, model_spec.input, batch, resolved.train)
    val_inputs = estimate["inputs"] // batch * max(2 * batch, 1024)  # the loop's val batches
    arrays = prepared.features.nbytes + prepared.y_class.nbytes + prepared.y_return.nbytes
    return int(estimate["total"] + val_inputs + arrays + 8 * prepared.n_samples)


def cluster_gpu_memory() -> int | None:
    """The smallest total memory of any GPU on the cluster's alive nodes, in bytes (None
    if no GPU node answers within GPU_QUERY_TIMEOUT_S)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("GPU")]
    refs = {
        n["NodeID"]: _node_gpu_memory.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote()
        for n in nodes
    }
    sizes: list[int] = []
    for node_id, ref in refs.items():
        try:
            sizes += ray.get(ref, timeout=GPU_QUERY_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - one node's answer; the caller warns
            log.warning("reading the GPU memory of node %s failed: %s", node_id[:12], exc)
    return min(sizes) if sizes else None


def cluster_gpu_problems() -> dict[str, str]:
    """{node (ip and id): why it cannot train on its GPUs} for the alive nodes that
    advertise GPUs, from a zero-CPU task on each (`_node_cuda_problem`). A node that does
    not answer within GPU_QUERY_TIMEOUT_S is logged and left out. Outside a Ray cluster
    there is no node to ask: {}."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not ray.is_initialized():
        return {}
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("GPU")]
    refs = {
        f"{n.get('NodeManagerAddress')} ({n['NodeID'][:12]})": _node_cuda_problem.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote()
        for n in nodes
    }
    problems = {}
    for node, ref in refs.items():
        try:
            why = ray.get(ref, timeout=GPU_QUERY_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - one node's answer; its runs will tell
            log.warning("checking the GPUs of node %s failed: %s", node, exc)
            continue
        if why:
            problems[node] = why
    return problems


@ray.remote(num_cpus=0, max_retries=0)
def _node_cuda_problem() -> str | None:
    """Why this node cannot train on a GPU (None if it can): no GPU visible to NVML or
    `nvidia-smi` (no driver), or a torch without CUDA or NCCL (the CPU build)."""
    import torch
    import torch.distributed

    why = []
    try:
        if not _gpu_memory_here():
            why.append("no GPU visible to NVML")
    except Exception as exc:  # noqa: BLE001 - reported as the reason
        why.append(f"no NVIDIA driver ({str(exc).splitlines()[0][:200]})")
    if torch.version.cuda is None:
        why.append(f"torch {torch.__version__} is built without CUDA")
    elif not torch.distributed.is_nccl_available():
        why.append(f"torch {torch.__version__} is built without NCCL")
    return "; ".join(why) or None


def _gpu_memory_here() -> list[int]:
    """Total memory of each GPU of this node (NVML, else `nvidia-smi`), in bytes."""
    try:
        from ray._private.thirdparty import pynvml

        pynvml.nvmlInit()
        try:
            return [
                int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).total)
                for i in range(pynvml.nvmlDeviceGetCount())
            ]
        finally:
            pynvml.nvmlShutdown()
    except Exception as nvml_exc:  # noqa: BLE001 - try the command line tool next
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=30, check=True,
            ).stdout  # fmt: skip
        except (OSError, subprocess.SubprocessError) as smi_exc:
            raise RuntimeError(f"NVML: {nvml_exc}; nvidia-smi: {smi_exc}") from smi_exc
        return [int(float(v)) << 20 for v in out.split()]  # MiB


_node_gpu_memory = ray.remote(num_cpus=0, max_retries=0)(_gpu_memory_here)
