"""`quantray serve`: run the HTTP API with uvicorn (and a private local Ray head when
QUANTRAY_RAY_ADDRESS is not set)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType
from typing import Any

DESCRIPTION = """Start the quantray API. Settings come from QUANTRAY_* environment variables
(QUANTRAY_RAY_ADDRESS, QUANTRAY_DATABASE_URL, QUANTRAY_STORAGE_URI, QUANTRAY_MAX_RUNNING_JOBS,
QUANTRAY_DATA_ROOTS, QUANTRAY_AUTH, ...). Without QUANTRAY_RAY_ADDRESS a single-node Ray head
is started for this server (own temp dir and ports) and stopped when it exits."""


def register(subparsers: argparse._SubParsersAction) -> None:
    if "serve" in subparsers.choices:
        return
    p = subparsers.add_parser("serve", help="run the HTTP API", description=DESCRIPTION)
    p.add_argument("--host", help="bind address (default $QUANTRAY_HOST or 127.0.0.1)")
    p.add_argument("--port", type=_port, help="port (default $QUANTRAY_PORT or 8000)")
    p.add_argument(
        "--no-ray",
        action="store_true",
        help="queue only: never start or contact Ray (needs QUANTRAY_MAX_RUNNING_JOBS=0)",
    )
    p.add_argument("--ray-dashboard-port", type=int, default=8265,
                   help="dashboard port of the local Ray head (0: any free port)")  # fmt: skip
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=_serve)


def _port(text: str) -> int:
    """--port's type: 0 to 65535 (0: any free port), named as the option, not the
    variable it overrides."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65_535:
        raise argparse.ArgumentTypeError(f"{port} is out of range: give 1 to 65535 "
                                         "(or 0: any free port)")
    return port


def database_unreachable(command: str, url: str, exc: BaseException) -> str:
    """One line for a database that cannot be opened (not running, no such database,
    refused credentials, an unwritable SQLite file), naming the setting; the URL without
    its password."""
    from sqlalchemy import make_url

    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - the setting was parsed already; never fail here
        shown = "(unparseable)"
    cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    detail = cause[0] if cause else type(exc).__name__
    return (f"quantray {command}: cannot open the job database QUANTRAY_DATABASE_URL={shown} "
            f"({detail}); start the database server, create the database, or fix "
            "QUANTRAY_DATABASE_URL (unset: a SQLite file under QUANTRAY_HOME)")


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _bind_error(host: str, port: int) -> str | None:
    """Why the API could not listen on host:port (bound as uvicorn binds it), or None."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _settle_jobs_of_stopped_head(dispatcher: Any, dashboard_url: str) -> None:
    import asyncio
    import logging

    why = (f"the Ray head `quantray serve` started ({dashboard_url}) was stopped when the "
           "server exited")
    try:
        asyncio.run(dispatcher.head_stopped(why))
    except Exception:  # the next start reconciles these jobs anyway
        logging.getLogger(__name__).exception("could not mark the head's jobs interrupted")


def _serve(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    import uvicorn
    from sqlalchemy.exc import SQLAlchemyError

    from service.app import create_app
    from service.db import make_engine
    from service.local_ray import LocalRayHead
    from service.ray_client import RayAuthError
    from service.settings import Settings, SettingsError

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per Ray poll otherwise
    env = dict(os.environ)
    if args.port is not None:
        env["QUANTRAY_PORT"] = str(args.port)
    try:
        settings = Settings.from_env(env, host_flag=("--host", args.host) if args.host else None)
        if args.no_ray and settings.max_running_jobs > 0:
            raise SettingsError("--no-ray needs QUANTRAY_MAX_RUNNING_JOBS=0 (nothing could run)")
    except SettingsError as exc:
        print(f"quantray serve: {exc}", file=sys.stderr)
        return 2
    taken = _bind_error(settings.host, settings.port)
    if taken:  # before a Ray head starts (a minute) and the dispatcher submits to it
        print(f"quantray serve: cannot listen on {settings.host}:{settings.port} ({taken}): "
              "stop what uses that port, or pick another (--port, QUANTRAY_PORT)",
              file=sys.stderr)  # fmt: skip
        return 1
    try:  # before a Ray head starts, too: the database is where the jobs are
        make_engine(settings.database_url).dispose()
    except (SQLAlchemyError, OSError) as exc:  # OSError: a SQLite folder it cannot make
        print(database_unreachable("serve", settings.database_url, exc), file=sys.stderr)
        return 1
    # uvicorn re-raises a captured SIGTERM after its graceful shutdown; with the default
    # handler that kills the process before `finally` could stop our Ray head.
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    head, app = None, None
    try:
        if not settings.ray_address and not args.no_ray:
            try:
                head = LocalRayHead.start(dashboard_port=args.ray_dashboard_port)
            except RuntimeError as exc:
                print(f"quantray serve: cannot start a local Ray head: {exc}", file=sys.stderr)
                return 1
            print(f"quantray serve: local Ray head at {head.dashboard_url} "
                  f"(temp dir {head.temp_dir})", file=sys.stderr)  # fmt: skip
            settings = dataclasses.replace(settings, ray_address=head.dashboard_url)
        app = create_app(settings)
        from service.spec_checker import warm

        warm()  # the override checker's child imports the model registry while we start
        uvicorn.run(
            app, host=settings.host, port=settings.port, log_level=args.log_level,
            # Access lines are logged at INFO: above it they are never shown, so do not
            # have uvicorn format one per request.
            access_log=args.log_level in ("debug", "info"),
        )  # fmt: skip
    except (SettingsError, RayAuthError) as exc:  # RayAuthError: a token file not there
        print(f"quantray serve: {exc}", file=sys.stderr)
        return 2
    finally:
        if head is not None:
            head.stop()
            if app is not None:  # its jobs went with it: resumable now, not `running`
                _settle_jobs_of_stopped_head(app.state.qr.dispatcher, head.dashboard_url)
        signal.signal(signal.SIGTERM, previous)
    return 0
