"""Test doubles served over real HTTP on loopback: `LiveServer` runs any ASGI app in a
thread; `FakeRay` speaks the Ray 2.60 Jobs REST API (shapes as in service/ray_client.py)
from a dict the test controls, recording every call."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

TERMINAL = ("STOPPED", "SUCCEEDED", "FAILED")


class LiveServer:
    """Serve an ASGI app over real HTTP on a free loopback port (or `port`: a restarted
    server on its predecessor's), in a background thread."""

    def __init__(self, app: Any, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()


@dataclass
class FakeRay:
    token: str | None = None
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    submissions: list[dict[str, Any]] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    # A head whose GCS died: its dashboard still answers /api/version, not the Jobs API.
    jobs_down: bool = False
    # A head whose dashboard agent is gone: every POST /api/jobs/ fails with this 500 text.
    submit_error: str | None = None

    def set_status(self, sid: str, status: str, message: str | None = None) -> None:
        self.jobs[sid]["status"] = status
        self.jobs[sid]["message"] = message

    def forget_all(self) -> None:
        """What a restarted Ray head knows about earlier submissions: nothing."""
        self.jobs.clear()

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def auth(request: Request, call_next: Any) -> Any:
            header = request.headers.get("authorization")
            self.auth_headers.append(header)
            if self.token is not None:
                if not header:
                    return PlainTextResponse("Unauthorized: Missing authentication token", 401)
                if header != f"Bearer {self.token}":
                    return PlainTextResponse("Forbidden: Invalid authentication token", 403)
            if self.jobs_down and request.url.path.startswith("/api/jobs"):
                return PlainTextResponse("Internal Server Error: GCS unavailable", 500)
            return await call_next(request)

        @app.get("/api/version")
        def version() -> dict:
            return {
                "version": "4",
                "ray_version": "2.60.0",
                "ray_commit": "fake",
                "session_name": "fake",
            }

        @app.post("/api/jobs/")
        async def submit(request: Request) -> Any:
            if self.submit_error is not None:
                return PlainTextResponse(self.submit_error, 500)
            body = await request.json()
            if not isinstance(body.get("entrypoint"), str):
                return PlainTextResponse("TypeError: entrypoint must be a string", 400)
            metadata = body.get("metadata") or {}
            if any(not isinstance(v, str) for v in metadata.values()):
                return PlainTextResponse("TypeError: metadata values must be strings", 400)
            sid = body.get("submission_id") or f"raysubmit_{len(self.jobs)}"
            if sid in self.jobs:
                # What a real 2.60 head answers: the agent's 400, relayed as a 500.
                return PlainTextResponse(
                    "Traceback (most recent call last):\nRuntimeError: Request failed with "
                    "status code 400: Traceback (most recent call last):\nValueError: Job with "
                    f"submission_id {sid} already exists. Please use a different submission_id."
                    "\n.",
                    500,
                )
            self.submissions.append(body)
            self.jobs[sid] = {
                "type": "SUBMISSION",
                "job_id": None,
                "submission_id": sid,
                "status": "PENDING",
                "entrypoint": body["entrypoint"],
                "message": None,
                "error_type": None,
                "start_time": 0,
                "end_time": None,
                "metadata": metadata,
                "runtime_env": body.get("runtime_env") or {},
                "logs": f"log of {sid}\n",
            }
            return {"job_id": sid, "submission_id": sid}

        @app.get("/api/jobs/{sid}")
        def get(sid: str) -> Any:
            if sid not in self.jobs:
                return PlainTextResponse(f"Job {sid} does not exist", 404)
            return {k: v for k, v in self.jobs[sid].items() if k != "logs"}

        @app.post("/api/jobs/{sid}/stop")
        def stop(sid: str) -> Any:
            self.stops.append(sid)
            if sid not in self.jobs:
                return PlainTextResponse(f"Job {sid} does not exist", 404)
            job = self.jobs[sid]
            stopped = job["status"] not in TERMINAL
            if stopped:
                job["status"] = "STOPPED"
            return JSONResponse({"stopped": stopped})

        @app.get("/api/jobs/{sid}/logs")
        def logs(sid: str) -> Any:
            if sid not in self.jobs:
                return PlainTextResponse(f"Job {sid} does not exist", 404)
            return {"logs": self.jobs[sid]["logs"]}

        @app.delete("/api/jobs/{sid}")
        def delete(sid: str) -> Any:
            if sid not in self.jobs:
                return PlainTextResponse(f"Job {sid} does not exist", 404)
            del self.jobs[sid]
            return {"deleted": True}

        return app


class TcpProxy:
    """A TCP relay on a free loopback port to `target` (host, port), in threads: `cut()`
    closes every relayed connection and refuses new ones (a database or network outage as
    the client sees it), `restore()` relays again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.open += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.up = False
        with self.lock:
            socks, self.open = self.open, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()
