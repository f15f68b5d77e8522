"""The service never loads Ray, torch or the model zoo; its CLI modules load only stdlib.
Checked in fresh interpreters, so nothing imported by other tests can hide a violation."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import service

HEAVY = ("ray", "torch", "models")


def _loaded_after(code: str) -> list[str]:
    script = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(service.__file__).parents[1],
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _service_modules() -> list[str]:
    names = [m.name for m in pkgutil.iter_modules(service.__path__, "service.")]
    assert {"service.app", "service.dispatcher", "service.ray_client", "service.cli_jobs"} <= set(
        names
    )
    return names


def test_importing_every_service_module_loads_no_ray_torch_or_models() -> None:
    modules = _service_modules()
    loaded = _loaded_after("\n".join(f"import {m}" for m in modules))
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
    assert heavy == [], heavy
    assert "fastapi" in loaded  # the check did import the app


def test_building_the_app_and_validating_a_spec_loads_no_ray_or_torch() -> None:
    code = """
import tempfile
from pathlib import Path
from service.app import create_app
from service.settings import Settings
from service.validation import spec_from_data
home = Path(tempfile.mkdtemp())
create_app(Settings.from_env({"QUANTRAY_HOME": str(home), "QUANTRAY_MAX_RUNNING_JOBS": "0"}))
spec_from_data({"name": "x", "dataset": {"uri": "sample:sp500"}, "models": ["lstm"],
                "overrides": {"lstm": {"train": {"epochs": 3}}}})
"""
    loaded = _loaded_after(code)
    heavy = [m for m in loaded if m.split(".")[0] in ("ray", "torch")]
    assert heavy == [], heavy
    # ray_jobs.spec's override check reads models.config (dataclasses only); nothing else.
    assert [m for m in loaded if m.split(".")[0] == "models"] in ([], ["models", "models.config"])


def test_cli_modules_import_only_stdlib_at_module_level() -> None:
    loaded = set(_loaded_after("import service.cli_jobs, service.cli_keys, service.cli_serve"))
    for lib in ("httpx", "fastapi", "sqlalchemy", "uvicorn", "pyarrow", "yaml", "pydantic"):
        assert lib not in loaded, lib
