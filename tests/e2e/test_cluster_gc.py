"""ray_jobs.cluster_gc's choice of leaked placement groups (no Ray needed): only live,
non-detached groups whose creator is an ended quantray job. The e2e module shows the leak
and its removal on a real head (test_stopped_jobs_leave_no_placement_groups)."""

from __future__ import annotations

from ray_jobs.cluster_gc import ended_quantray_jobs, leaked_groups, orphaned_groups

JOBS = [
    # A stopped quantray submission (the dispatcher's metadata), and a direct driver run.
    {"job_id": "02000000", "status": "STOPPED", "metadata": {"quantray_job_id": "qr-1"},
     "entrypoint": "python -m ray_jobs.run --job-id qr-1"},
    {"job_id": "03000000", "status": "FAILED", "metadata": {},
     "entrypoint": "/venv/bin/python -m ray_jobs.run --spec s.yaml"},
    # Still running: its groups are in use.
    {"job_id": "04000000", "status": "RUNNING", "metadata": {"quantray_job_id": "qr-2"},
     "entrypoint": "python -m ray_jobs.run --job-id qr-2"},
    # Someone else's ended job: not ours to clean.
    {"job_id": "05000000", "status": "SUCCEEDED", "metadata": {}, "entrypoint": "python x.py"},
    # A submission that never started a driver has no Ray job id.
    {"job_id": None, "status": "FAILED", "metadata": {"quantray_job_id": "qr-3"},
     "entrypoint": "python -m ray_jobs.run --job-id qr-3"},
]  # fmt: skip


def _group(pg_id: str, job: str, state: str = "CREATED", detached: bool = False) -> dict:
    return {"placement_group_id": pg_id, "creator_job_id": job, "state": state,
            "is_detached": detached}  # fmt: skip


def test_ended_quantray_jobs_are_ours_and_over() -> None:
    assert ended_quantray_jobs(JOBS) == {"02000000", "03000000"}


def test_only_live_non_detached_groups_of_ended_quantray_jobs_leak() -> None:
    groups = [
        _group("a", "02000000"),
        _group("b", "02000000", state="PENDING"),  # would grab resources once they free up
        _group("c", "02000000", state="REMOVED"),
        _group("d", "02000000", detached=True),
        _group("e", "03000000"),
        _group("f", "04000000"),
        _group("g", "05000000"),
    ]
    assert leaked_groups(groups, ended_quantray_jobs(JOBS)) == ["a", "b", "e"]
    assert leaked_groups(groups, set()) == []


def test_sweeper_looks_again_once_per_interval(monkeypatch) -> None:
    """The driver's waiting loops call the sweeper every second; it removes ended jobs'
    groups again only once `every_s` has passed (a group created after the job's first look
    is found within one interval), and a failed sweep is logged, not raised, and
    waits its interval too."""
    from ray_jobs import cluster_gc

    now = [100.0]
    calls: list[float] = []

    def fake_remove() -> list[str]:
        calls.append(now[0])
        if len(calls) == 2:
            raise RuntimeError("state API down")
        return [f"pg{len(calls)}"]

    monkeypatch.setattr(cluster_gc.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(cluster_gc, "remove_leaked_placement_groups", fake_remove)
    sweep = cluster_gc.LeakSweeper(every_s=15.0)
    assert sweep() == [] and calls == []  # the driver has just looked, before planning
    now[0] = 114.0
    assert sweep() == [] and calls == []
    now[0] = 115.0
    assert sweep() == ["pg1"] and calls == [115.0]
    now[0] = 129.0
    assert sweep() == [] and calls == [115.0]
    now[0] = 131.0
    assert sweep() == [] and calls == [115.0, 131.0]  # logged; the job goes on
    now[0] = 140.0
    assert sweep() == [] and calls == [115.0, 131.0]
    now[0] = 146.0
    assert sweep() == ["pg3"]


def test_orphaned_groups_are_this_jobs_live_groups_whose_creator_actor_died() -> None:
    """A Train controller's worker group after the controller died (a trial ASHA stopped)
    is removed while the job runs; a group the driver made (a Tune trial's: no creator
    actor), a live controller's, another job's, a detached or a removed one are not."""
    import ray
    from ray.core.generated import gcs_pb2

    job, other = bytes.fromhex("01000000"), bytes.fromhex("02000000")
    nil = ray.ActorID.nil().binary()
    actor = bytes.fromhex("d6e83f14533d6a9378879b01") + job
    table = gcs_pb2.PlacementGroupTableData

    def row(pg: str, creator_job: bytes = job, creator: bytes = actor, dead: bool = True,
            state: int = table.CREATED, detached: bool = False) -> object:
        return table(placement_group_id=bytes.fromhex(pg * 14) + creator_job,
                     creator_job_id=creator_job, creator_actor_id=creator,
                     creator_actor_dead=dead, state=state, is_detached=detached)

    rows = [
        row("a1"),                              # orphaned
        row("b2", state=table.PENDING),          # orphaned, would grab a CPU once one frees
        row("c3", creator=nil),                  # the driver's (a trial's own group)
        row("d4", dead=False),                   # its controller still runs
        row("e5", creator_job=other),            # another job's
        row("f6", detached=True),
        row("a7", state=table.REMOVED),
    ]  # fmt: skip
    assert orphaned_groups(rows, "01000000") == ["a1" * 14 + "01000000", "b2" * 14 + "01000000"]
    assert orphaned_groups(rows, "03000000") == []


def test_dead_drivers_in_the_gcs_table_count_as_ended_quantray_jobs(monkeypatch) -> None:
    """The GCS job table lists every driver, also one the state API's `list_jobs` leaves
    out: a dead `ray_jobs.run` driver there is an ended quantray job; a live one, or
    someone else's, is not."""
    import ray._private.state

    from ray_jobs import cluster_gc

    rows = [
        {"JobID": "05000000", "IsDead": True,
         "Entrypoint": "/venv/bin/python -m ray_jobs.run --job-id qr-1 --storage s3://b"},
        {"JobID": "06000000", "IsDead": False, "Entrypoint": "python -m ray_jobs.run --job-id x"},
        {"JobID": "07000000", "IsDead": True, "Entrypoint": "python train.py"},
    ]  # fmt: skip
    monkeypatch.setattr(ray._private.state, "jobs", lambda: rows)
    assert cluster_gc._gcs_dead_drivers() == {"05000000"}

    def down() -> list:
        raise ConnectionError("GCS unreachable")

    monkeypatch.setattr(ray._private.state, "jobs", down)
    assert cluster_gc._gcs_dead_drivers() == set()  # best effort: logged, nothing added


def _actor(cls: str, job: str, state: str, node: str, port: int, owner_port: int | None,
           start: float, end: float = 0) -> dict:
    return {"ActorClassName": cls, "JobID": job, "State": state, "Pid": port,
            "Address": {"NodeID": node, "IPAddress": "10.0.0.1", "Port": port},
            "OwnerAddress": None if owner_port is None else
            {"NodeID": "w1", "IPAddress": "10.0.0.2", "Port": owner_port},
            "StartTime": start, "EndTime": end}  # fmt: skip


def test_a_cleaner_whose_controller_died_long_ago_is_stuck() -> None:
    """A PlacementGroupCleaner is stuck when the controller that owns it (its process: node
    and port) has been dead for the grace period, whatever the driver's own state API says
    (on a host with several Ray instances the cleaners' address-less lookup fails while
    the driver's, which names its cluster, works). Not stuck: a live controller's cleaner,
    one whose controller died moments ago (a working cleaner is exiting), another job's,
    a dead cleaner, or one whose owner is unknown."""
    from ray_jobs.cluster_gc import CLEANER_GRACE_S, stuck_cleaners

    now = 1_000_000_000.0
    old = now - (CLEANER_GRACE_S + 1) * 1000
    rows = {
        "ctl1": _actor("TrainController", "01000000", "DEAD", "w1", 20001, 20000, 10, old),
        "cln1": _actor("PlacementGroupCleaner", "01000000", "ALIVE", "head", 20100, 20001, 20),
        "ctl2": _actor("TrainController", "01000000", "ALIVE", "w1", 20002, 20000, 10),
        "cln2": _actor("PlacementGroupCleaner", "01000000", "ALIVE", "head", 20101, 20002, 20),
        "ctl3": _actor("TrainController", "01000000", "DEAD", "w1", 20003, 20000, 10, now - 5000),
        "cln3": _actor("PlacementGroupCleaner", "01000000", "ALIVE", "head", 20102, 20003, 20),
        "ctl4": _actor("TrainController", "02000000", "DEAD", "w1", 20004, 20000, 10, old),
        "cln4": _actor("PlacementGroupCleaner", "02000000", "ALIVE", "head", 20103, 20004, 20),
        "cln5": _actor("PlacementGroupCleaner", "01000000", "DEAD", "head", 20104, 20001, 20, old),
        "cln6": _actor("PlacementGroupCleaner", "01000000", "ALIVE", "head", 20105, 29999, 20),
        # port 20001 reused by a later worker, started after cln1: not cln1's owner
        "late": _actor("RayTrainWorker", "01000000", "ALIVE", "w1", 20001, 20000, 30),
    }  # fmt: skip
    assert stuck_cleaners(rows, {"01000000"}, now) == {"cln1": "ctl1"}
    assert stuck_cleaners(rows, {"01000000", "02000000"}, now) == {"cln1": "ctl1",
                                                                   "cln4": "ctl4"}
    assert stuck_cleaners(rows, set(), now) == {}
    assert stuck_cleaners(rows, {"01000000"}, now, grace_s=0) == {"cln1": "ctl1",
                                                                  "cln3": "ctl3"}
