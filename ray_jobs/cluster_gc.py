"""Give back what Ray leaked from earlier quantray jobs: placement groups of ended jobs, and
the detached PlacementGroupCleaner actors that should have removed them
(`stop_orphaned_cleaners`).

Ray 2.60 Train V2 can leave a training run's placement group behind when its job is stopped
mid-run (a cancel, or Ray stopping the job): the run's controller dies while (re)starting its
worker group and the detached `PlacementGroupCleaner` that should remove the group misses it
(ray-project/ray#62753, #61689). The group stays CREATED and keeps its bundle (1 CPU, or a
GPU share) for good; on a small cluster a single one blocks every later deep run, whose
worker then waits for resources forever (seen in tests/e2e: cancel, then the next job).

A non-detached placement group created by a quantray job that has ended can never be used
again, so each job driver removes those before it plans. Groups of other jobs are left
alone (a detached actor of an ended job may still own its group), and so are detached ones.

The jobs and groups come from Ray's state API, which needs the dashboard. Without one (a
head started with --include-dashboard=false, a test cluster) they come from the GCS tables
instead: jobs from `ray._private.state.jobs()` (dead or alive, with the driver's command
line), groups from `ray.util.placement_group_table()`, whose rows lack the creator job and
the detached flag: the creator is the job id that ends every PlacementGroupID (unique bytes
+ JobID), and quantray jobs create no detached groups (Train's are not). Best effort: when
neither answers, the job goes on and the reason is logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray

log = logging.getLogger("quantray.gc")
ENDED = ("STOPPED", "SUCCEEDED", "FAILED")
ENTRYPOINT_MARK = "ray_jobs.run"  # `python -m ray_jobs.run ...`: a quantray job driver
STATE_LIMIT = 10_000
JOB_ID_HEX = 8  # a JobID is 4 bytes, the last 4 of a PlacementGroupID


def _field(obj: Any, name: str) -> Any:
    """State API rows come as dicts or as schema objects depending on the call."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def ended_quantray_jobs(jobs: list[Any]) -> set[str]:
    """Ray job ids (hex) of quantray drivers that have ended, from `list_jobs` rows."""
    ended = set()
    for job in jobs:
        job_id = _field(job, "job_id")
        metadata = _field(job, "metadata") or {}
        ours = "quantray_job_id" in metadata or ENTRYPOINT_MARK in (
            _field(job, "entrypoint") or ""
        )
        if job_id and ours and str(_field(job, "status")) in ENDED:
            ended.add(str(job_id))
    return ended


def leaked_groups(groups: list[Any], ended_jobs: set[str]) -> list[str]:
    """Ids of the live, non-detached placement groups that an ended quantray job created."""
    return [
        str(_field(g, "placement_group_id"))
        for g in groups
        if str(_field(g, "creator_job_id")) in ended_jobs
        and str(_field(g, "state")) != "REMOVED"
        and not _field(g, "is_detached")
    ]


def _gcs_ended_jobs() -> set[str]:
    """Ended quantray job ids (hex) from the GCS job table: every driver that has
    connected, dead or alive, with its command line."""
    from ray._private.state import jobs as gcs_jobs

    rows = [{"job_id": j.get("JobID"), "status": "FAILED" if j.get("IsDead") else "RUNNING",
             "metadata": {}, "entrypoint": j.get("Entrypoint") or ""}
            for j in gcs_jobs()]  # fmt: skip
    return ended_quantray_jobs(rows)


def _from_gcs() -> tuple[set[str], list[dict[str, Any]]]:
    """(ended quantray job ids, groups as state-API-like rows) from the GCS tables."""
    ended = _gcs_ended_jobs()
    groups = [{"placement_group_id": pg_id, "creator_job_id": pg_id[-JOB_ID_HEX:],
               "state": g.get("state"), "is_detached": False}
              for pg_id, g in ray.util.placement_group_table().items()]  # fmt: skip
    return ended, groups


def orphaned_groups(rows: list[Any], job_hex: str) -> list[str]:
    """Ids (hex) of job `job_hex`'s live, non-detached placement groups whose creator actor
    has died, from the GCS table's `PlacementGroupTableData` rows. Such a group can never
    be used again: its creator (a Train controller) is gone and so are the workers it
    placed in it, but Ray keeps a non-detached group until its job ends. A group the driver
    created (a Tune trial's) has no creator actor (its id is nil) and is left alone."""
    from ray.core.generated import gcs_pb2

    out = []
    for g in rows:
        if (g.creator_job_id.hex() == job_hex and not g.is_detached and g.creator_actor_dead
                and g.state != gcs_pb2.PlacementGroupTableData.REMOVED and g.creator_actor_id
                and not ray.ActorID(g.creator_actor_id).is_nil()):  # fmt: skip
            out.append(g.placement_group_id.hex())
    return out


def remove_orphaned_groups() -> list[str]:
    """Remove this job's placement groups whose creator actor has died (`orphaned_groups`);
    returns their ids. Ray 2.60 Train V2 leaves the worker group of a run whose controller
    was killed (a Tune trial that ASHA stopped, or one that ended) when its detached
    PlacementGroupCleaner cannot reach the state API: on a head without a dashboard, or on a
    host with several Ray instances, where the cleaner's lookup fails. Each such group kept
    a CPU (or a GPU share) for the rest of the job, so a search with more trials than fit at
    once waited for good. The rows come from the GCS table, which names the creator actor
    and whether it died (`placement_group_table()` leaves both out)."""
    from ray._private.state import state as gcs_state
    from ray.core.generated import gcs_pb2

    accessor = gcs_state._connect_and_get_accessor()
    rows = [gcs_pb2.PlacementGroupTableData.FromString(b)
            for b in accessor.get_placement_group_table()]  # fmt: skip
    job = ray.get_runtime_context().get_job_id()
    return _remove_groups(orphaned_groups(rows, job), "whose creator actor (a Train "
                          "controller) had died")


class OrphanSweeper:
    """While a blocking call runs (`tuner.fit()`), remove this job's orphaned groups
    (`remove_orphaned_groups`) every `every_s` in a background thread. Best effort: a
    failed sweep is logged and the job goes on."""

    def __init__(self, every_s: float = 5.0) -> None:
        import threading

        from ray_jobs.stop import calls_ray

        self.every_s = every_s
        self._stop = threading.Event()
        # registered: one stuck on the GCS past __exit__'s join is still in a Ray call
        self._thread = calls_ray(threading.Thread(target=self._loop, name="orphan-sweeper",
                                                  daemon=True))

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                remove_orphaned_groups()  # it logs what it removed
            except Exception as exc:  # best effort, as the other sweeps
                log.warning("looking for orphaned placement groups failed: %s", exc)
            # the cleaners of the trials that ASHA stopped, when they cannot see it
            _stop_stuck_cleaners_logged({ray.get_runtime_context().get_job_id()})

    def __enter__(self) -> OrphanSweeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)  # a daemon: a sweep stuck on the GCS must not eat the
        # grace a cancelled driver has to write its partial results


def remove_leaked_placement_groups() -> list[str]:
    """Remove the placement groups ended quantray jobs left behind, and this job's own
    orphaned groups (`remove_orphaned_groups`); returns their ids."""
    try:
        orphans = remove_orphaned_groups()
    except Exception as exc:  # best effort: the groups of ended jobs are looked for next
        log.warning("could not look for this job's orphaned placement groups: %s", exc)
        orphans = []
    return orphans + _remove_ended_jobs_groups()


def _gcs_dead_drivers() -> set[str]:
    """`_gcs_ended_jobs`, best effort, beside the state API's jobs, which can miss a driver:
    a CI run (2026-11-23) was left with a Train worker group (0.99 CPU) of job 05000000
    after every job was over, and no `list_jobs` row named that job (why is not known; a
    submission's earlier driver folded into its row is one guess). The GCS table lists
    every driver that connected."""
    try:
        return _gcs_ended_jobs()
    except Exception as exc:  # noqa: BLE001 - the state API's answer stands
        log.warning("could not read the GCS job table: %s", exc)
        return set()


def _remove_ended_jobs_groups() -> list[str]:
    """Remove the placement groups ended quantray jobs left behind; returns their ids."""
    from ray.util.state import list_jobs, list_nodes, list_placement_groups

    # This cluster's address, explicitly: left out, the state API picks any Ray it finds.
    query = {"address": ray.get_runtime_context().gcs_address, "limit": STATE_LIMIT,
             "detail": True, "raise_on_missing_output": False, "timeout": 30}  # fmt: skip
    try:
        # The state API finds the dashboard through the GCS and may fall back to another
        # Ray's (127.0.0.1:8265): act only when it describes this cluster's nodes.
        listed = {str(_field(n, "node_id")) for n in list_nodes(**query)}
        if not listed & {str(n["NodeID"]) for n in ray.nodes()}:
            raise RuntimeError("the state API answered for another Ray cluster")
        ended = ended_quantray_jobs(list_jobs(**query)) | _gcs_dead_drivers()
        groups = list_placement_groups(**query) if ended else []
        state_api = True
    except Exception as state_exc:  # no dashboard: the GCS tables
        state_api = False
        try:
            ended, groups = _from_gcs()
        except Exception as exc:
            log.warning("could not look for leaked placement groups (Ray state API: %s; GCS "
                        "tables: %s); a stopped job's groups may still hold resources",
                        state_exc, exc)  # fmt: skip
            return []
    removed = _remove_groups(leaked_groups(groups, ended), "left by stopped jobs")
    if not state_api:  # the cleaners cannot reach it either: none of them will ever exit
        try:
            stopped = stop_orphaned_cleaners(ended)
        except Exception as exc:  # best effort, as above
            log.warning("could not look for orphaned PlacementGroupCleaner actors: %s", exc)
        else:
            if stopped:
                log.warning("stopped %d PlacementGroupCleaner actor(s) of ended jobs (pids "
                            "%s)", len(stopped), ", ".join(map(str, stopped)))  # fmt: skip
    # The driver's state API working says nothing of the cleaners': theirs looks for the
    # cluster without an address and fails on a host with several Ray instances.
    _stop_stuck_cleaners_logged(ended | {ray.get_runtime_context().get_job_id()})
    return removed


class LeakSweeper:
    """Remove ended jobs' groups again every `every_s` while this job waits for its units.
    The check before planning is not enough: a Train controller that outlives its stopped
    job by a moment can create its group after this job looked. (A CI run once saw the
    next jobs' linear tasks wait for good on a 2-CPU head after a cancel; such late groups
    are the likely cause, as they were of the same hang in deep runs.)"""

    def __init__(self, every_s: float = 15.0) -> None:
        self.every_s = every_s
        self._last = time.monotonic()

    def __call__(self) -> list[str]:
        """Sweep when `every_s` has passed since the last sweep; returns the groups removed."""
        if time.monotonic() - self._last < self.every_s:
            return []
        try:
            return remove_leaked_placement_groups()
        except Exception as exc:  # best effort: the job goes on (a stop request passes)
            log.warning("looking for leaked placement groups failed: %s", exc)
            return []
        finally:
            self._last = time.monotonic()


def _live_groups() -> dict[str, dict[str, Any]]:
    """The GCS table's placement groups not yet removed, by id (hex)."""
    return {pg_id: group for pg_id, group in ray.util.placement_group_table().items()
            if group.get("state") not in ("REMOVED", None)}  # fmt: skip


def describe_holders() -> str:
    """What holds the cluster's CPUs and GPUs, for a log line when tasks wait long: free of
    total, and the live placement groups with their creator job. Best effort."""
    try:
        total, free = ray.cluster_resources(), ray.available_resources()
        groups = [f"{pg_id[:12]}.. of job {pg_id[-JOB_ID_HEX:]} {g.get('state')} "
                  f"{list((g.get('bundles') or {}).values())}"
                  for pg_id, g in _live_groups().items()]  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - a diagnostic
        return f"(could not describe the cluster: {exc})"
    held = ", ".join(f"{free.get(r, 0):g} of {total[r]:g} {r} free" for r in ("CPU", "GPU")
                     if r in total)  # fmt: skip
    return (f"{held}; this job is {ray.get_runtime_context().get_job_id()}; live placement "
            f"groups: {'; '.join(groups) if groups else 'none'}")


def remove_own_placement_groups() -> list[str]:
    """Remove every live placement group this job has created; returns their ids. Call it
    only where none can be in use: after a Tune search returned, before the deep runs. A
    group's lifetime is its job's, not its creator actor's, and Ray 2.60 keeps the worker
    group of a trial that ASHA stopped when its cleaner cannot reach the state API (a head
    without a dashboard), so the refit runs waited for that CPU for good."""
    job = ray.get_runtime_context().get_job_id()
    own = [pg_id for pg_id in _live_groups() if pg_id[-JOB_ID_HEX:] == job]
    return _remove_groups(own, "the search left behind")


def _remove_groups(pg_ids: list[str], why: str) -> list[str]:
    """Remove the placement groups `pg_ids` (hex); returns those removed. Best effort: one
    that cannot be removed is logged and does not stop the job."""
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    removed = []
    for pg_id in pg_ids:
        try:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(pg_id)))
            removed.append(pg_id)
        except Exception as exc:
            log.warning("could not remove placement group %s: %s", pg_id, exc)
    if removed:
        log.warning("removed %d placement group(s) %s: %s", len(removed), why,
                    ", ".join(removed))  # fmt: skip
    return removed


CLEANER_CLASS = "PlacementGroupCleaner"


def stop_orphaned_cleaners(ended_jobs: set[str]) -> list[int]:
    """Kill the live PlacementGroupCleaner actors of ended quantray jobs on this node; returns
    their pids. Train V2 starts one detached cleaner per run (pinned to the head node) that
    polls the state API for its controller and exits once it is gone; when the state API
    cannot answer (no dashboard, or a token it does not send) it retries forever, so every
    stopped run left a ~200 MB process behind for good. Called only when the state API
    failed here too: then the cleaners can do nothing, and the groups are removed above.
    (With a working state API a cleaner may still be needed: a controller that outlives its
    job by a moment can create a group after this GC looked, and only its cleaner sees that.)
    By pid: a detached actor of another job has no handle here (`core_worker.kill_actor`
    refuses it), and Ray marks it DEAD when it exits."""
    import os
    import signal

    from ray._private.state import actors as gcs_actors

    if not ended_jobs:
        return []
    node = ray.get_runtime_context().get_node_id()
    stopped = []
    for row in gcs_actors().values():
        pid = row.get("Pid")
        if (row.get("ActorClassName") == CLEANER_CLASS and row.get("State") == "ALIVE"
                and row.get("JobID") in ended_jobs and pid
                and (row.get("Address") or {}).get("NodeID") == node):  # fmt: skip
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                continue
            stopped.append(int(pid))
    return stopped


# A working cleaner sees its controller die within a second or two (it polls every 1 s,
# each lookup bounded by Train's GET_ACTOR_TIMEOUT_S); one whose controller has been dead
# this long never will.
CLEANER_GRACE_S = 60.0


def _address_key(address: Any) -> tuple[str, str] | None:
    """A worker's (node id, port): how a GCS actor row names its owner's process."""
    if not isinstance(address, dict) or not address.get("NodeID") or not address.get("Port"):
        return None
    return str(address["NodeID"]), str(address["Port"])


def stuck_cleaners(actors: dict[str, dict[str, Any]], jobs: set[str], now_ms: float,
                   grace_s: float = CLEANER_GRACE_S) -> dict[str, str]:  # fmt: skip
    """{cleaner actor id: its controller's actor id} for the live PlacementGroupCleaner
    actors of `jobs` whose controller died more than `grace_s` before `now_ms`, from the
    GCS actor table (`ray._private.state.actors()`: times in ms).

    Ray 2.60's cleaner asks the state API whether its controller lives, with no address:
    Ray then looks for the cluster on the host, and on a host with several Ray instances
    (or none it can name) that raises "Found multiple active Ray instances", a
    ConnectionError the cleaner's loop does not catch. Its thread ends, the actor lives on,
    idle, for good (~200 MB each, one per Train run whose controller died: every trial
    ASHA stopped, every stopped job's runs) and never removes its group. Whether the
    driver's own state API works says nothing about that, so the cleaner is judged by what
    it was for: its controller (the actor whose process owns it, matched by node and port,
    the latest such actor of its job started before it) has been dead for `grace_s`."""
    by_address: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    for actor_id, row in actors.items():
        key = _address_key(row.get("Address"))
        if key:
            by_address.setdefault(key, []).append((actor_id, row))
    out = {}
    for actor_id, row in actors.items():
        if (row.get("ActorClassName") != CLEANER_CLASS or row.get("State") != "ALIVE"
                or row.get("JobID") not in jobs):  # fmt: skip
            continue
        key = _address_key(row.get("OwnerAddress"))
        started = row.get("StartTime") or 0
        owners = [(a, r) for a, r in by_address.get(key, []) if key and a != actor_id
                  and r.get("JobID") == row.get("JobID")
                  and (r.get("StartTime") or 0) <= started]  # fmt: skip
        if not owners:
            continue
        controller_id, controller = max(owners, key=lambda o: o[1].get("StartTime") or 0)
        ended = controller.get("EndTime") or 0
        if controller.get("State") == "DEAD" and ended and now_ms - ended >= grace_s * 1000:
            out[actor_id] = controller_id
    return out


def stop_stuck_cleaners(jobs: set[str], grace_s: float | None = None) -> list[str]:
    """Do the work of the `stuck_cleaners` of `jobs` and stop them; returns their actor ids.
    First the live placement groups their dead controllers created are removed (what the
    cleaner was for; a dead controller makes no more), then each cleaner on this node is
    killed by pid (`stop_orphaned_cleaners` says why by pid). A stuck cleaner on another
    node (a driver not on the head, where Train pins them) is logged once and left."""
    import os
    import signal

    from ray._private.state import actors as gcs_actors

    if not jobs:
        return []
    rows = gcs_actors()
    stuck = stuck_cleaners(rows, jobs, time.time() * 1000,
                           CLEANER_GRACE_S if grace_s is None else grace_s)  # fmt: skip
    if not stuck:
        return []
    _remove_controller_groups(set(stuck.values()))
    node = ray.get_runtime_context().get_node_id()
    stopped = []
    for cleaner_id in stuck:
        row = rows[cleaner_id]
        if (row.get("Address") or {}).get("NodeID") != node:
            if cleaner_id not in _FOREIGN_CLEANERS_LOGGED:
                _FOREIGN_CLEANERS_LOGGED.add(cleaner_id)
                log.warning("PlacementGroupCleaner actor %s (pid %s on node %s) outlived its "
                            "controller and cannot be stopped from this node: its groups "
                            "are removed; stop that pid by hand to free its memory",
                            cleaner_id, row.get("Pid"),
                            str((row.get("Address") or {}).get("NodeID"))[:12])  # fmt: skip
            continue
        try:
            os.kill(int(row["Pid"]), signal.SIGKILL)
        except (ProcessLookupError, KeyError, TypeError, ValueError):
            continue
        stopped.append(cleaner_id)
    return stopped


_FOREIGN_CLEANERS_LOGGED: set[str] = set()


def _remove_controller_groups(controller_ids: set[str]) -> list[str]:
    """Remove the live placement groups that the (dead) actors `controller_ids` created."""
    from ray._private.state import state as gcs_state
    from ray.core.generated import gcs_pb2

    accessor = gcs_state._connect_and_get_accessor()
    ids = [g.placement_group_id.hex()
           for g in map(gcs_pb2.PlacementGroupTableData.FromString,
                        accessor.get_placement_group_table())
           if g.creator_actor_id.hex() in controller_ids and not g.is_detached
           and g.state != gcs_pb2.PlacementGroupTableData.REMOVED]  # fmt: skip
    return _remove_groups(ids, "whose Train controller had died (its cleaner was stuck)")


def _stop_stuck_cleaners_logged(jobs: set[str]) -> None:
    """`stop_stuck_cleaners`, best effort and logged."""
    try:
        stopped = stop_stuck_cleaners(jobs)
    except Exception as exc:  # noqa: BLE001 - best effort, as the other sweeps
        log.warning("could not look for stuck PlacementGroupCleaner actors: %s", exc)
        return
    if stopped:
        log.warning("stopped %d PlacementGroupCleaner actor(s) whose Train controller died "
                    "over %.0f s ago but which could not see it: %s", len(stopped),
                    CLEANER_GRACE_S, ", ".join(stopped))  # fmt: skip
