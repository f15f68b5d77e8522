"""Fixtures of the job-executor acceptance tests: one private local Ray (2 CPUs) for the
package, and an S3 endpoint (moto server on 127.0.0.1) with a bucket.

The Ray is started with `address="local"` and its own `--temp-dir`, so it never attaches
to another Ray on this machine (`ray.init()` alone would join the latest `ray start`
cluster), and its processes are this test process's descendants: the tests find workers
to kill among those only. Entrypoint subprocesses join it through its GCS address.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from service.local_ray import free_port
from tests.ray_jobs._jobs import descendants, kill_and_reap

# Credentials for the moto endpoint. They must be in the environment before Ray starts:
# its workers inherit the raylet's environment, and Ray Train's S3 filesystem resolves
# credentials in each worker.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups on a laptop
}


_CLUSTER: dict[str, str] = {}  # the package cluster's GCS address, while it is up


@pytest.fixture(autouse=True)
def _package_ray_stays_up(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test that shut down (or replaced) the package's private Ray: the next test
    that needs it would otherwise run on a default Ray that `ray.*` calls start on their
    own, and an entrypoint given the package cluster's address waits for its GCS for good
    (a CI run timed out so, 300 s, after a stop test's `ray.shutdown()`)."""
    yield
    address = _CLUSTER.get("gcs")
    if address is None:
        return
    import ray

    now = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    if now != address:
        pytest.fail(f"{request.node.nodeid} left the package's private Ray ({address}) "
                    f"{'shut down' if now is None else f'replaced by {now}'}: monkeypatch "
                    "ray.shutdown in tests that stop a job in-process", pytrace=False)


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[str]:
    """A private local Ray with 2 CPUs and no GPU; yields its GCS address (host:port).
    Package scope: it stops after the last test of `tests/ray_jobs`, before other
    packages' tests (which start Ray heads of their own) run."""
    import ray

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialized in this test process: the acceptance "
                           "tests need their own private cluster; run them in a fresh pytest")
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    # A short path: Ray's unix socket paths must stay under 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix="qrt-", dir="/tmp")
    try:
        ray.init(
            address="local", num_cpus=2, num_gpus=0, include_dashboard=False,
            object_store_memory=512 * 1024**2, _temp_dir=temp_dir,
        )  # fmt: skip
        _CLUSTER["gcs"] = ray.get_runtime_context().gcs_address
        yield _CLUSTER["gcs"]
    finally:
        _CLUSTER.pop("gcs", None)
        ray.shutdown()
        # Whatever Ray left behind (a worker still exiting) is ours: reap it.
        kill_and_reap([p for p, cmd in descendants(os.getpid()).items() if b"ray" in cmd])
        shutil.rmtree(temp_dir, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass(frozen=True)
class S3Store:
    """A bucket on a moto server: `uri` is the storage URI the executor takes; `client` a
    boto3 client to look at what landed in the bucket."""

    uri: str
    bucket: str
    prefix: str
    client: Any

    def keys(self, under: str) -> list[str]:
        """Every object key below `{prefix}/{under}`, relative to that folder."""
        base = f"{self.prefix}/{under.strip('/')}/"
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base
        ):
            keys += [o["Key"][len(base) :] for o in page.get("Contents", [])]
        return sorted(keys)

    def read(self, key: str) -> bytes:
        obj = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")
        return obj["Body"].read()


@pytest.fixture(scope="module")
def s3_store(ray_cluster: str) -> Iterator[S3Store]:
    """Bucket `quantray-it` (prefix `store`) on a moto server on a free loopback port."""
    pytest.importorskip("moto", reason="moto[server] is a dev dependency: pip install -e .[dev]")
    import boto3
    from moto.server import ThreadedMotoServer

    # Thousands of requests per job (Ray Train/Tune sync their files): keep werkzeug's
    # per-request INFO lines out of the captured logs.
    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="quantray-it")
        uri = f"s3://quantray-it/store?endpoint_override={endpoint}&scheme=http&region=us-east-1"
        yield S3Store(uri=uri, bucket="quantray-it", prefix="store", client=client)
    finally:
        server.stop()
        werkzeug.setLevel(level)
