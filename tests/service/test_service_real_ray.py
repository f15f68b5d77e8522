"""Against a REAL Ray head (opt-in: QUANTRAY_TEST_REAL_RAY=1, about a minute): the private
head `quantray serve` starts, the Jobs REST client's shapes and token auth, the dispatcher's
submit/sync/cancel, and a clean stop that leaves no process of that head behind."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from service.db import make_engine
from service.dispatcher import Dispatcher
from service.job_files import JobFiles
from service.local_ray import LocalRayHead
from service.ray_client import RayJobsClient, RaySubmissionExists, resolve_ray_token
from service.store import JobStore

pytestmark = pytest.mark.skipif(
    os.environ.get("QUANTRAY_TEST_REAL_RAY") != "1",
    reason="starts a real Ray head: set QUANTRAY_TEST_REAL_RAY=1",
)


async def _until_final(client: RayJobsClient, sid: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = await client.get(sid)
        assert info is not None
        if info.status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return info.status
        await asyncio.sleep(0.5)
    raise AssertionError(f"{sid} did not finish")


def _nothing(_job_id: str) -> None:
    """No files to write or remove for store-level tests."""


def test_real_ray_head(tmp_path: Path) -> None:
    head = LocalRayHead.start(dashboard_port=0)
    try:
        asyncio.run(_exercise(head, tmp_path))
    finally:
        pids = head.pids()
        head.stop()
    assert pids and not any(Path(f"/proc/{p}").exists() and _alive(p) for p in pids)
    assert not head.temp_dir.exists()


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def _exercise(head: LocalRayHead, tmp_path: Path) -> None:
    token = resolve_ray_token(None, os.environ, Path.home())
    client = RayJobsClient(head.dashboard_url, token=token, timeout_s=30)
    try:
        assert (await client.version())["ray_version"].startswith("2.")
        sid = f"qr-real-{os.getpid()}"
        entry = f"{sys.executable} -c \"print('hello from ray')\""
        assert await client.submit(entrypoint=entry, submission_id=sid, metadata={"k": "v"}) == sid
        with pytest.raises(RaySubmissionExists):
            await client.submit(entrypoint=entry, submission_id=sid)
        assert await _until_final(client, sid) == "SUCCEEDED"
        assert "hello from ray" in (await client.logs(sid) or "")
        assert (await client.get(sid)).metadata == {"k": "v"}
        assert await client.get("qr-unknown") is None and await client.stop("qr-unknown") is False

        # The dispatcher on the same head: submit, see it run, cancel, see it cancelled.
        store = JobStore(make_engine(f"sqlite:///{tmp_path / 'q.db'}"))
        job, _ = store.create(
            owner="a",
            name="a",
            spec={},
            idempotency_key=None,
            write_files=_nothing,
            remove_files=_nothing,
        )
        storage = f"file://{tmp_path / 'storage'}"
        disp = Dispatcher(
            store,
            client,
            JobFiles(storage),
            max_running_jobs=1,
            storage_uri=storage,
            entrypoint_python=sys.executable,
        )
        await disp.tick()
        assert store.get(job.id).status == "running", disp.last_error
        store.request_cancel(store.get(job.id))
        deadline = time.monotonic() + 120
        while store.get(job.id).status == "running" and time.monotonic() < deadline:
            await disp.tick()
            await asyncio.sleep(0.5)
        final = store.get(job.id)
        # Cancelled, unless the entrypoint failed before the stop arrived (no ray_jobs.run).
        assert final.status in ("cancelled", "failed"), final
    finally:
        await client.aclose()
