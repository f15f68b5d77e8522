"""Deep-run placement: the GPU share of a run (a number from the spec, or `auto` from the
model's memory estimate and the GPU's memory) and how many runs go at once."""

from __future__ import annotations

import logging

import pytest

from ray_jobs.placement import (
    CUDA_CONTEXT_BYTES,
    HEADROOM,
    MAX_RUNS_PER_GPU,
    deep_placement,
    run_memory_bytes,
)
from ray_jobs.spec import JobSpec

GIB = 1 << 30


def _spec(models=("ols", "lstm"), *, overrides=None, **resources) -> JobSpec:
    return JobSpec.from_dict({
        "name": "place", "dataset": {"uri": "sample:sp500", "symbols": 2},
        "target": {"kind": "direction", "horizons": [1, 5]}, "models": list(models),
        "features": {"seq_len": 20}, "preset": "fast", "resources": resources,
        "overrides": overrides or {},
    })  # fmt: skip


def _fixed(gib: float | None):
    return lambda *_: None if gib is None else int(gib * GIB)


def test_without_gpus_each_run_takes_a_cpu() -> None:
    place = deep_placement(_spec(), {"CPU": 6.0})
    assert (place.gpu, place.slots) == (0.0, 6)
    assert deep_placement(_spec(max_concurrent_runs=2), {"CPU": 6.0}).slots == 2
    # nothing is probed on a CPU cluster
    boom = _fixed(None)
    assert deep_placement(_spec(), {"CPU": 2.0}, gpu_memory=boom, need_bytes=boom).gpu == 0.0
    # a share the spec asks for is not silently dropped: the driver's log line says so
    assert place.reason == "no GPU: one CPU per run"
    asked = deep_placement(_spec(gpu_fraction=0.5), {"CPU": 2.0})
    assert asked.gpu == 0.0
    assert asked.reason == "no GPU: one CPU per run (resources.gpu_fraction=0.5 not used)"


def test_a_share_from_the_spec_packs_that_many_runs_per_gpu() -> None:
    spec = _spec(gpu_fraction=0.25)
    assert (deep_placement(spec, {"CPU": 16.0, "GPU": 1.0}).gpu,
            deep_placement(spec, {"CPU": 16.0, "GPU": 1.0}).slots) == (0.25, 4)  # fmt: skip
    assert deep_placement(spec, {"CPU": 16.0, "GPU": 2.0}).slots == 8
    assert deep_placement(spec, {"CPU": 3.0, "GPU": 2.0}).slots == 3  # CPU-bound
    assert deep_placement(_spec(gpu_fraction=0.3), {"CPU": 16.0, "GPU": 1.0}).slots == 3
    assert deep_placement(_spec(gpu_fraction=1), {"CPU": 16.0, "GPU": 1.0}).slots == 1


@pytest.mark.parametrize(
    ("need_gib", "gpu_gib", "per_gpu"),
    [
        (0.5, 80.0, MAX_RUNS_PER_GPU),  # small daily models: capped
        (2.0, 12.0, 3),  # 1 + 1.5 x 2 = 4 GiB a run: 3 fit, 1/3 each
        (6.0, 12.0, 1),  # 10 GiB a run: one per GPU
    ],
)
def test_auto_share_follows_memory(need_gib, gpu_gib, per_gpu) -> None:
    total = CUDA_CONTEXT_BYTES + HEADROOM * need_gib * GIB
    expected = max(1, min(MAX_RUNS_PER_GPU, int(gpu_gib * GIB // total)))
    assert expected == per_gpu
    place = deep_placement(_spec(), {"CPU": 32.0, "GPU": 1.0},
                           gpu_memory=_fixed(gpu_gib), need_bytes=_fixed(need_gib))
    assert place.gpu == pytest.approx(1.0 / expected)
    assert place.slots == expected
    assert "auto" in place.reason


def test_auto_share_says_why_when_it_takes_a_whole_gpu(caplog) -> None:
    resources = {"CPU": 8.0, "GPU": 1.0}
    with caplog.at_level(logging.WARNING, logger="quantray.placement"):
        unreadable = deep_placement(_spec(), resources, gpu_memory=_fixed(None),
                                    need_bytes=_fixed(1.0))
    assert (unreadable.gpu, unreadable.slots) == (1.0, 1)
    assert "resources.gpu_fraction" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="quantray.placement"):
        too_big = deep_placement(_spec(), resources, gpu_memory=_fixed(8.0),
                                 need_bytes=_fixed(20.0))
    assert too_big.gpu == 1.0 and "train.batch_size" in caplog.text


def test_the_memory_estimate_is_the_jobs_largest_model_on_real_data() -> None:
    """The estimate builds each deep model for a prepared symbol and grows with what the
    spec makes bigger (batch size, window, model width); a symbol that does not prepare
    is skipped for the next."""
    lstm = run_memory_bytes(_spec(("lstm",)), ["NOPE", "A"])
    assert lstm is not None and 100_000 < lstm < 2 * GIB
    big_batch = run_memory_bytes(
        _spec(("lstm",), overrides={"lstm": {"train.batch_size": 4096}}), ["A"])
    assert big_batch > 4 * lstm
    both = run_memory_bytes(_spec(("mlp", "lstm")), ["A"])
    assert both == max(lstm, run_memory_bytes(_spec(("mlp",)), ["A"]))
    wide = run_memory_bytes(_spec(("lstm",), overrides={"lstm": {"hidden_size": 256}}), ["A"])
    assert wide > lstm
    assert run_memory_bytes(_spec(("lstm",)), ["NOPE"]) is None


def test_gpu_memory_on_a_cluster_without_gpus(ray_cluster) -> None:
    """No GPU node in the cluster (the fixture's num_gpus=0): nothing to ask. The node task
    itself reads the machine's GPUs through NVML, which ignores Ray's GPU count: on a
    machine without a GPU driver it says why it cannot answer (NVML and nvidia-smi both),
    which the auto share then reports; on one with a driver it gives their sizes."""
    import ray

    from ray_jobs.placement import _node_gpu_memory, cluster_gpu_memory

    assert cluster_gpu_memory() is None
    try:
        sizes = ray.get(_node_gpu_memory.remote(), timeout=60)
    except Exception as exc:  # noqa: BLE001 - the no-driver case, checked below
        assert "NVML" in str(exc) and "nvidia-smi" in str(exc), exc
    else:
        assert sizes and all(s > 2**30 for s in sizes), sizes


class PlacementGroupCleaner:
    """A stand-in for Ray Train's cleaner (the sweep goes by the class name, which a class
    defined inside a test would not have): idle, as a stuck one is."""

    def ready(self) -> bool:
        return True


def test_stuck_cleaners_of_dead_controllers_are_stopped_and_their_groups_removed(
    ray_cluster, monkeypatch
) -> None:
    """A Train run's detached PlacementGroupCleaner whose controller died but which cannot
    see it (its address-less state-API lookup fails on a host with several Ray instances)
    lives on for good, holding its controller's group. The leak sweep stops it, and removes
    the group, once the controller has been dead for the grace period: also for this
    job's own runs (a trial ASHA stopped) and whether or not the driver's own state API
    answers. Here a stand-in of the same class name sleeps as a stuck cleaner does."""
    import time

    import ray
    from ray._private.state import actors
    from ray.util.placement_group import placement_group

    from ray_jobs import cluster_gc

    @ray.remote(num_cpus=0)
    class Controller:
        def start(self) -> tuple[str, str]:
            cleaner = ray.remote(num_cpus=0)(PlacementGroupCleaner)
            self.cleaner = cleaner.options(lifetime="detached").remote()
            ray.get(self.cleaner.ready.remote())
            self.pg = placement_group([{"CPU": 0.01}])
            ray.get(self.pg.ready(), timeout=60)
            return self.cleaner._actor_id.hex(), self.pg.id.hex()

    controller = Controller.remote()
    cleaner_id, pg_id = ray.get(controller.start.remote(), timeout=120)
    try:
        ray.kill(controller)
        deadline = time.monotonic() + 30
        while actors()[controller._actor_id.hex()]["State"] != "DEAD":
            assert time.monotonic() < deadline, "the stand-in controller did not die"
            time.sleep(0.2)
        # within the grace period nothing is touched: a working cleaner is exiting
        assert cluster_gc.stop_stuck_cleaners({ray.get_runtime_context().get_job_id()}) == []
        assert actors()[cleaner_id]["State"] == "ALIVE"
        monkeypatch.setattr(cluster_gc, "CLEANER_GRACE_S", 0.0)
        cluster_gc.remove_leaked_placement_groups()
        deadline = time.monotonic() + 30
        while actors()[cleaner_id]["State"] != "DEAD":
            assert time.monotonic() < deadline, "the stuck cleaner was not stopped"
            time.sleep(0.2)
        assert ray.util.placement_group_table()[pg_id]["state"] == "REMOVED"
    finally:  # leave the package's cluster clean if the sweep did not
        row = actors()[cleaner_id]
        if row["State"] != "DEAD" and row.get("Pid"):
            import os
            import signal

            os.kill(int(row["Pid"]), signal.SIGKILL)


@pytest.mark.parametrize("fraction", [1, 0.5, 0.25, "auto"])
def test_gpu_nodes_that_cannot_train_on_a_gpu_fail_the_job_up_front(fraction) -> None:
    """A node that advertises a GPU (`ray start --num-gpus=1`) but has no NVIDIA driver or
    a CPU build of torch: every deep run sent there failed in Ray Train's set-up with
    "Distributed package doesn't have NCCL built in" (seen on a two-node cluster), after
    the job had prepared its data. The placement says so before anything trains, naming
    the node, the cause and the fix; it neither hangs nor falls back to CPUs."""
    broken = {"10.77.1.2 (3f38c83d16d9)": "no NVIDIA driver (NVML: not found); torch "
              "2.13.0+cpu is built without CUDA"}  # fmt: skip
    spec = _spec(gpu_fraction=fraction)
    with pytest.raises(RuntimeError) as err:
        deep_placement(spec, {"CPU": 2.0, "GPU": 1.0}, gpu_problems=lambda: broken,
                       gpu_memory=_fixed(24.0), need_bytes=_fixed(0.5))
    message = str(err.value)
    assert "10.77.1.2" in message and "built without CUDA" in message
    assert "gpu_worker" in message and "--num-gpus" in message and "lstm" in message
    place = deep_placement(spec, {"CPU": 2.0, "GPU": 1.0}, gpu_problems=dict,
                           gpu_memory=_fixed(24.0), need_bytes=_fixed(0.5))
    expected = {1: (1.0, 1), 0.5: (0.5, 2), 0.25: (0.25, 2), "auto": (1 / 8, 2)}[fraction]
    assert (place.gpu, place.slots) == pytest.approx(expected)  # 2 CPUs bound the runs
    # no GPU in the cluster: nothing is asked
    assert deep_placement(spec, {"CPU": 2.0}, gpu_problems=lambda: broken).gpu == 0.0


def test_a_node_says_why_it_cannot_train_on_a_gpu(ray_cluster) -> None:
    """The node check itself, on this machine: without a driver or with the CPU build of
    torch it names the cause; with both it has none. The fixture's cluster has no GPU
    node, so the cluster-wide check asks nobody."""
    import ray
    import torch

    from ray_jobs.placement import _node_cuda_problem, cluster_gpu_problems

    assert cluster_gpu_problems() == {}
    why = ray.get(_node_cuda_problem.remote(), timeout=120)
    if torch.version.cuda is None:
        assert why and f"torch {torch.__version__} is built without CUDA" in why, why
    try:
        from ray_jobs.placement import _gpu_memory_here

        has_gpu = bool(_gpu_memory_here())
    except RuntimeError:
        has_gpu = False
        assert why and "no NVIDIA driver" in why, why
    if has_gpu and torch.version.cuda is not None and torch.distributed.is_nccl_available():
        assert why is None
