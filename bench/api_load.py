"""API load benchmark: 50 clients poll job status while 200 jobs are submitted.

The server runs in its own process (`quantray serve --no-ray`, SQLite, auth on,
QUANTRAY_MAX_RUNNING_JOBS=0 so every job stays queued). Reports p50/p99 latency of POST
/v1/jobs and GET /v1/jobs/{id} as the clients saw them, and checks that no submission was
lost or duplicated: the ids the POSTs returned == the ids the API lists == the rows in the
database. POSTs carry an Idempotency-Key and are retried once on a transport error, as a
careful client would.

    .venv/bin/python bench/api_load.py                    # 200 jobs, 50 pollers
    .venv/bin/python bench/api_load.py --smoke-test       # 20 jobs, 5 pollers
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from service.local_ray import free_port

SPEC = {
    "name": "load",
    "dataset": {"uri": "sample:sp500", "symbols": 5},
    "models": ["ols", "ridge", "lstm"],
    "preset": "fast",
}
TARGET_P99_S = {"GET": 0.100, "POST": 0.200}


def _start_server(home: Path, port: int) -> tuple[subprocess.Popen, str]:
    env = dict(
        os.environ, QUANTRAY_HOME=str(home), QUANTRAY_MAX_RUNNING_JOBS="0", QUANTRAY_AUTH="on"
    )
    env.pop("QUANTRAY_DATABASE_URL", None)
    env.pop("QUANTRAY_STORAGE_URI", None)
    created = subprocess.run(
        [sys.executable, "-m", "service.cli", "keys", "create", "--name", "bench"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--no-ray",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server, key
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the API server did not come up")


async def _submitter(
    client: httpx.AsyncClient,
    todo: asyncio.Queue,
    ids: list[str],
    lat: list[float],
    retries: list[int],
) -> None:
    while True:
        try:
            n = todo.get_nowait()
        except asyncio.QueueEmpty:
            return
        body = {**SPEC, "name": f"load-{n}"}
        headers = {"Idempotency-Key": f"bench-{n}"}
        for attempt in range(2):
            start = time.perf_counter()
            try:
                resp = await client.post("/v1/jobs", json=body, headers=headers)
            except httpx.TransportError:
                retries.append(n)
                if attempt:
                    raise
                continue
            lat.append(time.perf_counter() - start)
            if resp.status_code != 201:
                raise RuntimeError(f"POST returned {resp.status_code}: {resp.text}")
            ids.append(resp.json()["id"])
            break


async def _poller(
    client: httpx.AsyncClient,
    ids: list[str],
    lat: list[float],
    done: asyncio.Event,
    interval: float,
) -> None:
    rng = random.Random()
    await asyncio.sleep(rng.random() * interval)  # spread the clients out
    while not done.is_set():
        if ids:
            start = time.perf_counter()
            resp = await client.get(f"/v1/jobs/{rng.choice(ids)}")
            lat.append(time.perf_counter() - start)
            if resp.status_code != 200:
                raise RuntimeError(f"GET returned {resp.status_code}: {resp.text}")
        await asyncio.sleep(interval)


async def _load(url: str, key: str, args: argparse.Namespace) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=args.clients + args.submitters)
    post_lat: list[float] = []
    get_lat: list[float] = []
    ids: list[str] = []
    retries: list[int] = []
    todo: asyncio.Queue = asyncio.Queue()
    for n in range(args.jobs):
        todo.put_nowait(n)
    done = asyncio.Event()
    clients = [
        httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits)
        for _ in range(args.clients + 1)
    ]
    try:
        pollers = [
            asyncio.create_task(_poller(c, ids, get_lat, done, args.poll_interval))
            for c in clients[1:]
        ]
        start = time.perf_counter()
        await asyncio.gather(
            *(_submitter(clients[0], todo, ids, post_lat, retries) for _ in range(args.submitters))
        )
        submit_s = time.perf_counter() - start
        await asyncio.sleep(args.tail_s)  # keep polling a little after the last POST
        done.set()
        await asyncio.gather(*pollers)
        listed: list[str] = []
        next_url: str | None = "/v1/jobs?page_size=100"
        while next_url:
            page = (await clients[0].get(next_url)).json()
            listed += [j["id"] for j in page["items"]]
            next_url = page["next"]
        metrics = (await clients[0].get("/metrics")).text
    finally:
        for c in clients:
            await c.aclose()
    return {
        "server_side": _server_quantiles(metrics),
        "post": post_lat,
        "get": get_lat,
        "ids": ids,
        "listed": listed,
        "retries": retries,
        "submit_s": submit_s,
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (Linux /proc): a load-independent cost."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_quantiles(metrics: str) -> dict[str, dict[str, float]]:
    """p50/p99 upper bounds (ms) from the server's own latency histogram (/metrics): what
    the server spent, without the load generator's queueing on this shared machine."""
    series = {
        "GET": ('method="GET"', 'route="/v1/jobs/{job_id}"', 'status="200"'),
        "POST": ('method="POST"', 'route="/v1/jobs"', 'status="201"'),
    }
    out: dict[str, dict[str, float]] = {}
    for name, labels in series.items():
        buckets = []
        for line in metrics.splitlines():
            if line.startswith("quantray_http_request_duration_seconds_bucket{") and all(
                label in line for label in labels
            ):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
        buckets.sort()
        total = buckets[-1][1] if buckets else 0.0
        out[name] = {
            f"p{q}_ms_at_most": next(
                (1000 * le for le, n in buckets if n >= total * q / 100), float("nan")
            )
            for q in (50, 99)
        }
    return out


def _pct(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else (values[0] if values else float("nan"))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=50, help="concurrent status pollers")
    parser.add_argument("--submitters", type=int, default=4, help="concurrent POSTers")
    parser.add_argument("--poll-interval", type=float, default=0.25, help="seconds per poller")
    parser.add_argument("--tail-s", type=float, default=2.0)
    parser.add_argument("--smoke-test", action="store_true", help="20 jobs, 5 pollers")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the server's home directory")
    args = parser.parse_args(argv)
    if args.smoke_test:
        args.jobs, args.clients, args.tail_s = 20, 5, 0.5
    home = Path(tempfile.mkdtemp(prefix="qr-bench-"))
    port = free_port()
    server, key = _start_server(home, port)
    try:
        cpu_before = _cpu_seconds(server.pid)
        out = asyncio.run(_load(f"http://127.0.0.1:{port}", key, args))
        server_cpu_s = _cpu_seconds(server.pid) - cpu_before
    finally:
        server.terminate()
        server.wait(timeout=30)
    with sqlite3.connect(home / "quantray.db") as db:
        rows = db.execute("SELECT id FROM quantray_jobs").fetchall()
    if not args.keep:
        shutil.rmtree(home)
    row_ids = sorted(r[0] for r in rows)
    figures = {
        "load_average_1m": round(os.getloadavg()[0], 1),
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "clients": args.clients,
        "submitters": args.submitters,
        "poll_interval_s": args.poll_interval,
        "submit_wall_s": round(out["submit_s"], 2),
        "post_count": len(out["post"]),
        "get_count": len(out["get"]),
        "post_p50_ms": round(1000 * _pct(out["post"], 50), 1),
        "post_p99_ms": round(1000 * _pct(out["post"], 99), 1),
        "get_p50_ms": round(1000 * _pct(out["get"], 50), 1),
        "get_p99_ms": round(1000 * _pct(out["get"], 99), 1),
        "get_rps": round(len(out["get"]) / (out["submit_s"] + args.tail_s), 1),
        "server_side": out["server_side"],
        "server_cpu_ms_per_request": round(
            1000
            * server_cpu_s
            / (len(out["post"]) + len(out["get"]) + len(out["listed"]) // 100 + 2),
            2,
        ),
        "transport_retries": len(out["retries"]),
        "db_rows": len(row_ids),
        "unique_post_ids": len(set(out["ids"])),
        "lost_or_duplicated": not (
            sorted(out["ids"]) == sorted(out["listed"]) == row_ids and len(row_ids) == args.jobs
        ),
    }
    ok = (
        not figures["lost_or_duplicated"]
        and figures["get_p99_ms"] < 1000 * TARGET_P99_S["GET"]
        and figures["post_p99_ms"] < 1000 * TARGET_P99_S["POST"]
    )
    figures["meets_targets"] = ok
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
