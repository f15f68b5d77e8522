"""A thin httpx client for the e2e tests: one API key, polling helpers, and job specs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

FINAL = ("succeeded", "failed", "cancelled", "interrupted")
# The bundled sample cut to ~2 years: enough rows for seq_len 10 and horizons [1, 5] while
# an epoch stays well under a second on a loaded 2-core machine.
TINY_DATES = {"start": "2016-02-08", "end": "2018-02-07"}


def spec(name: str, models: list[str], *, symbols: int = 2, **changes: Any) -> dict[str, Any]:
    """A small job spec: `symbols` sample symbols, horizons [1, 5], seq_len 10, fast preset."""
    body: dict[str, Any] = {
        "name": name,
        "dataset": {"uri": "sample:sp500", "symbols": symbols, **TINY_DATES},
        "target": {"kind": "direction", "horizons": [1, 5]},
        "features": {"seq_len": 10},
        "models": models,
        "preset": "fast",
        "max_epochs": 2,
        "resources": {"units_per_run": 2},
    }
    body.update(changes)
    return body


class Api:
    """The service over HTTP as one key holder sees it. `url` is read on every call, so a
    restarted server on the same port is picked up."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )

    def close(self) -> None:
        self.http.close()

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        resp = self.http.post("/v1/jobs", json=body)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def job(self, job_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/v1/jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait(
        self,
        job_id: str,
        until: Callable[[dict[str, Any]], bool],
        *,
        timeout_s: float,
        what: str,
        seen: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Poll GET /v1/jobs/{id} until `until(job)`; every answer goes to `seen`. A job that
        ends in a final status `until` does not accept fails at once, with its message."""
        deadline = time.monotonic() + timeout_s
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if seen is not None:
                seen.append(job)
            if until(job):
                return job
            if job["status"] in FINAL:
                raise AssertionError(f"job {job_id} ended {job['status']} while waiting for "
                                     f"{what}: {job['message']} {job['errors']}")  # fmt: skip
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}; last: {job}")

    def wait_final(self, job_id: str, *, timeout_s: float,
                   seen: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
        deadline = time.monotonic() + timeout_s
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if seen is not None:
                seen.append(job)
            if job["status"] in FINAL:
                return job
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} not final after {timeout_s:.0f}s: {job}")


def units_done(job: dict[str, Any]) -> int:
    progress = job.get("progress") or {}
    return int(progress.get("units_done") or 0)
