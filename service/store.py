"""The job table's operations. Every state change is a compare-and-set on (id, status), so
the dispatcher and the API never overwrite each other's transitions, even across processes.

Raises domain errors (`JobNotFound`, `JobConflict`); the HTTP layer maps them to 404/409.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from service.db import fetch_one, jobs
from service.job_ids import job_id_problem, new_job_id
from service.keys import Principal

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINAL = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
RESUMABLE = frozenset({"failed", "cancelled", "interrupted"})
# The hot statements, built once (and the SELECTs compiled once per dialect, `fetch_one`):
# building one per call (where-clause, cache key) cost more Python than running it.
_INSERT = insert(jobs)
_BY_ID = select(jobs).where(jobs.c.id == bindparam("job_id"))
_BY_IDEMPOTENCY_KEY = select(jobs).where(
    jobs.c.owner == bindparam("owner"), jobs.c.idempotency_key == bindparam("key")
)


_ON_RAY = jobs.alias("on_ray")
# Jobs on Ray, as `JobStore.on_ray` selects them: running, or claimed for a submission.
_ON_RAY_COUNT = (
    select(func.count())
    .select_from(_ON_RAY)
    .where(
        (_ON_RAY.c.status == "running")
        | ((_ON_RAY.c.status == "queued") & _ON_RAY.c.ray_submission_id.is_not(None))
    )
    .scalar_subquery()
)
# Serialises claims across API replicas on PostgreSQL (a fixed key: b"qrclm" as an int).
_CLAIM_LOCK = text("SELECT pg_advisory_xact_lock(487250422893)")


class JobNotFound(LookupError):
    """No such job, or it belongs to another key (both look the same to the caller)."""


class JobConflict(RuntimeError):
    """The request is valid but the job's state (or an idempotency key) forbids it."""


@dataclass(frozen=True)
class JobRecord:
    id: str
    seq: int
    owner: str
    name: str
    status: str
    spec: dict[str, Any]
    spec_hash: str
    idempotency_key: str | None
    ray_submission_id: str | None
    attempt: int
    cancel_requested: bool
    message: str | None
    errors: list[dict[str, Any]]
    created_at: float
    updated_at: float
    queued_at: float
    started_at: float | None
    finished_at: float | None

    @classmethod
    def from_row(cls, row: Any) -> JobRecord:
        values = dict(row)
        values["spec"] = json.loads(values["spec"])
        values["errors"] = json.loads(values["errors"]) if values["errors"] else []
        values["cancel_requested"] = bool(values["cancel_requested"])
        return cls(**values)


def spec_hash(spec: dict[str, Any]) -> str:
    """Hash of the canonical spec: the same spec sent as JSON or YAML hashes the same."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class JobStore:
    """Job rows on one engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # SQLite admits one writer at a time, and a writer that finds it busy retries after
        # sleeps of 1, 2, 5, ... 100 ms (busy_timeout): with four concurrent submissions a
        # 0.3 ms insert took up to ~100 ms. This process's writers queue on a lock instead
        # and get the database as soon as the previous commit is done (other processes
        # still wait through busy_timeout). Writes run in worker threads, never on the loop.
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        )

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction (commits on success, rolls back on error)."""
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    def create(
        self,
        *,
        owner: str,
        name: str,
        spec: dict[str, Any],
        idempotency_key: str | None,
        write_files: Callable[[str], None],
        remove_files: Callable[[str], None],
    ) -> tuple[JobRecord, bool]:
        """Insert a queued job; returns (job, created).

        `write_files(job_id)` (spec.json) runs first and outside the transaction, so slow
        storage never holds the database's write lock; if it raises, nothing is inserted,
        and if the insert fails, `remove_files(job_id)` takes the files back once the
        database says the row is not there (a lost COMMIT acknowledgement stores it): no
        job without its spec either way. With an idempotency key already used by `owner`,
        returns the existing job when the spec is the same and raises `JobConflict` when it
        differs."""
        digest = spec_hash(spec)
        if idempotency_key is not None:
            existing = self._by_idempotency_key(owner, idempotency_key)
            if existing is not None:
                return self._replay(existing, digest, idempotency_key), False
        now = time.time()
        row = {
            "id": new_job_id(),
            "owner": owner,
            "name": name,
            "status": "queued",
            "spec": json.dumps(spec, sort_keys=True, default=str),
            "spec_hash": digest,
            "idempotency_key": idempotency_key,
            "ray_submission_id": None,
            "attempt": 0,
            "cancel_requested": False,
            "message": None,
            "errors": None,
            "created_at": now,
            "updated_at": now,
            "queued_at": now,
            "started_at": None,
            "finished_at": None,
        }
        write_files(row["id"])
        try:
            with self._write() as conn:
                seq = conn.execute(_INSERT, row).inserted_primary_key[0]
        except IntegrityError:
            remove_files(row["id"])
            # A concurrent request with the same idempotency key won the insert.
            existing = self._by_idempotency_key(owner, idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            return self._replay(existing, digest, idempotency_key or ""), False
        except BaseException:
            # A lost COMMIT acknowledgement (the connection cut after the commit) raises
            # here with the row stored: its spec.json stays. So does it when the database
            # cannot tell (a spec.json without a row is inert; a row without one is not).
            if self._surely_absent(row["id"]):
                remove_files(row["id"])
            else:
                log.warning("job %s: the insert raised, and its row is there or cannot be "
                            "looked up: its spec.json is kept", row["id"])
            raise
        # The row as stored (every column is in `row`, plus the generated seq): no re-read.
        return JobRecord.from_row({**row, "seq": seq}), True

    def _surely_absent(self, job_id: str) -> bool:
        """Whether the database answers that job `job_id` has no row."""
        try:
            return fetch_one(self.engine, _BY_ID, {"job_id": job_id}) is None
        except Exception:  # noqa: BLE001 - cannot tell: the caller keeps the files
            return False

    def _by_idempotency_key(self, owner: str, key: str) -> JobRecord | None:
        row = fetch_one(self.engine, _BY_IDEMPOTENCY_KEY, {"owner": owner, "key": key})
        return JobRecord.from_row(row) if row else None

    @staticmethod
    def _replay(existing: JobRecord, digest: str, key: str) -> JobRecord:
        if existing.spec_hash != digest:
            raise JobConflict(
                f"Idempotency-Key {key!r} was already used for job {existing.id} with a "
                "different spec: use a new key for a new job, or resend the original spec"
            )
        return existing

    def get(self, job_id: str, principal: Principal | None = None) -> JobRecord:
        """The job, if `principal` (None = internal caller) may see it; else `JobNotFound`
        (also for an id that is not shaped like one, without asking the database)."""
        problem = job_id_problem(job_id)
        if problem is not None:
            raise JobNotFound(problem)
        row = fetch_one(self.engine, _BY_ID, {"job_id": job_id})  # status polls: kept cheap
        if row is None or (
            principal is not None and not principal.admin and row["owner"] != principal.name
        ):
            raise JobNotFound(f"job {job_id!r} not found")
        return JobRecord.from_row(row)

    def list(
        self, principal: Principal, *, status: str | Sequence[str] | None, offset: int,
        limit: int,
    ) -> tuple[list[JobRecord], int]:
        """Newest first; returns (page, total matching). `status`: one, or any of several."""
        where = []
        if not principal.admin:
            where.append(jobs.c.owner == principal.name)
        if isinstance(status, str):
            where.append(jobs.c.status == status)
        elif status:
            where.append(jobs.c.status.in_(sorted(set(status))))
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(jobs).where(*where)).scalar_one()
            rows = conn.execute(
                select(jobs).where(*where).order_by(jobs.c.seq.desc()).offset(offset).limit(limit)
            ).mappings()
            return [JobRecord.from_row(r) for r in rows], int(total)

    def counts_by_status(self) -> dict[str, int]:
        query = select(jobs.c.status, func.count()).group_by(jobs.c.status)
        with self.engine.connect() as conn:
            counts = {status: int(n) for status, n in conn.execute(query)}
        return {status: counts.get(status, 0) for status in STATUSES}

    def queued(self, limit: int) -> list[JobRecord]:
        """Queued jobs not yet handed to Ray, oldest (re)queue first."""
        query = (
            select(jobs)
            .where(jobs.c.status == "queued", jobs.c.ray_submission_id.is_(None))
            .order_by(jobs.c.queued_at, jobs.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [JobRecord.from_row(r) for r in conn.execute(query).mappings()]

    def on_ray(self) -> list[JobRecord]:
        """Jobs Ray knows about (or may: a submission was started): running, or queued with
        a submission id whose POST may or may not have reached Ray."""
        query = select(jobs).where(
            (jobs.c.status == "running")
            | ((jobs.c.status == "queued") & jobs.c.ray_submission_id.is_not(None))
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(jobs.c.seq)).mappings()
            return [JobRecord.from_row(r) for r in rows]

    def transition(self, job_id: str, expect: str, **values: Any) -> bool:
        """Compare-and-set: apply `values` only if the job is still in status `expect`."""
        if "errors" in values and values["errors"] is not None:
            values["errors"] = json.dumps(values["errors"], default=str)
        values["updated_at"] = time.time()
        with self._write() as conn:
            result = conn.execute(
                update(jobs).where(jobs.c.id == job_id, jobs.c.status == expect).values(**values)
            )
        return result.rowcount == 1

    def claim_for_submission(
        self, job: JobRecord, submission_id: str, max_on_ray: int | None = None
    ) -> bool:
        """Record the submission id before POSTing to Ray, so a crash in between is visible
        at restart (the job is then looked up on Ray instead of submitted twice).

        With `max_on_ray`, the claim also fails when that many jobs are already on Ray
        (`on_ray`), counted in the same statement: API replicas sharing one database each
        see a free slot in their own count, and without this both filled it. On PostgreSQL
        the claimers queue on a transaction-scoped advisory lock first, so each counts what
        the previous one committed (READ COMMITTED alone lets two see the same count);
        SQLite has one writer at a time anyway."""
        condition = [
            jobs.c.id == job.id,
            jobs.c.status == "queued",
            jobs.c.ray_submission_id.is_(None),
        ]
        if max_on_ray is not None:
            condition.append(_ON_RAY_COUNT < max_on_ray)
        with self._write() as conn:
            if max_on_ray is not None and conn.dialect.name == "postgresql":
                conn.execute(_CLAIM_LOCK)
            result = conn.execute(
                update(jobs)
                .where(*condition)
                .values(ray_submission_id=submission_id, updated_at=time.time())
            )
        return result.rowcount == 1

    def request_cancel(self, job: JobRecord) -> JobRecord:
        """Cancel: a job not yet on Ray is cancelled now; one on Ray gets cancel_requested
        and becomes `cancelled` when Ray reports it stopped."""
        for _ in range(3):  # the dispatcher may move the job between our read and write
            if job.status in FINAL:
                raise JobConflict(f"job {job.id} is already {job.status}; nothing to cancel")
            if job.status == "queued" and job.ray_submission_id is None:
                done = self.transition(
                    job.id, "queued", status="cancelled", cancel_requested=True,
                    finished_at=time.time(), message="cancelled before it started",
                )  # fmt: skip
            else:
                done = self.transition(job.id, job.status, cancel_requested=True)
            job = self.get(job.id)
            if done:
                return job
        raise JobConflict(f"job {job.id} keeps changing state; retry the cancel")

    def resume(self, job: JobRecord) -> JobRecord:
        """Requeue a failed/cancelled/interrupted job; it keeps its id (and its storage, so
        the job skips the units it already finished).

        `attempt` counts the runs that reached Ray (or may have: a submission id was
        claimed), each with its own Ray submission (`{id}-r{attempt}`) and stored driver
        log: an attempt that never left the queue (cancelled while queued) is not counted,
        and the resumed job takes its number again, so `?attempt=N` always names a run."""
        if job.status not in RESUMABLE:
            pending = (" with a stop requested: resume it once it has stopped (`quantray "
                       f"status {job.id}` shows when)" if job.cancel_requested else "")
            raise JobConflict(
                f"job {job.id} is {job.status}{pending}; only {sorted(RESUMABLE)} jobs can be "
                "resumed"
            )
        reached_ray = job.ray_submission_id is not None
        done = self.transition(
            job.id,
            job.status,
            status="queued",
            attempt=job.attempt + 1 if reached_ray else job.attempt,
            ray_submission_id=None,
            cancel_requested=False,
            message=None,
            errors=None,
            queued_at=time.time(),
            started_at=None,
            finished_at=None,
        )
        if not done:
            now = self.get(job.id)
            if now.status == "queued":  # a concurrent resume won
                raise JobConflict(f"job {job.id} was just resumed by another request: it is "
                                  f"queued (attempt {now.attempt}); nothing to do")
            raise JobConflict(f"job {job.id} changed state meanwhile (it is {now.status} now); "
                              "retry the resume if it is still what you want")
        return self.get(job.id)
