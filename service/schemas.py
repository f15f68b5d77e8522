"""Pydantic models of the HTTP API (the edge only; the layers below use dataclasses)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from ray_jobs.stop import WRITING_RESULTS
from service.job_files import Progress
from service.store import FINAL, JobRecord

SPEC_EXAMPLE: dict[str, Any] = {
    "name": "sp500-weekly",
    "dataset": {"uri": "sample:sp500", "symbols": 5, "start": "2013-02-08", "end": "2018-02-07"},
    "target": {"kind": "direction", "horizons": [1, 5, 10, 20], "threshold": "auto"},
    "features": {"set": "technical", "seq_len": 60},
    "split": {"method": "holdout", "train": 0.7, "val": 0.15, "test": 0.15, "embargo": 5},
    "models": ["ols", "ridge", "lstm"],
    "preset": "fast",
    "overrides": {"lstm": {"hidden_size": 128}},
    "tune": {"num_samples": 0},
    "seed": 42,
}
SPEC_YAML_EXAMPLE = """name: sp500-weekly
dataset: {uri: "sample:sp500", symbols: 5}
target: {kind: direction, horizons: [1, 5, 10, 20]}
models: [ols, ridge, lstm]
preset: fast
"""


class ErrorItem(BaseModel):
    field: str = Field(description="Dotted path of the offending field, '' for the whole body")
    message: str


class ErrorPublic(BaseModel):
    error: str = Field(description="Machine-readable error kind", examples=["invalid"])
    message: str = Field(description="What is wrong and how to fix it")
    errors: list[ErrorItem] = Field(default_factory=list)


class ProgressPublic(BaseModel):
    phase: str | None = Field(description="planning, preparing, training, tuning, reporting...")
    message: str | None
    units_total: int | None
    units_done: int | None
    units_failed: int
    units_running: int | None = Field(description="units training now")
    units_starting: int | None = Field(
        None, description="deep units whose TorchTrainer run is starting up (tens of seconds)")
    units_pending: int | None = Field(
        None, description="units waiting for a task or a run slot; done + failed + running "
        "+ starting + pending = total while the job is queued or running. An ended job runs "
        "nothing: its running, starting and pending read 0, and total - done - failed units "
        "did not finish")
    fraction: float | None = Field(description="(done + failed) / total")
    eta_seconds: float | None
    stale: bool = Field(
        False, description="true for an ended job whose driver did not write its end (it was "
        "killed, or died): phase and message are the driver's last report, not live")


class RayPublic(BaseModel):
    submission_id: str | None
    dashboard_url: str | None


class JobPublic(BaseModel):
    id: str = Field(examples=["qr-5f3a9c2e1b7d4a60"])
    name: str
    status: str = Field(
        description="queued | running | succeeded | failed | cancelled | interrupted"
    )
    owner: str
    attempt: int = Field(description="0 for the first run, +1 per resume of a run that "
                         "reached Ray (a job cancelled while queued keeps its number)")
    cancel_requested: bool
    message: str | None
    errors: list[dict[str, Any]] = Field(description="Per-unit errors ({unit_id, error})")
    created_at: str
    updated_at: str
    started_at: str | None
    finished_at: str | None
    ray: RayPublic
    progress: ProgressPublic | None = None
    progress_error: str | None = None
    links: dict[str, str]
    spec: dict[str, Any] | None = None


class JobsPublic(BaseModel):
    items: list[JobPublic]
    total: int
    page: int
    page_size: int
    next: str | None = Field(description="URL of the next page, null on the last one")


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def job_public(
    job: JobRecord,
    *,
    dashboard_url: str | None,
    progress: Progress | None = None,
    progress_error: str | None = None,
    with_spec: bool = False,
) -> JobPublic:
    base = f"/v1/jobs/{job.id}"
    links = {
        "self": base,
        "cancel": f"{base}/cancel",
        "resume": f"{base}/resume",
        "results": f"{base}/results",
        "summary": f"{base}/summary",
        "logs": f"{base}/logs",
        "artifacts": f"{base}/artifacts",
    }
    if dashboard_url:
        links["ray_dashboard"] = dashboard_url
    return JobPublic(
        id=job.id,
        name=job.name,
        status=job.status,
        owner=job.owner,
        attempt=job.attempt,
        cancel_requested=job.cancel_requested,
        message=job.message,
        # Final jobs carry their errors; a running one shows what progress.json reports.
        errors=job.errors or (progress.errors if progress is not None else []),
        created_at=iso(job.created_at) or "",
        updated_at=iso(job.updated_at) or "",
        started_at=iso(job.started_at),
        finished_at=iso(job.finished_at),
        ray=RayPublic(submission_id=job.ray_submission_id, dashboard_url=dashboard_url),
        progress=None
        if progress is None
        else _progress_public(progress, ended=job.status in FINAL),
        progress_error=progress_error,
        links=links,
        spec=job.spec if with_spec else None,
    )


# The phases a driver writes as it ends (`ray_jobs.progress.PHASES`): an ended job's
# progress.json in any other phase is what its driver last wrote before it was cut off
END_PHASES = frozenset({"succeeded", "failed", "stopped"})


def _progress_public(progress: Progress, *, ended: bool) -> ProgressPublic:
    """An ended job's progress.json may be its dead driver's last (killed mid-training:
    "training", 1 running, 1 pending): nothing runs or waits now, and it is marked stale,
    so a client does not take it for work that goes on."""

    def idle(count: int | None) -> int | None:
        return 0 if ended and count is not None else count

    return ProgressPublic(
        phase=progress.phase,
        message=progress.message,
        units_total=progress.units_total,
        units_done=progress.units_done,
        units_failed=progress.units_failed,
        units_running=idle(progress.units_running),
        units_starting=idle(progress.units_starting),
        units_pending=idle(progress.units_pending),
        fraction=progress.fraction,
        # an ended job has nothing left to wait for (its last progress.json may still
        # hold the ETA of when it was stopped)
        eta_seconds=None if ended else progress.eta_seconds,
        # also a driver killed while it wrote a stopped job's results (its grace ran out)
        stale=ended and (progress.phase not in END_PHASES or (
            progress.phase == "stopped" and WRITING_RESULTS in (progress.message or ""))),
    )
