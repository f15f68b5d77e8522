"""`quantray keys create|list|revoke`: API-key admin tools.

They open the job database directly (QUANTRAY_DATABASE_URL, or the SQLite file under
QUANTRAY_HOME), so run them on the server host, as the operator.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # sqlalchemy is imported inside the handlers, to keep `quantray` light
    from sqlalchemy import Engine

HOST_NOTE = (
    "Admin tool: talks to the database directly (QUANTRAY_DATABASE_URL or the SQLite file "
    "under QUANTRAY_HOME), not to the HTTP API; run it on the server host."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    if "keys" in subparsers.choices:
        return
    keys = subparsers.add_parser("keys", help="create, list or revoke API keys (server host)",
                                 description=HOST_NOTE)  # fmt: skip
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = sub.add_parser("create", help="create a key and print it once", description=HOST_NOTE)
    p.add_argument("--name", required=True, help="owner name; jobs belong to it")
    p.add_argument("--admin", action="store_true", help="may see and manage every job")
    p.set_defaults(func=_create)
    p = sub.add_parser("list", help="list keys (never the secrets)", description=HOST_NOTE)
    p.set_defaults(func=_list)
    p = sub.add_parser("revoke", help="revoke a key by name", description=HOST_NOTE)
    p.add_argument("name")
    p.set_defaults(func=_revoke)


def _engine() -> Engine:
    """The job database's engine; a database that cannot be opened exits with one line
    naming QUANTRAY_DATABASE_URL (status 1), as a bad setting does (status 2)."""
    from sqlalchemy.exc import SQLAlchemyError

    from service.cli_serve import database_unreachable
    from service.db import make_engine
    from service.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"quantray keys: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        return make_engine(settings.database_url)
    except ValueError as exc:  # an in-memory SQLite database
        print(f"quantray keys: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except (SQLAlchemyError, OSError) as exc:  # OSError: a SQLite folder it cannot make
        print(database_unreachable("keys", settings.database_url, exc), file=sys.stderr)
        raise SystemExit(1) from None


def _create(args: argparse.Namespace) -> int:
    from service.keys import ApiKeyError, create_key

    try:
        key = create_key(_engine(), args.name, admin=args.admin)
    except ApiKeyError as exc:
        print(f"quantray keys create: {exc}", file=sys.stderr)
        return 1
    print(key)
    role = "admin key" if args.admin else "key"
    print(f"created {role} {args.name!r}; it is shown only this once: store it now "
          "(clients send it as QUANTRAY_API_KEY)", file=sys.stderr)  # fmt: skip
    return 0


def _list(_: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from service.keys import list_keys

    def when(ts: float | None) -> str:
        return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")

    keys = list_keys(_engine())
    print(f"{'NAME':24} {'KEY ID':16} {'ADMIN':5} {'CREATED':16} REVOKED")
    for k in keys:
        print(f"{k.name:24} {k.key_id:16} {'yes' if k.admin else 'no':5} "
              f"{when(k.created_at):16} {when(k.revoked_at)}")  # fmt: skip
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from service.keys import ApiKeyError, revoke_key

    try:
        revoke_key(_engine(), args.name)
    except ApiKeyError as exc:
        print(f"quantray keys revoke: {exc}", file=sys.stderr)
        return 1
    print(f"revoked key {args.name!r}", file=sys.stderr)
    return 0
