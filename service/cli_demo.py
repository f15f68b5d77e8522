"""`quantray demo`: the one-command main job. Starts `quantray serve` (a local single-node
Ray head on loopback, SQLite, local storage; auth off, which the server allows on loopback
only), submits the demo spec over HTTP, follows its progress, prints the summary and where
the plots are, then stops the server and its Ray head. Talks HTTP only."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from service.local_ray import free_port

DEFAULT_SPEC = "examples/demo.yaml"
READY_TIMEOUT_S = 240
DASHBOARD_WAIT_S = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="serve + submit the demo sweep + print its summary",
                              description=__doc__)
    p.add_argument("--spec", default=DEFAULT_SPEC, help=f"job spec (default {DEFAULT_SPEC})")
    p.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    p.add_argument("--home", default=os.environ.get("QUANTRAY_HOME") or ".quantray",
                   help="state dir: DB, storage, logs (default: QUANTRAY_HOME or ./.quantray)")
    p.add_argument("--keep", action="store_true", help="leave the server running at the end")
    p.set_defaults(func=_demo)


# Settings that would put the demo's job elsewhere than its own local head, database and
# storage under --home (an operator's shell still set up for a cluster and S3): the demo
# printed result paths under --home while its files went to S3 and its row to PostgreSQL.
ELSEWHERE = ("QUANTRAY_RAY_ADDRESS", "QUANTRAY_STORAGE_URI", "QUANTRAY_DATABASE_URL",
             "QUANTRAY_MAX_RUNNING_JOBS", "QUANTRAY_ENTRYPOINT_PYTHON")


def server_env(environ: dict[str, str] | os._Environ, home: Path,
               port: int) -> tuple[dict[str, str], list[str]]:
    """The demo server's environment: this one with the demo's home, loopback address and
    auth off, without the ELSEWHERE settings; and the names of those it left out."""
    env = {k: v for k, v in environ.items() if k not in ELSEWHERE}
    env.update({"QUANTRAY_HOME": str(home), "QUANTRAY_HOST": "127.0.0.1",
                "QUANTRAY_PORT": str(port), "QUANTRAY_AUTH": "off"})
    return env, [k for k in ELSEWHERE if k in environ]


def _wait_ready(client, proc: subprocess.Popen, log: Path) -> None:
    from service.api_client import ApiClientError

    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"quantray demo: the server exited ({proc.returncode}); see {log}")
        try:
            if client.request("GET", "/readyz").status_code == 200:
                return
        except (ApiClientError, OSError):
            pass
        time.sleep(1.0)
    raise SystemExit(f"quantray demo: the server was not ready in {READY_TIMEOUT_S}s; see {log}")


def _dashboard_url(client, job_id: str, wait_s: float = DASHBOARD_WAIT_S) -> str | None:
    """The job's Ray dashboard URL, set once the dispatcher has handed it to Ray (a queued
    job has none yet): polled for up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        info = client.job(job_id)
        url = (info.get("ray") or {}).get("dashboard_url")
        if url or info.get("status") != "queued" or time.monotonic() > deadline:
            return url
        time.sleep(0.5)


def _demo(args: argparse.Namespace) -> int:
    from service.api_client import ApiClient, ApiClientError
    from service.cli_format import summary_text
    from service.cli_jobs import _follow  # Ctrl-C ends the demo (and its server) as is

    spec = Path(args.spec)
    if not spec.is_file():
        # the default is relative to the repository, where examples/ is
        where = (f" in {os.getcwd()}: run it from the repository root, or give one with "
                 "--spec FILE" if args.spec == DEFAULT_SPEC else "")
        print(f"quantray demo: no such spec file {args.spec!r}{where}", file=sys.stderr)
        return 2
    home = Path(args.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    api = f"http://127.0.0.1:{port}"
    env, ignored = server_env(os.environ, home, port)
    if ignored:
        print(f"quantray demo: its state stays under {home}: ignoring {', '.join(ignored)} "
              "from the environment (`quantray serve` uses them)", file=sys.stderr)
    log = home / "serve.log"
    print(f"quantray demo: starting the API and a local Ray head (log: {log}) ...",
          file=sys.stderr)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve",
                                 "--ray-dashboard-port", "0"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        with ApiClient(api, None, timeout_s=120) as client:
            _wait_ready(client, proc, log)
            print(f"quantray demo: API at {api} (docs {api}/docs)", file=sys.stderr)
            kind = "application/json" if spec.suffix == ".json" else "application/yaml"
            job = client.submit(spec.read_bytes(), kind, None)
            job_id = job["id"]
            dashboard = _dashboard_url(client, job_id)
            if dashboard:
                print(f"quantray demo: job {job_id}; watch it in the Ray dashboard: "
                      f"{dashboard}", file=sys.stderr)
            code = _follow(client, job_id, 2.0)
            summary = client.request("GET", f"/v1/jobs/{job_id}/summary").json()
            print("\n" + summary_text(summary))
            plots = client.request("GET", f"/v1/jobs/{job_id}/plots").json()
            names = [p["name"] if isinstance(p, dict) else p for p in plots.get("plots", plots)]
            print(f"\nplots ({api}/v1/jobs/{job_id}/plots/NAME, files under "
                  f"{home}/storage/jobs/{job_id}/results/plots/): {', '.join(names)}")
            results = home / "storage" / "jobs" / job_id / "results"
            print(f"leaderboard: {results}/leaderboard.csv (and .parquet), summary: "
                  f"{results}/summary.json")
            if args.keep:
                print(f"through the API: quantray results {job_id} --api {api}"
                      + (f"; Ray dashboard: {dashboard}" if dashboard else ""))
            else:
                print("(the server stops now: `quantray demo --keep` leaves it running, to "
                      "browse the job through the API and the Ray dashboard)")
            return code
    except ApiClientError as exc:
        print(f"quantray demo: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep and proc.poll() is None:
            print(f"quantray demo: server left running (pid {proc.pid}) at {api}; "
                  f"`kill {proc.pid}` stops it and its Ray head", file=sys.stderr)
        elif not args.keep:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()


