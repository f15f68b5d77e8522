"""Every test session: the `quantray-ckpt-*` directories its stopped jobs' workers left in
the temp folder (a worker killed mid-upload keeps its checkpoint there: Ray deletes one only
after its upload) are removed at the end, so a test run leaves no litter behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

CKPT_PREFIX = "quantray-ckpt-"  # = ray_jobs.deep_runs.CKPT_PREFIX (no ray import here)


def _ckpt_dirs() -> set[str]:
    tmp = tempfile.gettempdir()
    try:
        return {os.path.join(tmp, n) for n in os.listdir(tmp) if n.startswith(CKPT_PREFIX)}
    except OSError:
        return set()


@pytest.fixture(scope="session", autouse=True)
def _remove_left_checkpoint_dirs() -> Iterator[None]:
    before = _ckpt_dirs()
    yield
    for path in _ckpt_dirs() - before:  # this session's: none was there before it
        shutil.rmtree(path, ignore_errors=True)
