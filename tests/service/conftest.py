"""Shared fixtures and helpers of the service tests: databases (a SQLite file and a throwaway
PostgreSQL schema), settings, a fake Ray Jobs server and the API, both over real HTTP on
loopback. Test modules reach the helpers through the `qr` fixture."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, create_engine, func, select, text

from ray_jobs.progress import ProgressTracker
from service.app import create_app
from service.db import jobs
from service.keys import create_key
from service.settings import Settings
from tests.service.support import FakeRay, LiveServer

PG_URL = os.environ.get("QUANTRAY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
HOSTILE_LIMIT = 256 * 1024  # max body bytes of the `hostile` API
SPEC: dict[str, Any] = {
    "name": "t1",
    "dataset": {"uri": "sample:sp500", "symbols": 2},
    "models": ["ols", "lstm"],
}


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database per test: a SQLite file, or a new PostgreSQL schema dropped after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'quantray.db'}"
        return
    schema = f"qr_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def progress_doc(
    total: int, done: int, failures: tuple[tuple[str, str], ...] = (), running: int = 0,
    attempt: int = 0, phase: str = "training", message: str | None = None,
) -> dict[str, Any]:
    """progress.json exactly as the job driver writes it (`ray_jobs.progress`), after 10 s.
    A "stopped" phase gets the driver's message once it has written the partial results,
    unless `message` says otherwise."""
    now = [0.0]
    tracker = ProgressTracker(total, job_id="job", attempt=attempt, clock=lambda: now[0],
                              wall=lambda: 0.0)
    if message is None and phase == "stopped":
        message = "stopped by SIGTERM: the finished units' results are written"
    tracker.set_phase(phase, message or "")
    ids = [f"u{i}" for i in range(done)] + [u for u, _ in failures]
    ids += [f"r{i}" for i in range(running)]
    for unit in ids:
        tracker.unit_started(unit)
    now[0] = 10.0
    for unit in ids[:done]:
        tracker.unit_done(unit)
    for unit, error in failures:
        tracker.unit_failed(unit, error)
    return tracker.to_dict()


def make_settings(home: Path, **overrides: Any) -> Settings:
    base = Settings(
        home=home,
        storage_uri=f"file://{home / 'storage'}",
        database_url=f"sqlite:///{home / 'quantray.db'}",
        max_running_jobs=0,
        poll_interval_s=0.05,
    )
    return replace(base, **overrides)


def job_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(jobs)).scalar_one())


@dataclass
class Api:
    url: str
    engine: Engine
    settings: Settings
    keys: dict[str, str]

    def client(self, who: str | None = "alice", **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def job_count(self) -> int:
        return job_count(self.engine)

    @property
    def storage(self) -> Path:
        return self.settings.home / "storage"

    def stored_files(self) -> list[Path]:
        return sorted(p for p in self.storage.rglob("*") if p.is_file())


def start_api(settings: Settings, keys: dict[str, bool]) -> tuple[LiveServer, Api]:
    app = create_app(settings)
    engine = app.state.qr.engine
    created = {name: create_key(engine, name, admin=admin) for name, admin in keys.items()}
    server = LiveServer(app).__enter__()
    return server, Api(server.url, engine, settings, created)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The API with auth on, queue-only (no Ray), keys alice, bob and admin (an admin)."""
    settings = make_settings(tmp_path, max_body_bytes=64 * 1024)
    server, handle = start_api(settings, {"alice": False, "bob": False, "admin": True})
    try:
        yield handle
    finally:
        server.__exit__()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, str, Path]]:
    """One API per test module (hostile requests never change state), with a data root
    holding a 2-symbol parquet file and a symlink out of it, plus one job of alice's.
    Yields (Api, that job's id, the data root)."""
    home = tmp_path_factory.mktemp("hostile")
    root = home / "data"
    root.mkdir()
    # BBB: 1,500 business days from 2012 (enough for a default job); AAA: its first 60 only.
    days = pd.bdate_range("2012-01-02", periods=1500)
    n = 60 + len(days)
    pq.write_table(pa.table({
        "symbol": ["AAA"] * 60 + ["BBB"] * len(days), "date": [*days[:60], *days],
        **{c: [1.0] * n for c in ("open", "high", "low", "close", "volume")},
    }), root / "bars.parquet")  # fmt: skip
    (root / "bad_dates.csv").write_text(
        "symbol,date,open,high,low,close,volume\nAAA,someday,1,1,1,1.0,0\n")
    # a Yahoo-style export: `Adj Close` where `close` goes
    (root / "adj_close.csv").write_text(
        "symbol,date,open,high,low,Adj Close,volume\nAAA,2012-01-02,1,1,1,1.0,0\n")
    (root / "empty.csv").write_text("symbol,date,open,high,low,close,volume\n")
    # AAA's second day without its symbol: the loader refuses the file for any symbols
    (root / "no_symbol.csv").write_text("symbol,date,open,high,low,close,volume\n"
                                        "AAA,2012-01-02,1,1,1,1.0,0\n,2012-01-03,1,1,1,1.0,0\n")
    pq.write_table(pa.table({"symbol": ["AAA"], "ts": [days[0]], "ask_price_1": [1.01],
                             "ask_size_1": [5.0], "bid_price_1": [1.0], "bid_size_1": [5.0]}),
                   root / "lob.parquet")  # order-book snapshots  # fmt: skip
    stamps = pd.to_datetime(["2024-03-04 09:30:00", "2024-03-04 09:30:01"])
    pq.write_table(pa.table({"symbol": ["AAA"] * 2, "ts": stamps, "ask_price_1": [1.01] * 2,
                             "ask_size_1": [5.0] * 2, "bid_price_1": [1.0] * 2,
                             "bid_size_1": [5.0] * 2}), root / "lob_day.parquet")
    (root / "escape").symlink_to("/etc")
    # A readable dataset just outside the root: what an encoded '..' would reach.
    pq.write_table(pa.table({"symbol": ["AAA"]}), home / "outside.parquet")
    settings = make_settings(home, max_body_bytes=HOSTILE_LIMIT, data_roots=(f"file://{root}",))
    server, api = start_api(settings, {"alice": False, "bob": False})
    with api.client() as c:
        job_id = c.post("/v1/jobs", json=SPEC).json()["id"]
    try:
        yield api, job_id, root
    finally:
        server.__exit__()


@pytest.fixture
def fake_ray() -> Iterator[tuple[FakeRay, str]]:
    fake = FakeRay()
    with LiveServer(fake.app()) as server:
        yield fake, server.url


class Helpers:
    """What the test modules need besides fixtures."""

    SPEC = SPEC
    HOSTILE_LIMIT = HOSTILE_LIMIT
    Api = Api
    FakeRay = FakeRay
    LiveServer = LiveServer
    make_settings = staticmethod(make_settings)
    progress_doc = staticmethod(progress_doc)
    job_count = staticmethod(job_count)
    start_api = staticmethod(start_api)


@pytest.fixture(scope="session")
def qr() -> type[Helpers]:
    return Helpers
