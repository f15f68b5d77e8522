"""The job table and API keys on SQLite and PostgreSQL (the `db_url` fixture runs each test
on both): transactions, idempotency, paging, ownership, compare-and-set transitions."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from service.db import jobs, make_engine
from service.keys import ApiKeyError, Principal, create_key, list_keys, revoke_key, verify_key
from service.store import JobConflict, JobNotFound, JobStore

ALICE, BOB, ADMIN = Principal("alice", False), Principal("bob", False), Principal("root", True)
SPEC: dict[str, Any] = {"name": "a", "models": ["ols"], "dataset": {"uri": "sample:sp500"}}


def _nothing(_job_id: str) -> None:
    """No files to write or remove for store-level tests."""


@pytest.fixture
def engine(db_url: str) -> Engine:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _create(store: JobStore, owner: str = "alice", key: str | None = None, **spec: Any) -> Any:
    job, _ = store.create(
        owner=owner,
        name="a",
        spec={**SPEC, **spec},
        idempotency_key=key,
        write_files=_nothing,
        remove_files=_nothing,
    )
    return job


def test_no_half_created_job_when_storage_or_insert_fails(engine: Engine) -> None:
    store = JobStore(engine)
    written: list[str] = []
    removed: list[str] = []

    def explode(_job_id: str) -> None:
        raise OSError("storage down")

    with pytest.raises(OSError, match="storage down"):
        store.create(
            owner="alice",
            name="a",
            spec=SPEC,
            idempotency_key="k",
            write_files=explode,
            remove_files=removed.append,
        )
    assert store.list(ADMIN, status=None, offset=0, limit=10) == ([], 0)
    # An insert that fails (NOT NULL owner) takes back the files it wrote.
    with pytest.raises(IntegrityError):
        store.create(
            owner=None,
            name="a",
            spec=SPEC,
            idempotency_key=None,  # type: ignore[arg-type]
            write_files=written.append,
            remove_files=removed.append,
        )
    assert written == removed and len(written) == 1
    assert store.list(ADMIN, status=None, offset=0, limit=10) == ([], 0)
    # The idempotency key was not consumed by the failures.
    assert _create(store, key="k").idempotency_key == "k"


def test_a_lost_commit_acknowledgement_keeps_the_jobs_spec(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection cut after the COMMIT: the insert raises with the row stored. Its
    spec.json is kept (it was removed, leaving a queued job without its spec); so it is when
    the database cannot say; a row that is surely not there takes its files back."""
    from contextlib import contextmanager

    from sqlalchemy.exc import OperationalError

    store = JobStore(engine)
    real_write = store._write
    lost = OperationalError("COMMIT", {}, ConnectionResetError("connection reset by peer"))

    @contextmanager
    def committed_then_cut():
        with real_write() as conn:
            yield conn
        raise lost  # after the commit, as a lost acknowledgement

    written: list[str] = []
    removed: list[str] = []
    monkeypatch.setattr(store, "_write", committed_then_cut)
    with pytest.raises(OperationalError):
        store.create(owner="alice", name="a", spec=SPEC, idempotency_key="k",
                     write_files=written.append, remove_files=removed.append)
    assert removed == [] and store.get(written[0]).status == "queued"
    # the database cannot answer the look-up: the files stay too
    monkeypatch.setattr("service.store.fetch_one",
                        lambda *a, **k: (_ for _ in ()).throw(lost))
    with pytest.raises(OperationalError):
        store.create(owner="alice", name="a", spec=SPEC, idempotency_key=None,
                     write_files=written.append, remove_files=removed.append)
    assert removed == [] and len(written) == 2
    monkeypatch.undo()

    @contextmanager
    def cut_before_commit():
        with real_write() as conn:
            yield conn
            raise lost  # rolled back: no row

    monkeypatch.setattr(store, "_write", cut_before_commit)
    with pytest.raises(OperationalError):
        store.create(owner="alice", name="a", spec=SPEC, idempotency_key=None,
                     write_files=written.append, remove_files=removed.append)
    assert removed == [written[2]]
    with pytest.raises(JobNotFound):
        store.get(written[2])


def test_idempotency_same_spec_same_job_different_spec_conflict(engine: Engine) -> None:
    store = JobStore(engine)
    kwargs = {"owner": "alice", "name": "a", "idempotency_key": "k"}
    first, created = store.create(spec=SPEC, write_files=_nothing, remove_files=_nothing, **kwargs)
    again, created_again = store.create(
        spec=dict(SPEC), write_files=_nothing, remove_files=_nothing, **kwargs
    )
    assert created and not created_again and again.id == first.id
    with pytest.raises(JobConflict, match="different spec"):
        _create(store, key="k", seed=7)
    assert _create(store, owner="bob", key="k").id != first.id


def test_concurrent_same_key_inserts_make_one_job(engine: Engine) -> None:
    store = JobStore(engine)
    ids: list[str] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        ids.append(_create(store, key="race").id)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1
    assert store.list(ADMIN, status=None, offset=0, limit=10)[1] == 1


def test_ownership_paging_and_counts(engine: Engine) -> None:
    store = JobStore(engine)
    mine = [_create(store).id for _ in range(5)]
    theirs = _create(store, owner="bob").id
    page, total = store.list(ALICE, status=None, offset=0, limit=2)
    assert total == 5 and [j.id for j in page] == mine[::-1][:2]
    page, _ = store.list(ALICE, status=None, offset=4, limit=2)
    assert [j.id for j in page] == [mine[0]]
    assert store.list(ADMIN, status=None, offset=0, limit=50)[1] == 6
    with pytest.raises(JobNotFound):
        store.get(theirs, ALICE)
    assert store.get(theirs, ADMIN).owner == "bob"
    assert store.get(theirs, BOB).id == theirs
    store.request_cancel(store.get(mine[0]))
    assert store.list(ALICE, status="cancelled", offset=0, limit=9)[1] == 1
    assert store.counts_by_status() == {
        "queued": 5,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 1,
        "interrupted": 0,
    }


def test_queue_order_claim_and_compare_and_set(engine: Engine) -> None:
    store = JobStore(engine)
    a, b, c = (_create(store) for _ in range(3))
    assert [j.id for j in store.queued(2)] == [a.id, b.id]
    assert store.claim_for_submission(a, a.id)
    assert not store.claim_for_submission(a, "again")  # already claimed
    assert [j.id for j in store.queued(5)] == [b.id, c.id]
    assert [j.id for j in store.on_ray()] == [a.id]
    assert store.transition(a.id, "queued", status="running")
    assert not store.transition(a.id, "queued", status="failed")  # stale expectation
    assert store.get(a.id).status == "running"


def test_cancel_and_resume(engine: Engine) -> None:
    store = JobStore(engine)
    queued, on_ray = _create(store), _create(store)
    assert store.request_cancel(queued).status == "cancelled"
    with pytest.raises(JobConflict, match="already cancelled"):
        store.request_cancel(store.get(queued.id))
    store.claim_for_submission(on_ray, on_ray.id)
    store.transition(on_ray.id, "queued", status="running")
    flagged = store.request_cancel(store.get(on_ray.id))
    assert flagged.status == "running" and flagged.cancel_requested  # Ray has to stop it
    with pytest.raises(JobConflict, match="only"):
        store.resume(flagged)
    store.transition(on_ray.id, "running", status="interrupted", errors=[{"unit": "x"}])
    resumed = store.resume(store.get(on_ray.id))
    assert (resumed.status, resumed.attempt, resumed.ray_submission_id) == ("queued", 1, None)
    assert not resumed.cancel_requested and resumed.errors == []
    assert resumed.queued_at > on_ray.queued_at


def test_api_keys_hashed_verified_revoked(engine: Engine) -> None:
    key = create_key(engine, "alice")
    admin_key = create_key(engine, "ops", admin=True)
    assert verify_key(engine, key) == Principal("alice", False)
    assert verify_key(engine, admin_key) == Principal("ops", True)
    secret = key.split("_", 2)[2]
    stored = {k.name: k for k in list_keys(engine)}
    assert stored["alice"].key_id in key and secret not in repr(stored)
    assert verify_key(engine, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert verify_key(engine, "qr_" + "0" * 16 + "_" + secret) is None
    with pytest.raises(ApiKeyError, match="already exists"):
        create_key(engine, "alice")
    with pytest.raises(ApiKeyError, match="invalid"):
        create_key(engine, "no spaces allowed")
    revoke_key(engine, "alice")
    assert verify_key(engine, key) is None
    with pytest.raises(ApiKeyError, match="no active key"):
        revoke_key(engine, "alice")


def test_fast_reads_match_sqlalchemy_reads(engine: Engine) -> None:
    """`get`, the idempotency lookup and the record `create` returns (built without
    re-reading) all equal what SQLAlchemy itself reads back: same types on both backends."""
    store = JobStore(engine)

    def sqlalchemy_read(job_id: str) -> Any:
        with engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).mappings().one()
        return type(created).from_row(row)

    created = _create(store, key="k1", seed=7)
    assert created == sqlalchemy_read(created.id) == store.get(created.id, ALICE)
    store.claim_for_submission(created, "sub-1")
    store.transition(created.id, "queued", status="running", started_at=1.5)
    store.transition(
        created.id, "running", status="failed", cancel_requested=True, finished_at=2.5,
        message="m", errors=[{"unit": "u", "error": "e"}],
    )  # fmt: skip
    fast = store.get(created.id)
    assert fast == sqlalchemy_read(created.id)
    assert fast.cancel_requested is True and fast.errors == [{"unit": "u", "error": "e"}]
    assert (fast.started_at, fast.finished_at, fast.seq) == (1.5, 2.5, created.seq)
    assert _create(store, key="k1", seed=7) == fast  # the replay reads it the fast way
    with pytest.raises(JobNotFound):
        store.get(created.id, BOB)


def test_a_claim_holds_the_running_cap_across_api_replicas(db_url: str) -> None:
    """Two API processes on one database: each counted a free slot before the other
    claimed, so both claims must not pass. The claim counts the jobs on Ray itself."""
    engines = [make_engine(db_url), make_engine(db_url)]
    try:
        one, two = (JobStore(e) for e in engines)
        a, b, c = (_create(one) for _ in range(3))
        assert one.claim_for_submission(a, a.id, 2)
        assert two.claim_for_submission(b, b.id, 2)
        assert not one.claim_for_submission(c, c.id, 2)  # two on Ray already: the cap
        assert one.get(c.id).ray_submission_id is None and one.get(c.id).status == "queued"
        one.transition(a.id, "queued", status="succeeded")  # a slot frees up
        assert two.claim_for_submission(c, c.id, 2)
        assert [j.id for j in one.on_ray()] == [b.id, c.id]
    finally:
        for e in engines:
            e.dispose()


def test_concurrent_claims_from_replicas_never_pass_the_cap(db_url: str) -> None:
    """Eight claimers (four per replica, each with its own engine as separate processes
    have) race for the slots: exactly the cap's number of claims succeed."""
    engines = [make_engine(db_url) for _ in range(2)]
    try:
        stores = [JobStore(e) for e in engines]
        queued = [_create(stores[0]) for _ in range(8)]
        barrier = threading.Barrier(8)
        won: list[str] = []

        def claim(i: int) -> None:
            job = queued[i]
            barrier.wait()
            if stores[i % 2].claim_for_submission(job, job.id, 3):
                won.append(job.id)

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 3, won
        assert sorted(j.id for j in stores[1].on_ray()) == sorted(won)
    finally:
        for e in engines:
            e.dispose()
