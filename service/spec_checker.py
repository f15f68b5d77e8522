"""Model overrides checked against the model registry at submit time, in a child process.

The spec's own checks (`ray_jobs.spec`) name unknown fields and bad training settings, but
whether `hidden_size=-5`, `"big"` or `d_model=30` with `n_heads=4` is valid is decided by
each model's config class, which lives next to its torch module. The API process never
imports torch (see ARCHITECTURE.md), so one spawned child process imports the registry
once and answers every check (`ray_jobs.spec.registry_errors`); it is shared by every app
in this process and started on first use (`warm()` starts it early).

Without this a bad override is accepted with 201 and fails on the cluster, with the reason
buried in the driver's log. If the child cannot answer (it crashed twice in a row, or it
timed out), the submit fails with 503 naming the cause: a spec is never accepted unchecked.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ray_jobs.spec import registry_errors

TIMEOUT_S = 120.0  # the first check imports torch in the child: seconds on a busy machine


class CheckerUnavailable(RuntimeError):
    """The checker process could not answer."""


_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def _executor(*, fresh: bool = False) -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if fresh and _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
            _pool = None
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=1,
                                        mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_exit_with_parent, initargs=(os.getpid(),))
        return _pool


def _exit_with_parent(parent: int) -> None:
    """In the child: exit as soon as the API process is gone (even SIGKILLed), instead of
    living on as an orphan holding the registry's memory."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _import_registry() -> None:
    import models.registry  # noqa: F401 - imported for its cost, paid here once


def warm() -> None:
    """Start the child and import the registry in it now, in the background (a check of an
    empty spec would stop at the spec's own errors, before the registry is imported)."""
    _executor().submit(_import_registry)


def override_errors(spec: dict[str, Any], timeout_s: float = TIMEOUT_S) -> list[tuple[str, str]]:
    """(field, message) pairs for `spec`'s model overrides that the registry refuses. A spec
    without overrides (presets only) needs no check."""
    if not spec.get("overrides"):
        return []
    last: BaseException | None = None
    for attempt in range(2):  # a dead child is replaced once
        try:
            return _executor(fresh=attempt > 0).submit(registry_errors, spec).result(timeout_s)
        except BrokenProcessPool as exc:
            last = exc
        except TimeoutError as exc:
            raise CheckerUnavailable(
                f"the model-settings check did not answer within {timeout_s:.0f} s; retry"
            ) from exc
    raise CheckerUnavailable(f"the model-settings check process died twice: {last}") from last
