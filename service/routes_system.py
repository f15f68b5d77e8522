"""/healthz, /readyz, /metrics and /v1/models."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from ray_jobs import spec as job_spec
from service.deps import PrincipalDep, StateDep, reject_unknown_query
from service.errors import ApiError
from service.ray_client import RayError
from service.schemas import ErrorPublic

router = APIRouter(tags=["system"])
CATALOG_FILE = "model_catalog.json"
READY_PROBE_ID = "quantray-readyz-probe"  # never a job's submission id (`qr-...`)


@router.get("/healthz", summary="Liveness: the process serves requests")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database, storage and Ray (unless queue-only) reachable, and Ray "
    "taking jobs (the last submission did not fail); a 503 names what is down",
    responses={503: {"description": "Not ready: `down` names what is down, `checks` why"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    checks: dict[str, str] = {}

    def database() -> None:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    for name, probe, setting in (("database", database, "QUANTRAY_DATABASE_URL"),
                                 ("storage", state.files.check, "QUANTRAY_STORAGE_URI")):
        try:
            await run_in_threadpool(probe)
            checks[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; report it, do not raise
            fix = "" if setting in str(exc) else f" (check {setting} and its server)"
            checks[name] = f"down: {type(exc).__name__}: {exc}{fix}"
    if state.ray is None:  # Settings.require_ray: only a queue-only server has no Ray
        checks["ray"] = ("not used: this server only queues jobs (QUANTRAY_MAX_RUNNING_JOBS=0, "
                         "no QUANTRAY_RAY_ADDRESS); another server runs them")
    else:
        try:
            version = await state.ray.version()
            # The dashboard answers /api/version on its own, even when the head's GCS is
            # gone; a job lookup (a 404 for this id) needs the GCS, as every dispatch does.
            await state.ray.get(READY_PROBE_ID)
            checks["ray"] = f"ok (Ray {version.get('ray_version', '?')})"
        except RayError as exc:
            checks["ray"] = f"down: {exc}"
        failing = state.dispatcher.submit_failing
        if failing is not None and not checks["ray"].startswith("down"):
            since, error = failing
            checks["ray"] = (
                f"down: the Ray dashboard answers, but job submissions have failed since "
                f"{datetime.fromtimestamp(since, UTC).isoformat(timespec='seconds')} "
                f"({max(0, round(time.time() - since))} s ago), so jobs stay queued: {error}")
    down = sorted(name for name, result in checks.items() if result.startswith("down"))
    body = {
        "status": "ready" if not down else "not ready",
        "down": down,
        "checks": checks,
        "dispatcher": {
            "max_running_jobs": state.settings.max_running_jobs,
            "last_error": state.dispatcher.last_error,
        },
    }
    return JSONResponse(body, status_code=503 if down else 200)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def read_catalog() -> dict[str, Any] | None:
    """`ray_jobs/model_catalog.json` (exported from the model registry), if it ships."""
    resource = resources.files("ray_jobs").joinpath(CATALOG_FILE)
    if not resource.is_file():
        return None
    try:
        return json.loads(resource.read_text())
    except ValueError as exc:
        raise ApiError(
            500, "corrupt", f"ray_jobs/{CATALOG_FILE} is not valid JSON ({exc}): re-export it"
        ) from None


@router.get(
    "/v1/models", tags=["models"], summary="Model kinds, presets and search spaces",
    dependencies=[Depends(reject_unknown_query)],
    responses={401: {"model": ErrorPublic, "description": "Missing, invalid or revoked API key"},
               422: {"model": ErrorPublic, "description": "An unknown query parameter"}},
)  # fmt: skip
def models(_: PrincipalDep) -> dict[str, Any]:
    catalog = read_catalog()
    if catalog is not None:
        return {"source": CATALOG_FILE, **catalog}
    return {
        "source": "ray_jobs.spec (no model_catalog.json exported: names only)",
        "models": [
            {"name": m, "kind": "linear" if m in job_spec.LINEAR_MODELS else "deep"}
            for m in job_spec.MODEL_NAMES
        ],
        "presets": list(job_spec.PRESETS),
    }
