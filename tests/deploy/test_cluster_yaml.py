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
