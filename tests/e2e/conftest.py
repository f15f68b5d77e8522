"""The e2e stack, built once per session and torn down by pid: a moto S3 server, one
external Ray head on loopback, the API as a `quantray serve` process (auth on, SQLite job
table), and three API keys (two users and an admin) made with `quantray keys create`."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.local_ray import LocalRayHead
from service.ray_client import resolve_ray_token
from tests.e2e._client import Api
from tests.e2e._stack import (
    MotoS3,
    RayRest,
    ServeProcess,
    Stack,
    base_env,
    create_key,
    free_port,
    start_ray_head,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: end-to-end tests with a real Ray head (deselect with -m 'not e2e')"
    )


@pytest.fixture(scope="session")
def s3() -> Iterator[MotoS3]:
    pytest.importorskip("moto", reason="moto[server] is a dev dependency: pip install -e .[dev]")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request
    store = MotoS3.start()
    yield store
    store.stop()


@pytest.fixture(scope="session")
def ray_head() -> Iterator[LocalRayHead]:
    head = start_ray_head(base_env())
    yield head
    head.stop()


@pytest.fixture(scope="session")
def stack(
    s3: MotoS3, ray_head: LocalRayHead, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    # Under pytest's basetemp (kept for the last few runs): the DB and the serve logs.
    home = tmp_path_factory.mktemp("e2e-home")
    env = base_env(
        QUANTRAY_HOME=str(home),
        QUANTRAY_RAY_ADDRESS=ray_head.dashboard_url,
        QUANTRAY_STORAGE_URI=s3.uri,
        QUANTRAY_DATABASE_URL=f"sqlite:///{home / 'q.db'}",
        QUANTRAY_AUTH="on",
        QUANTRAY_MAX_RUNNING_JOBS="2",
        QUANTRAY_POLL_INTERVAL_S="0.5",
        QUANTRAY_RAY_TIMEOUT_S="30",
    )
    keys = {name: create_key(env, name) for name in ("alice", "bob")}
    keys["root"] = create_key(env, "root", admin=True)
    serve = ServeProcess(env=env, port=free_port(), log_dir=home)
    serve.start()
    clients = {name: Api(serve.url, key) for name, key in keys.items()}
    try:
        ray = RayRest(ray_head.dashboard_url, resolve_ray_token(None, os.environ, Path.home()))
        yield Stack(s3, ray_head, ray, serve, clients["alice"], clients["bob"], clients["root"])
    finally:
        for client in clients.values():
            client.close()
        serve.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """On a failure, attach the API server's log tail and what holds the Ray head's
    resources to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "stack" in getattr(item, "funcargs", {}):
        stack = item.funcargs["stack"]
        report.sections.append(("quantray serve log", stack.serve.log_text()))
        report.sections.append(("ray head at the failure", stack.ray.snapshot()))
