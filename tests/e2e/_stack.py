"""The processes of the end-to-end test, each started by the test and stopped by pid:
a moto S3 server, one external Ray head (`ray start --head`, dashboard on 127.0.0.1), and
the API as a real `quantray serve` process talking to both. Nothing here imports ray.

Every process gets the same AWS test credentials: the Ray head's workers inherit them from
the raylet, and Ray Train's S3 filesystem resolves credentials in each worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from service.local_ray import LocalRayHead, free_port
from tests._support import log_tail, wait_for
from tests.e2e._client import Api

BIN = Path(sys.executable).parent  # the venv's bin: ray, quantray, python
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups
}


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment + S3 credentials + the venv first on PATH (so a Ray job's
    `python -m ray_jobs.run` is this interpreter), without any RAY_ADDRESS of the caller."""
    env = {k: v for k, v in os.environ.items()
           if k != "RAY_ADDRESS" and not k.startswith("QUANTRAY_")}  # fmt: skip
    env.update(S3_ENV)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


# ---- S3 --------------------------------------------------------------------------------------
@dataclass
class MotoS3:
    """A moto S3 server on 127.0.0.1 with one bucket; `uri` is the service's storage URI."""

    server: Any
    endpoint: str
    bucket: str
    prefix: str
    client: Any

    @classmethod
    def start(cls, bucket: str = "quantray-e2e", prefix: str = "store") -> MotoS3:
        import boto3
        from moto.server import ThreadedMotoServer

        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip
        client.create_bucket(Bucket=bucket)
        return cls(server, endpoint, bucket, prefix, client)

    @property
    def uri(self) -> str:
        return (f"s3://{self.bucket}/{self.prefix}?endpoint_override={self.endpoint}"
                "&scheme=http&region=us-east-1")  # fmt: skip

    def keys(self, under: str) -> list[str]:
        """Every object key below `{prefix}/{under}/`, relative to that folder, sorted."""
        base = f"{self.prefix}/{under.strip('/')}/"
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base
        ):
            found += [obj["Key"][len(base) :] for obj in page.get("Contents", [])]
        return sorted(found)

    def read(self, key: str) -> bytes:
        obj = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")
        return bytes(obj["Body"].read())

    def stop(self) -> None:
        self.server.stop()


# ---- Ray -------------------------------------------------------------------------------------
def start_ray_head(env: Mapping[str, str], *, num_cpus: int = 2,
                   timeout_s: float = 180.0) -> LocalRayHead:  # fmt: skip
    """`ray start --head` through the service's own `LocalRayHead.start`: free ports, a
    private temp dir, the dashboard (the Jobs REST API the service uses) on 127.0.0.1 only,
    and this test's environment (S3 credentials) for its workers. Ray itself swaps a
    loopback --node-ip-address for the host's address for GCS and raylet. `stop()` signals
    only this head's processes (never `ray stop`)."""
    return LocalRayHead.start(dashboard_port=0, timeout_s=timeout_s, num_cpus=num_cpus,
                              num_gpus=0, object_store_bytes=512 * 1024**2, env=env)


@dataclass(frozen=True)
class RayRest:
    """The head's Jobs REST API, called directly (behind the service's back). The token is
    the one the service resolves too: Ray 2.60 turns token auth on when
    `~/.ray/auth_token` exists."""

    url: str
    token: str | None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def status(self, submission_id: str) -> str | None:
        """The submission's Ray status, or None when Ray does not know it."""
        resp = httpx.get(f"{self.url}/api/jobs/{submission_id}", headers=self._headers(),
                         timeout=30)  # fmt: skip
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return str(resp.json()["status"])

    def stop(self, submission_id: str) -> bool:
        resp = httpx.post(f"{self.url}/api/jobs/{submission_id}/stop", headers=self._headers(),
                          timeout=30)  # fmt: skip
        resp.raise_for_status()
        return bool(resp.json().get("stopped"))

    def _state_rows(self, kind: str) -> list[dict[str, Any]]:
        """Every row of one state API listing (placement_groups, actors, jobs)."""
        resp = httpx.get(f"{self.url}/api/v0/{kind}", headers=self._headers(),
                         params={"limit": 1000, "detail": "true"}, timeout=60)  # fmt: skip
        resp.raise_for_status()
        return resp.json()["data"]["result"]["result"]

    def live_placement_groups(self) -> list[dict[str, Any]]:
        """Placement groups not yet removed (the state API behind the dashboard)."""
        return [row for row in self._state_rows("placement_groups") if row["state"] != "REMOVED"]

    def snapshot(self) -> str:
        """What holds the head's resources, for a failed test's report: live placement
        groups, live actors and the jobs, from the state API. Best effort."""
        lines = []
        for what, path in (("placement groups", "placement_groups"), ("actors", "actors"),
                           ("jobs", "jobs")):  # fmt: skip
            try:
                rows = self._state_rows(path)
            except Exception as exc:  # noqa: BLE001 - a diagnostic, never the failure
                lines.append(f"{what}: could not list ({exc})")
                continue
            # jobs have a status, not a state: all of them are listed
            live = rows if path == "jobs" else [r for r in rows
                                                 if r.get("state") not in ("REMOVED", "DEAD")]
            lines.append(f"{what}: {len(live)} listed of {len(rows)}")
            keep = ("placement_group_id", "actor_id", "class_name", "creator_job_id", "job_id",
                    "state", "status", "bundles", "required_resources", "pid", "entrypoint",
                    "submission_id", "is_detached")  # fmt: skip
            for row in live:
                lines.append("  " + json.dumps({k: row[k] for k in keep if k in row},
                                               default=str))  # fmt: skip
                if path == "jobs" and row.get("status") == "RUNNING" and row.get("submission_id"):
                    lines += [f"    | {line}" for line in self._log_tail(row["submission_id"])]
        return "\n".join(lines)

    def _log_tail(self, submission_id: str, n: int = 25) -> list[str]:
        try:
            resp = httpx.get(f"{self.url}/api/jobs/{submission_id}/logs",
                             headers=self._headers(), timeout=30)  # fmt: skip
            resp.raise_for_status()
            return str(resp.json().get("logs", "")).splitlines()[-n:]
        except Exception as exc:  # noqa: BLE001 - a diagnostic
            return [f"(no log: {exc})"]


# ---- the API ---------------------------------------------------------------------------------
@dataclass
class ServeProcess:
    """`quantray serve` as a subprocess on a fixed port; restartable on the same DB/port."""

    env: dict[str, str]
    port: int
    log_dir: Path
    proc: subprocess.Popen | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> None:
        assert self.proc is None, "already running"
        self.starts += 1
        log = self.log_dir / f"serve-{self.starts}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "quantray"), "serve", "--port", str(self.port), "--log-level", "info"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_for(self._healthy, timeout_s=timeout_s, what=f"quantray serve on {self.url}",
                     alive=self._exited)  # fmt: skip
        except AssertionError:
            self.stop(signal.SIGKILL)  # never leave a half-started server behind
            raise

    def _exited(self) -> str | None:
        if self.proc is not None and self.proc.poll() is not None:
            return f"serve exited with {self.proc.returncode}:\n{log_tail(self.logs[-1])}"
        return None

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int | None:
        """Signal the server and reap it (SIGKILL if it outlives `timeout_s`)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        return proc.returncode

    def log_text(self) -> str:
        """The tail of each run's log, without the access-log lines of successful polls."""
        parts = []
        for path in self.logs:
            lines = [line for line in log_tail(path, 400).splitlines()
                     if not line.rstrip().endswith(("200 OK", "201 Created"))]  # fmt: skip
            parts.append(f"== {path.name}\n" + "\n".join(lines[-60:]))
        return "\n".join(parts)


def create_key(env: Mapping[str, str], name: str, *, admin: bool = False) -> str:
    """`quantray keys create --name NAME [--admin]` against the server's DB; the key."""
    cmd = [str(BIN / "quantray"), "keys", "create", "--name", name]
    if admin:
        cmd.append("--admin")
    result = subprocess.run(cmd, env=dict(env), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"keys create {name} failed: {result.stderr}"
    key = result.stdout.strip()
    assert key and "\n" not in key, f"keys create printed {result.stdout!r}"
    return key


@dataclass
class Stack:
    """What a test gets: the bucket, the Ray head (and its REST API), the API server, and
    clients for two users and an admin."""

    s3: MotoS3
    head: LocalRayHead
    ray: RayRest
    serve: ServeProcess
    alice: Api
    bob: Api
    admin: Api
