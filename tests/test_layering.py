"""Imports point down only: data/ and models/ never pull in the layers above them.

Each check runs in a fresh interpreter (this test process may already hold ray or torch),
imports every module of the package found by pkgutil.walk_packages, one at a time, and
names the first module that brought a forbidden package into sys.modules.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import importlib, json, pkgutil, sys
package, forbidden = sys.argv[1], sys.argv[2].split(",")
root = importlib.import_module(package)
names = [package] + sorted(
    m.name for m in pkgutil.walk_packages(root.__path__, prefix=package + ".")
)
culprits = {}
for name in names:
    importlib.import_module(name)
    for f in forbidden:
        if f not in culprits and any(k == f or k.startswith(f + ".") for k in sys.modules):
            culprits[f] = name
print(json.dumps({"imported": names, "culprits": culprits}))
"""


def probe(package: str, forbidden: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, package, ",".join(forbidden)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"importing {package} failed:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_data_imports_no_upper_layer_nor_torch() -> None:
    result = probe("data", ["ray", "torch", "models", "service", "ray_jobs"])
    assert {"data.prepare", "data.features", "data.synthetic"} <= set(result["imported"])
    assert result["culprits"] == {}, f"forbidden package -> module importing it: {result}"


def test_models_import_no_ray_nor_service() -> None:
    if not (ROOT / "models" / "__init__.py").exists():
        pytest.skip("no models package yet")
    result = probe("models", ["ray", "service", "ray_jobs"])
    assert result["culprits"] == {}, f"forbidden package -> module importing it: {result}"


def test_probe_detects_a_forbidden_import() -> None:
    """The probe can fail: json imports json.decoder, so forbidding it must be caught."""
    result = probe("json", ["json.decoder"])
    assert result["culprits"] == {"json.decoder": "json"}
