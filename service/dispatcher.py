"""The dispatcher: keeps at most `max_running_jobs` jobs on Ray, oldest queued first, and
mirrors Ray's job states into the job table.

One `tick()` = sync every job Ray has (or may have) with Ray's answer, then submit queued
jobs into the free slots. Reconciling after a restart is the same sync: a job whose
submission Ray no longer knows becomes `interrupted` (resumable), or `cancelled` when a
cancel was requested. DB and storage calls are blocking, so they run in worker threads;
Ray calls are async httpx.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from ray_jobs.stop import RESULTS_WRITTEN
from ray_jobs.storage import StorageError
from service.job_files import JobFiles, Progress
from service.ray_client import (
    RayAuthError,
    RayError,
    RayJobInfo,
    RayJobsClient,
    RaySubmissionExists,
    RayUnavailable,
)
from service.store import JobRecord, JobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What a Ray state means for our job: new status, a message, per-unit errors."""

    status: str
    message: str | None = None
    errors: tuple[dict, ...] = ()


# The exception line of a driver that died of its storage (its traceback's end)
STORAGE_FAILURE = f"{StorageError.__module__}.{StorageError.__qualname__}"
# ... and what `ray_jobs.reporting._check_job_files_are_there` says when the job's files
# (its spec.json too) were deleted under it: nothing is left to resume
FILES_GONE = ("its files were deleted, or its bucket was removed or replaced",
              "must be submitted again")
INPUT_ERROR_EXIT = 2  # `ray_jobs.run`: unusable input (no usable symbol); progress says why
# How long a job that ended on Ray waits for the job storage to answer (its progress.json
# says what it finished) before it is settled without it
STORAGE_WAIT_S = 600.0


def map_ray_state(
    info: RayJobInfo, *, cancel_requested: bool, progress: Progress | None
) -> Outcome:
    """PENDING/RUNNING -> running; SUCCEEDED -> succeeded, or failed when progress reports
    failed units; FAILED -> failed; STOPPED -> cancelled if we asked, else interrupted."""
    if info.status in ("PENDING", "RUNNING"):
        return Outcome("running")
    bad_input = info.status == "FAILED" and info.driver_exit_code == INPUT_ERROR_EXIT
    finished_with_failures = progress is not None and progress.units_failed > 0 and (
        info.status == "SUCCEEDED" or progress.phase == "failed"
    ) and not bad_input  # ran to the end (exit status 1 = some units failed): its summary
    if finished_with_failures:
        total = progress.units_total if progress.units_total is not None else "?"
        return Outcome(
            "failed",
            f"{progress.units_failed} of {total} units failed; partial results kept"
            + _data_failures(progress.errors, progress.units_done or 0),
            tuple(progress.errors),
        )
    if info.status == "SUCCEEDED":
        return Outcome("succeeded")
    if info.status == "FAILED":
        errors = tuple(progress.errors) if progress is not None else ()
        if progress is not None and progress.phase == "failed" and progress.message:
            return Outcome("failed", progress.message, errors)  # the driver's own reason
        killed = killed_by(info.driver_exit_code)
        job = info.metadata.get("quantray_job_id") or "ID"
        if killed and progress is not None and progress.phase == "succeeded":
            # killed after it wrote every result: nothing is missing, nothing to resume
            return Outcome("succeeded", (
                f"all units done and the results written; the driver was then ended by "
                f"{killed} before it exited"))
        if killed:  # not the job's fault: say so, and how to go on
            where = f" in phase {progress.phase!r}" if progress is not None else ""
            done = "" if progress is None or progress.units_done is None else (
                f" with {progress.units_done}"
                + (f" of {progress.units_total}" if progress.units_total is not None else "")
                + " units done")
            why = ("by hand, or out of memory" if killed == "SIGKILL" else
                   "sent to the driver itself, not a cancel through the API")
            return Outcome("failed", (
                f"the job's driver was ended by {killed}{where}{done} ({why}); what finished "
                f"is kept in storage: resume the job (quantray resume {job}, POST "
                f"/v1/jobs/{job}/resume) to train the rest; its log: GET "
                f"/v1/jobs/{job}/logs"), errors)  # fmt: skip
        kind = f" ({info.error_type})" if info.error_type else ""
        died_of = _final_error(info.message or "")
        if died_of.startswith(STORAGE_FAILURE) and any(s in died_of for s in FILES_GONE):
            # the driver found the job's own spec.json gone (`ray_jobs.reporting`): a resume
            # fails the same way (the API refuses it: no spec.json) until they are back
            return Outcome("failed", (
                "the job's files are gone from the job storage (QUANTRAY_STORAGE_URI): they "
                "were deleted, or their bucket was removed or replaced, while the job ran: "
                f"submit it again (its spec: GET /v1/jobs/{job}), or resume it once its files "
                f"are back where they were. The error: {died_of[:MESSAGE_TAIL]} (the whole "
                f"log: GET /v1/jobs/{job}/logs)"), errors)  # fmt: skip
        if died_of.startswith(STORAGE_FAILURE):
            return Outcome("failed", (
                "the job storage was unavailable, so the job's driver could not record its "
                "work: once QUANTRAY_STORAGE_URI's storage answers, resume the job (POST "
                f"/v1/jobs/{job}/resume; what it stored before is skipped). The error: "
                f"{died_of[:MESSAGE_TAIL]} (the whole log: GET /v1/jobs/{job}/logs)"), errors)
        return Outcome("failed", f"Ray job failed{kind}: {_log_tail(info.message, job)}",
                       errors)
    if info.status == "STOPPED":
        if cancel_requested:
            ended = 0 if progress is None else (progress.units_done or 0) + progress.units_failed
            if not ended:
                return Outcome("cancelled",
                               "cancelled on request before any unit ended; resume runs it")
            if progress.phase in ("succeeded", "failed"):  # asked while writing the report
                return Outcome("cancelled", (
                    "cancelled on request as the job wrote its results: all its units had "
                    "ended, and the results are complete"))
            if progress.phase == "stopped" and RESULTS_WRITTEN in (progress.message or ""):
                return Outcome("cancelled", "cancelled on request; partial results kept")
            # Ray killed the driver at the end of its grace: while it wrote the results
            # (its "stopped" phase), or before it began
            when = ("and the driver was stopped while it wrote their leaderboard and plots, "
                    "which may be incomplete" if progress.phase == "stopped" else
                    "but the driver was stopped before it wrote their leaderboard and plots")
            job = info.metadata.get("quantray_job_id") or "ID"
            return Outcome("cancelled", (
                f"cancelled on request; {ended} units had ended, {when}: their files are "
                f"kept (GET /v1/jobs/{job}/artifacts), and a resume (POST "
                f"/v1/jobs/{job}/resume) trains the rest and writes the results"))
        return Outcome(
            "interrupted",
            f"Ray stopped the job without a cancel request: {info.message or ''}".strip(),
        )
    raise ValueError(f"unknown Ray job status {info.status!r}")


def _data_failures(errors: list[dict] | tuple[dict, ...], done: int = 0) -> str:
    """What to do about units that failed on their symbol's data: a resume retries them on
    the same data, so they fail again until the data is fixed; and once it is, a resume is
    refused if other units finished (trained on the data as it was: `ray_jobs.driver.
    dataset_changes`), so the fixed symbols go in a new job."""
    symbols = sorted({str(e.get("unit_id", "")).split("__")[0] for e in errors
                      if str(e.get("error", "")).startswith("data:")})  # fmt: skip
    if not symbols:
        return ""
    which = f"the data of {', '.join(symbols[:5])}{' ...' if len(symbols) > 5 else ''}"
    why = ("could not be used (see each unit's error: bad rows, or too few in the job's "
           "dates)")
    if not done:
        return (f"; {which} {why}: a resume retries those units on the data as it is then, "
                "so fix the data first, then resume, or submit a job with wider dates or "
                "without those symbols")
    return (f"; {which} {why}: a resume retries those units on the same data and dates, "
            "and is refused once the data changed (its other units were trained on it as it "
            "was), so fix the data and submit a job for those symbols, or one with wider "
            "dates or without them")


STOP_GRACE_S = 30  # a cancelled driver writes its partial results before Ray's SIGKILL


def with_stop_grace(runtime_env: dict) -> dict:
    """`runtime_env` with RAY_JOB_STOP_WAIT_TIME_S (Ray's wait between SIGTERM and SIGKILL
    on a stop, read by the job's supervisor from these env vars; 3 s by default) raised
    to STOP_GRACE_S, unless the operator set it."""
    env_vars = dict(runtime_env.get("env_vars") or {})
    env_vars.setdefault("RAY_JOB_STOP_WAIT_TIME_S", str(STOP_GRACE_S))
    return {**runtime_env, "env_vars": env_vars}


MESSAGE_TAIL = 2000  # characters of a crashed driver's log kept in the job's message
LINE_SLACK = 500  # ... and up to this many more, to begin at the start of a line


def killed_by(exit_code: int | None) -> str | None:
    """The signal that ended the driver ('SIGKILL'), from Ray's `driver_exit_code`: -N for a
    process the signal ended, 128 + N where the shell that runs the entrypoint reports it;
    None for an ordinary exit status."""
    import signal

    if exit_code is None:
        return None
    number = -exit_code if exit_code < 0 else exit_code - 128 if exit_code > 128 else None
    try:
        return signal.Signals(number).name if number else None
    except ValueError:
        return None


def _log_tail(message: str | None, job: str = "ID") -> str:
    """Ray's message for a failed entrypoint carries up to 20,000 characters of its log,
    mostly progress lines; the cause is at the end. The full log stays at /logs."""
    if not message:
        return "no message"
    if len(message) <= MESSAGE_TAIL:
        return message
    start = len(message) - MESSAGE_TAIL
    # from the start of the line the cut falls in ("...nit status ... cannot be parsed" was
    # a line cut mid-word), unless that line is long itself
    line_start = message.rfind("\n", 0, start) + 1
    if start - line_start <= LINE_SLACK:
        start = line_start
    cut = "... " if start > 0 else ""
    return f"{cut}{message[start:]} (the whole log: GET /v1/jobs/{job}/logs)"


# "ray_jobs.storage.StorageError: write s3://...", "ValueError: ..." (a traceback's end)
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception|Exit|"
                         r"Interrupt|Cancelled)\b(?::|$)")


def _final_error(message: str) -> str:
    """The last exception line of a driver's log (its traceback's end: what it died of).
    Its workers' lines may follow it in Ray's message, and an earlier traceback of a
    handled error (a logged warning) may precede it."""
    lines = [ln.strip() for ln in message.splitlines() if _ERROR_LINE.match(ln.strip())]
    return lines[-1] if lines else ""



def submission_id(job: JobRecord, attempt: int | None = None) -> str:
    """Ray refuses to reuse a submission id, so each resume gets a new one: the job id for
    the first attempt, `{job_id}-r{attempt}` after that (`attempt`: the job's own, or an
    earlier one). The job id itself never changes."""
    attempt = job.attempt if attempt is None else attempt
    return job.id if attempt == 0 else f"{job.id}-r{attempt}"


class Dispatcher:
    """Owns the job table <-> Ray synchronisation for one API process."""

    def __init__(
        self,
        store: JobStore,
        ray: RayJobsClient | None,
        files: JobFiles,
        *,
        max_running_jobs: int,
        storage_uri: str,
        entrypoint_python: str = "python",
        runtime_env: dict | None = None,
    ) -> None:
        if ray is None and max_running_jobs > 0:
            raise ValueError("a Dispatcher with max_running_jobs > 0 needs a Ray client")
        self.store = store
        self.ray = ray
        self.files = files
        self.max_running_jobs = max_running_jobs
        self.storage_uri = storage_uri
        self.entrypoint_python = entrypoint_python
        self.runtime_env = with_stop_grace(runtime_env or {})
        self.last_error: str | None = None
        self.last_tick_at: float | None = None
        # (since, error) while every submission fails on Ray's side: a dashboard can answer
        # GETs while each POST /api/jobs/ fails ("No available agent to submit job": its job
        # agent is down), so /readyz reports this beside its own probe of Ray.
        self.submit_failing: tuple[float, str] | None = None
        # Ray submission id -> when its ended job's progress.json first could not be read
        # (`_await_storage`)
        self._unread_since: dict[str, float] = {}

    def entrypoint(self, job: JobRecord) -> str:
        return shlex.join(
            [self.entrypoint_python, "-m", "ray_jobs.run", "--job-id", job.id,
             "--storage", self.storage_uri, "--attempt", str(job.attempt)]
        )  # fmt: skip

    async def tick(self) -> None:
        """Sync with Ray, then fill free slots. Ray being down (or refusing our token) is
        logged, not raised: the next tick retries and /readyz reports it."""
        try:
            if self.ray is not None:
                await self.sync()
            await self.submit_queued()
            self.last_error = None
            # a failing submission raises: here, none failed (or none waits to be made any
            # more: its job was cancelled), so nothing is held up
            self.submit_failing = None
        except RayError as exc:
            self.last_error = str(exc)
            log.warning("dispatcher: %s", exc)
        self.last_tick_at = time.time()

    async def reconcile(self) -> None:
        """At startup, before serving: mirror Ray's view of every job it should have (those
        it lost become `interrupted`). Submitting waits for the background loop, so a slow
        Ray cannot hold up the API's start."""
        if self.ray is None:
            return
        try:
            await self.sync()
        except RayError as exc:
            self.last_error = str(exc)
            log.warning("reconcile at startup skipped, Ray not reachable: %s", exc)

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:  # keep dispatching; the traceback goes to the log
                log.exception("dispatcher tick failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                pass

    async def sync(self) -> None:
        assert self.ray is not None
        for job in await asyncio.to_thread(self.store.on_ray):
            sid = job.ray_submission_id
            assert sid is not None or job.status == "running"
            info = await self.ray.get(sid) if sid else None
            if info is None:
                await self._vanished(job)
            else:
                await self._apply(job, info)

    async def _vanished(self, job: JobRecord) -> None:
        if job.status == "queued":
            # We claimed it but the POST never reached Ray (crash or Ray down): submit now.
            if job.cancel_requested:
                await asyncio.to_thread(
                    self.store.transition, job.id, "queued", status="cancelled",
                    finished_at=time.time(), message="cancelled before it started",
                )  # fmt: skip
            else:
                await self._post(job)
            return
        await self._lost(job, f"Ray has no record of submission {job.ray_submission_id} (the "
                         "Ray head was restarted or the job was deleted)")

    async def head_stopped(self, why: str) -> None:
        """The Ray head this API started is gone (`quantray serve` stopped it on exit): its
        running jobs are `interrupted` (resumable) now, not `running` until the next start.
        A queued job with a submission id stays queued: the next start submits it again."""
        for job in await asyncio.to_thread(self.store.on_ray):
            if job.status == "running":
                await self._lost(job, why)

    async def _lost(self, job: JobRecord, lost: str) -> None:
        """A running job whose Ray side is gone: cancelled if that was asked, else
        interrupted."""
        if job.cancel_requested:  # asked to stop while Ray was away: it has stopped
            await asyncio.to_thread(
                self.store.transition, job.id, "running", status="cancelled",
                finished_at=time.time(),
                message=f"cancelled on request; {lost}: what finished is kept, resume the job "
                "to train the rest",
            )  # fmt: skip
            return
        await asyncio.to_thread(
            self.store.transition, job.id, "running", status="interrupted",
            finished_at=time.time(), message=f"{lost}; resume the job to continue",
        )  # fmt: skip

    async def _apply(self, job: JobRecord, info: RayJobInfo) -> None:
        assert self.ray is not None
        if job.status == "queued":
            # Submitted before a crash, never marked running: adopt it.
            adopted = await asyncio.to_thread(
                self.store.transition, job.id, "queued", status="running", started_at=time.time()
            )
            if not adopted:
                return
        progress = None
        if info.status in ("SUCCEEDED", "FAILED", "STOPPED"):  # ended: what did it finish?
            try:
                progress = await asyncio.to_thread(self.files.read_progress, job.id, job.attempt)
            except ValueError as exc:
                log.warning("job %s: unreadable progress.json: %s", job.id, exc)
            except OSError as exc:
                # The storage does not answer: what the job finished (so its final status)
                # is unknown. Settle it at a later tick, and go on with the other jobs.
                log.warning("job %s ended on Ray (%s); its progress.json cannot be read "
                            "yet, settled once the storage answers: %s", job.id, info.status,
                            exc)  # fmt: skip
                await self._await_storage(job, info)
                return
            self._unread_since.pop(info.submission_id, None)
        outcome = map_ray_state(info, cancel_requested=job.cancel_requested, progress=progress)
        if outcome.status == "failed" and progress is None:
            outcome = await self._storage_cause(outcome)
        if outcome.status == "running":
            if job.cancel_requested:
                await self.ray.stop(info.submission_id)  # re-sent until Ray reports STOPPED
            return
        await self._settle(job, info, outcome)

    async def _settle(self, job: JobRecord, info: RayJobInfo, outcome: Outcome) -> None:
        message = outcome.message
        if job.cancel_requested and info.status in ("SUCCEEDED", "FAILED"):
            # the stop came too late (the driver had ended, or ended before Ray stopped it):
            # the status is the job's own, and the cancel must not look lost
            message = "; ".join(m for m in (message, (
                f"the cancel requested did not act: the job ended on Ray ({info.status}) "
                "before the cancel could stop it")) if m)  # fmt: skip
        await asyncio.to_thread(
            self.store.transition, job.id, "running", status=outcome.status,
            message=message, errors=list(outcome.errors), finished_at=time.time(),
        )  # fmt: skip

    async def _await_storage(self, job: JobRecord, info: RayJobInfo) -> None:
        """A job ended on Ray while the storage does not answer: its message says so (it
        would show `running` alone, with its dead driver's last progress) until the storage
        answers, and after STORAGE_WAIT_S it is settled without its progress.json: a
        storage that never comes back must not leave it `running` for ever."""
        now = time.time()
        since = self._unread_since.setdefault(info.submission_id, now)
        where = self.files.storage_uri
        if now - since >= STORAGE_WAIT_S:
            self._unread_since.pop(info.submission_id, None)
            outcome = map_ray_state(info, cancel_requested=job.cancel_requested, progress=None)
            waited = (f"the job storage ({where}) did not answer for {STORAGE_WAIT_S / 60:g} "
                      f"minutes after the job's driver ended on Ray ({info.status})")
            if outcome.status == "failed":
                outcome = Outcome("failed", (
                    f"{waited}, so what the job finished is not known: once the storage "
                    f"answers, resume the job (POST /v1/jobs/{job.id}/resume, `quantray resume "
                    f"{job.id}`; what it stored is skipped); Ray's report: {outcome.message}"),
                    outcome.errors)  # fmt: skip
            elif outcome.status == "cancelled":  # what it finished is not known either
                outcome = Outcome("cancelled", (
                    f"cancelled on request; {waited}, so what it finished is not known: once "
                    f"the storage answers, its results and artifacts say it, and a resume "
                    f"goes on (POST /v1/jobs/{job.id}/resume)"), outcome.errors)
            else:  # Ray's state alone gives the status (a driver exits 0 with all written)
                outcome = Outcome(outcome.status, "; ".join(
                    m for m in (outcome.message, f"{waited}: its progress was not read") if m))
            await self._settle(job, info, outcome)
            return
        deadline = datetime.fromtimestamp(since + STORAGE_WAIT_S, UTC).isoformat(
            timespec="seconds")
        then = map_ray_state(info, cancel_requested=job.cancel_requested, progress=None).status
        cancel = ("; the cancel requested cannot act: the job had already ended on Ray"
                  if job.cancel_requested and info.status != "STOPPED" else "")
        message = (f"the job's driver ended on Ray ({info.status}); its final status waits "
                   f"for the job storage ({where}), which does not answer: it is settled "
                   f"once the storage answers, or at {deadline} as {then} if it still does "
                   f"not (its progress below is the driver's last){cancel}")  # fmt: skip
        if job.message != message:
            await asyncio.to_thread(self.store.transition, job.id, "running", message=message)

    async def _storage_cause(self, outcome: Outcome) -> Outcome:
        """A driver that failed without any progress.json while the storage is down (a
        missing bucket reads as no file) failed because of it: say so first, Ray's log tail
        after (mostly its workers' noise then)."""
        try:
            await asyncio.to_thread(self.files.check)
        except OSError as exc:
            message = (f"the job storage is unavailable ({exc}), so the job's driver could "
                       "not record its work: fix QUANTRAY_STORAGE_URI's storage, then resume "
                       f"the job (what it stored before is skipped); {outcome.message}")
            return Outcome("failed", message, outcome.errors)
        return outcome

    async def submit_queued(self) -> None:
        if self.max_running_jobs <= 0:
            return
        active = len(await asyncio.to_thread(self.store.on_ray))
        free = self.max_running_jobs - active
        if free <= 0:
            return
        for job in await asyncio.to_thread(self.store.queued, free):
            sid = submission_id(job)
            # the cap again, in the claim itself: another API replica may have claimed
            # since `active` was counted
            if await asyncio.to_thread(self.store.claim_for_submission, job, sid,
                                       self.max_running_jobs):  # fmt: skip
                await self._post(await asyncio.to_thread(self.store.get, job.id))

    async def _post(self, job: JobRecord) -> None:
        assert self.ray is not None and job.ray_submission_id is not None
        sid = job.ray_submission_id
        try:
            await self.ray.submit(
                entrypoint=self.entrypoint(job),
                submission_id=sid,
                runtime_env=self.runtime_env,
                metadata={"quantray_job_id": job.id, "quantray_owner": job.owner,
                          "quantray_attempt": str(job.attempt)},
            )  # fmt: skip
        except RaySubmissionExists:
            log.info("job %s: Ray already has submission %s; adopting it", job.id, sid)
        except (RayUnavailable, RayAuthError) as exc:
            since = self.submit_failing[0] if self.submit_failing else time.time()
            self.submit_failing = (since, str(exc))
            raise  # not the job's fault: it stays queued with its submission id; retried
        except RayError as exc:
            self.submit_failing = None  # Ray answered: the job is at fault, not Ray
            await asyncio.to_thread(
                self.store.transition, job.id, "queued", status="failed",
                finished_at=time.time(), message=f"Ray rejected the submission: {exc}",
            )  # fmt: skip
            return
        self.submit_failing = None
        started = await asyncio.to_thread(
            self.store.transition, job.id, "queued", status="running", started_at=time.time()
        )
        if not started:
            # Cancelled while we were submitting: make sure it does not run.
            await self.ray.stop(sid)
