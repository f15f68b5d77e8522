"""Shared fixtures of the model tests."""

from __future__ import annotations

import pytest
import scipy.linalg  # noqa: F401  (loads scipy's own BLAS, so the limit below covers it)
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core box: one intra-op thread avoids oversubscription.
    The same for BLAS (numpy/scipy/statsmodels): a busy box makes a 2-thread OpenBLAS spin,
    e.g. an OLS fit of 3,000 rows took ~1 s instead of ~10 ms at load 9."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)
