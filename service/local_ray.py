"""A private single-node Ray head for `quantray serve` when no QUANTRAY_RAY_ADDRESS is set.

Started with the `ray` CLI in a subprocess (the service never imports ray), with its own
`--temp-dir` and free ports, so it neither collides with nor stops any other Ray on the
machine: `stop()` signals only the processes whose command line names that temp dir or
its GCS port, plus their descendants (`ray stop` would kill every Ray process of the user).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
WORKER_PORTS = (10002, 19999)  # Ray's default worker port range: other ports must avoid it


def free_port() -> int:
    """A free loopback port, never 6379 (Redis here) and outside Ray's worker port range."""
    return free_ports(1)[0]


def _port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports, none 6379 or in Ray's worker port range. All
    sockets stay bound until every port is picked: one at a time, the OS may hand out the
    same port twice, and `ray start` refuses a port given to two components."""
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port != 6379 and not WORKER_PORTS[0] <= port <= WORKER_PORTS[1]:
                ports.append(port)
    finally:
        for sock in socks:
            sock.close()
    return ports


def process_table() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) of every live process we may read in /proc (a
    zombie is gone already, only not reaped)."""
    table: dict[int, tuple[int, bytes]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            table[int(entry.name)] = (int(fields[1]), cmdline)
    return table


@dataclass
class LocalRayHead:
    temp_dir: Path
    gcs_port: int
    dashboard_port: int

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @classmethod
    def start(
        cls, *, dashboard_port: int = 8265, timeout_s: float = 120.0,
        num_cpus: int | None = None, num_gpus: int | None = None,
        object_store_bytes: int | None = None, env: Mapping[str, str] | None = None,
    ) -> LocalRayHead:
        """Start the head and wait until its Jobs API answers. `dashboard_port=0`: any free.
        `num_cpus`/`num_gpus`/`object_store_bytes`: Ray's own detection when None. `env`:
        the head's environment (its workers inherit it; default: this process's)."""
        if dashboard_port == 0:
            dashboard_port = free_port()
        elif _port_busy(dashboard_port):
            raise RuntimeError(
                f"port {dashboard_port} is taken (another Ray dashboard?): point "
                f"QUANTRAY_RAY_ADDRESS at it (http://127.0.0.1:{dashboard_port}) or pass "
                "--ray-dashboard-port 0 to start a private head on a free port"
            )
        bin_dir = Path(sys.executable).parent
        ray_exe = bin_dir / "ray"
        if not ray_exe.exists():
            raise RuntimeError(f"{ray_exe} not found: install quantray's ray dependency")
        # A short path: Ray's unix socket paths must stay under 108 bytes.
        temp_dir = Path(tempfile.mkdtemp(prefix="qr-ray-", dir="/tmp"))
        flags = ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                 "--ray-client-server-port", "--runtime-env-agent-port", "--metrics-export-port",
                 "--node-manager-port", "--object-manager-port")  # fmt: skip
        picked = [p for p in free_ports(len(flags) + 2) if p != dashboard_port]
        head = cls(temp_dir=temp_dir, gcs_port=picked[0], dashboard_port=dashboard_port)
        ports = dict(zip(flags, picked[1:], strict=False))
        cmd = [
            str(ray_exe), "start", "--head", "--node-ip-address=127.0.0.1",
            f"--port={head.gcs_port}", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}", "--include-dashboard=true",
            f"--temp-dir={temp_dir}", "--disable-usage-stats",
            *(f"{flag}={port}" for flag, port in ports.items()),
            *([f"--num-cpus={num_cpus}"] if num_cpus is not None else []),
            *([f"--num-gpus={num_gpus}"] if num_gpus is not None else []),
            *([f"--object-store-memory={object_store_bytes}"] if object_store_bytes else []),
        ]  # fmt: skip
        # Job entrypoints run `python -m ray_jobs.run`: make `python` this interpreter.
        env = dict(os.environ if env is None else env)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        log.info("starting a local Ray head: %s", " ".join(cmd))
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        if result.returncode != 0:
            head.stop()
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"`ray start --head` failed ({result.returncode}):\n{tail}")
        try:
            head.wait_ready(timeout_s)
        except RuntimeError:
            head.stop()
            raise
        return head

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # 401 with token auth still means the dashboard is up
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"Ray dashboard at {self.dashboard_url} did not come up")

    def pids(self) -> list[int]:
        """This head's processes: command line names our temp dir or an address with our GCS
        port (any host: Ray's client server is given the node's own IP), + children."""
        temp = str(self.temp_dir).encode()
        gcs = re.compile(rb"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}:%d(?!\d)" % self.gcs_port)
        table = process_table()
        roots = {pid for pid, (_, cmdline) in table.items()
                 if pid != os.getpid() and (temp in cmdline or gcs.search(cmdline))}  # fmt: skip
        found = set(roots)
        changed = True
        while changed:
            children = {p for p, (parent, _) in table.items() if parent in found} - found
            changed = bool(children)
            found |= children
        return sorted(found)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM this head's processes, SIGKILL what is left after `grace_s`, remove temp."""
        pids = self.pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace_s
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
                time.sleep(0.2)
            if not pids:
                break
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
