"""cluster.yaml is a valid Ray cluster launcher config (the schema shipped with Ray)."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text(encoding="utf-8"))


def test_cluster_yaml_validates_against_ray_schema(config: dict) -> None:
    validate_config(prepare_config(copy.deepcopy(config)))


def test_cluster_yaml_has_head_cpu_and_gpu_workers(config: dict) -> None:
    types = config["available_node_types"]
    assert config["head_node_type"] == "head"
    assert types["cpu_worker"]["max_workers"] > types["cpu_worker"]["min_workers"]  # autoscaling
    assert "g5" in types["gpu_worker"]["node_config"]["InstanceType"]
    commands = " ".join(config["setup_commands"])
    assert "torch==2.13.0" in commands and "pip install -q -e ~/quantray" in commands
    head = " ".join(config["head_start_ray_commands"])
    assert "quantray serve" in head and "QUANTRAY_STORAGE_URI=s3://" in head


def test_schema_check_is_real(config: dict) -> None:
    broken = copy.deepcopy(config)
    broken["available_node_types"]["head"]["bogus_field"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


def _node_setup(config: dict, node_type: str) -> list[str]:
    """The setup commands the autoscaler runs on a node of `node_type`: a type's own
    `worker_setup_commands` replace the merged global ones (Ray's
    `_get_node_type_specific_fields`); the head runs setup + head_setup commands."""
    prepared = prepare_config(copy.deepcopy(config))
    if node_type == config["head_node_type"]:
        return prepared["head_setup_commands"]
    own = prepared["available_node_types"][node_type].get("worker_setup_commands")
    return own if own is not None else prepared["worker_setup_commands"]


def test_gpu_workers_get_cuda_torch_or_stop_and_cpu_nodes_get_cpu_torch(config: dict) -> None:
    """A GPU node must never end up training on its CPU: its setup checks the NVIDIA driver
    and that torch sees CUDA, and fails with a message naming the fix (a plain Ubuntu AMI
    has no driver; the old `if nvidia-smi ... else CPU torch` installed the CPU build
    there, silently). The head and CPU workers get the CPU build of the pinned torch."""
    gpu = _node_setup(config, "gpu_worker")
    torch_gpu = [c for c in gpu if "pip install" in c and "torch==2.13.0" in c]
    assert torch_gpu == ["~/venv/bin/pip install -q torch==2.13.0"], torch_gpu
    driver = next(i for i, c in enumerate(gpu) if c.startswith("nvidia-smi ||"))
    assert "exit 1" in gpu[driver] and "ImageId" in gpu[driver]
    cuda = next(i for i, c in enumerate(gpu) if "torch.cuda.is_available()" in c)
    assert driver < gpu.index(torch_gpu[0]) < cuda < next(
        i for i, c in enumerate(gpu) if "pip install -q -e ~/quantray" in c)
    for node_type in ("head", "cpu_worker"):
        setup = _node_setup(config, node_type)
        torch_cpu = [c for c in setup if "torch==" in c]
        assert torch_cpu == ["~/venv/bin/pip install -q torch==2.13.0 --index-url "
                             "https://download.pytorch.org/whl/cpu"], (node_type, torch_cpu)
        assert not any("nvidia-smi" in c for c in setup), node_type


def test_a_gpu_node_is_up_for_the_placement_to_see(config: dict) -> None:
    """ray_jobs/placement.py chooses GPU or CPU runs from the GPUs the cluster has when a
    job starts, and CPU runs request no GPU from the autoscaler: with no GPU worker kept
    up, deep runs would never reach a GPU."""
    gpu = config["available_node_types"]["gpu_worker"]
    assert 1 <= gpu["min_workers"] <= gpu["max_workers"]
