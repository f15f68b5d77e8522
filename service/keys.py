"""API keys: `qr_<key_id>_<secret>`, stored as (key_id, salt, sha256(salt + secret)).

The key id finds the row by primary key; the secret is compared in constant time. The full
key is returned once, at creation, and cannot be recovered from the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from service.db import api_keys, fetch_one

KEY_PREFIX = "qr"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEY_RE = re.compile(r"^qr_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})$")
# Built once, compiled once per dialect (`fetch_one`): it runs on every request.
_SELECT_KEY = select(api_keys).where(api_keys.c.key_id == bindparam("key_id"))


class ApiKeyError(ValueError):
    """A key operation failed (name taken, unknown name); the message says what to do."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name owns the jobs it creates; admins see every job."""

    name: str
    admin: bool


@dataclass(frozen=True)
class KeyInfo:
    name: str
    key_id: str
    admin: bool
    created_at: float
    revoked_at: float | None


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def create_key(engine: Engine, name: str, *, admin: bool = False) -> str:
    """Create key `name`; returns the full key string (shown once)."""
    if not _NAME_RE.match(name):
        raise ApiKeyError(
            f"key name {name!r} is invalid: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    row = {
        "key_id": key_id,
        "name": name,
        "salt": salt,
        "secret_hash": _hash(salt, secret),
        "admin": admin,
        "created_at": time.time(),
        "revoked_at": None,
    }
    try:
        with engine.begin() as conn:
            conn.execute(insert(api_keys).values(**row))
    except IntegrityError:
        raise ApiKeyError(
            f"a key named {name!r} already exists (names are never reused, even after "
            "revocation): pick another name"
        ) from None
    return f"{KEY_PREFIX}_{key_id}_{secret}"


def list_keys(engine: Engine) -> list[KeyInfo]:
    with engine.connect() as conn:
        rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).mappings().all()
    return [
        KeyInfo(r["name"], r["key_id"], bool(r["admin"]), r["created_at"], r["revoked_at"])
        for r in rows
    ]


def revoke_key(engine: Engine, name: str) -> None:
    """Revoke key `name`; requests with it get 401 from then on."""
    with engine.begin() as conn:
        result = conn.execute(
            update(api_keys)
            .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=time.time())
        )
    if result.rowcount == 0:
        names = [k.name for k in list_keys(engine) if k.revoked_at is None]
        raise ApiKeyError(f"no active key named {name!r}; active keys: {names or 'none'}")


def verify_key(engine: Engine, token: str) -> Principal | None:
    """The principal for `token`, or None when it is malformed, unknown or revoked."""
    match = _KEY_RE.match(token)
    if not match:
        return None
    key_id, secret = match.groups()
    row = fetch_one(engine, _SELECT_KEY, {"key_id": key_id})  # every request: kept cheap
    if row is None:
        # Same work as a real check, so timing does not tell which key ids exist.
        hmac.compare_digest(_hash("00" * 16, secret), "0" * 64)
        return None
    ok = hmac.compare_digest(_hash(row["salt"], secret), row["secret_hash"])
    if not ok or row["revoked_at"] is not None:
        return None
    return Principal(name=row["name"], admin=bool(row["admin"]))
