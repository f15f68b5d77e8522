"""The job table and the API-key table: one SQLAlchemy Core schema for SQLite and PostgreSQL.

Timestamps are UNIX seconds (float) so both backends store and compare them the same way;
the API renders them as ISO 8601 UTC.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    make_url,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select

metadata = MetaData()

api_keys = Table(
    "quantray_api_keys",
    metadata,
    # key_id is the public half of a key (`qr_<key_id>_<secret>`): it finds the row without
    # scanning; only the secret's salted hash is stored.
    Column("key_id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("salt", String(64), nullable=False),
    Column("secret_hash", String(128), nullable=False),
    Column("admin", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

jobs = Table(
    "quantray_jobs",
    metadata,
    # seq gives a total submission order ("oldest first") that timestamps cannot tie-break.
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("owner", String(64), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("spec", Text, nullable=False),
    Column("spec_hash", String(64), nullable=False),
    Column("idempotency_key", String(200), nullable=True),
    Column("ray_submission_id", String(80), nullable=True),
    Column("attempt", Integer, nullable=False, default=0),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("message", Text, nullable=True),
    Column("errors", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("queued_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    UniqueConstraint("owner", "idempotency_key", name="uq_quantray_jobs_idempotency"),
    Index("ix_quantray_jobs_queue", "status", "queued_at", "seq"),
)


def make_engine(url: str) -> Engine:
    """An engine for `url` (sqlite:///file or postgresql+psycopg://...) with the schema created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise ValueError(
                f"QUANTRAY_DATABASE_URL={url!r}: an in-memory SQLite database would lose every "
                "job on restart; use sqlite:///abs/path/quantray.db"
            )
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8,
            # More than can ever be checked out at once (40 threadpool workers, up to 32
            # dispatcher threads, the event loop's inline reads): the event loop must never
            # wait for a connection (`AppState.read`). Past 8 they are closed on return.
            max_overflow=80,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)
    metadata.create_all(engine)
    return engine


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    # WAL lets readers (status polls) proceed while the dispatcher or a POST writes.
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def fetch_one(
    engine: Engine, statement: Select, params: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The first row of `statement` (a SELECT of plain columns, with bind parameters named
    in `params`) as {column name: value}, or None.

    For the per-request primary-key reads (the API key, a job's status): it runs the SQL
    compiled once per dialect straight on a pooled DBAPI cursor, skipping SQLAlchemy's
    per-execution bookkeeping (execution context, result metadata), which cost several
    times the query itself. Values are the driver's, unprocessed: fine for the strings,
    numbers and booleans of these tables (SQLite gives booleans as 0/1, so callers apply
    `bool()`); not for dates, JSON or other types SQLAlchemy would convert.
    """
    sql, positions, names = _compiled(statement, engine.dialect)
    args: Any = tuple(params[p] for p in positions) if positions is not None else dict(params)
    dbapi_error = engine.dialect.loaded_dbapi.Error
    try:
        conn = engine.raw_connection()  # pool checkout: pragmas, pre-ping and reset as usual
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(sql, args)
                row = cursor.fetchone()
            finally:
                cursor.close()
        finally:
            conn.close()  # back to the pool, which rolls back (ends any read transaction)
    except dbapi_error as exc:
        # the driver's own error, as SQLAlchemy's class of it (OperationalError for an
        # outage), as every other query raises it: the API answers those with a 503
        raise DBAPIError.instance(sql, args, exc, dbapi_error) from exc
    return None if row is None else dict(zip(names, row, strict=True))


@functools.lru_cache(maxsize=64)
def _compiled(
    statement: Select, dialect: Dialect
) -> tuple[str, tuple[str, ...] | None, tuple[str, ...]]:
    compiled = statement.compile(dialect=dialect)
    positions = tuple(compiled.positiontup) if compiled.positiontup is not None else None
    return compiled.string, positions, tuple(c.name for c in statement.selected_columns)
