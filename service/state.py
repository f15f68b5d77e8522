"""Everything one running API owns, built from `Settings` at startup and closed at shutdown.
Held on `app.state.qr`; nothing lives in module globals."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine

from service.dataset_probe import DatasetProbe
from service.db import make_engine
from service.dispatcher import Dispatcher
from service.job_files import JobFiles
from service.metrics import Metrics
from service.ray_client import RayJobsClient, resolve_ray_token
from service.settings import Settings
from service.status_progress import StatusProgress
from service.store import JobStore
from service.validation import DatasetPolicy

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 5.0
P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    store: JobStore
    files: JobFiles
    policy: DatasetPolicy
    ray: RayJobsClient | None
    dispatcher: Dispatcher
    metrics: Metrics
    # progress.json for status reads, fast while the storage does not answer
    status_progress: StatusProgress | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    # Whether short reads may run on the event loop itself (see `read`): SQLite is a local
    # file read by primary key; a PostgreSQL round trip must not stall every other request.
    inline_db_reads: bool = False
    # Same for small files under the storage root (progress.json): a local file (in the page
    # cache: the job rewrites it every few seconds), not an S3 round trip.
    inline_file_reads: bool = False

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        settings.require_ray()
        engine = make_engine(settings.database_url)
        store = JobStore(engine)
        files = JobFiles(settings.storage_uri)
        ray = None
        if settings.ray_address:
            token = resolve_ray_token(settings.ray_auth_token, os.environ, Path.home())
            ray = RayJobsClient(settings.ray_address, token=token, timeout_s=settings.ray_timeout_s)
        dispatcher = Dispatcher(
            store,
            ray,
            files,
            max_running_jobs=settings.max_running_jobs,
            storage_uri=settings.storage_uri,
            entrypoint_python=settings.entrypoint_python,
            runtime_env=settings.runtime_env,
        )
        return cls(
            settings=settings,
            engine=engine,
            store=store,
            files=files,
            policy=DatasetPolicy(settings.data_roots, DatasetProbe()),
            ray=ray,
            dispatcher=dispatcher,
            metrics=Metrics(store),
            status_progress=StatusProgress(files),
            inline_db_reads=engine.dialect.name == "sqlite",
            inline_file_reads=settings.storage_uri.startswith("file:"),
        )

    async def read(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run the short blocking database read `fn` for a request: inline when the database
        is SQLite, else in the threadpool. A SQLite primary-key read (`db.fetch_one`) takes
        tens of microseconds, mostly Python that holds the GIL anyway, while a threadpool
        hop costs ~0.3 ms of CPU in thread wake-ups and GIL hand-offs: two hops per status
        poll were half the server's CPU. WAL readers never wait on writers, nor (pool sized for
        it, `db.make_engine`) for a connection. Writes, which may wait on SQLite's lock or
        an fsync, stay in the threadpool."""
        if self.inline_db_reads:
            return fn(*args, **kwargs)
        return await run_in_threadpool(fn, *args, **kwargs)

    def dashboard_url(self, submission_id: str | None) -> str | None:
        if self.ray is None or submission_id is None:
            return None
        return self.ray.dashboard_url(submission_id)

    async def start(self) -> None:
        """Reconcile with Ray once (jobs Ray lost become `interrupted`), then dispatch."""
        if not self.settings.auth:
            log.warning(
                "QUANTRAY_AUTH=off: every request is treated as admin; bound to %s only",
                self.settings.host,
            )
        await self.dispatcher.reconcile()
        self.task = asyncio.create_task(
            self.dispatcher.run(self.settings.poll_interval_s, self.stop), name="dispatcher"
        )

    async def close(self) -> None:
        self.stop.set()
        if self.task is not None:
            # A tick may sit in a long submit; cutting it is safe: a claimed job whose POST
            # did not finish is looked up on Ray at the next start (adopted or resubmitted).
            try:
                await asyncio.wait_for(self.task, timeout=SHUTDOWN_GRACE_S)
            except TimeoutError:
                log.warning("dispatcher did not stop within %ss; cancelled", SHUTDOWN_GRACE_S)
        if self.ray is not None:
            await self.ray.aclose()
        if self.status_progress is not None:
            self.status_progress.close()
        self.engine.dispose()
