"""/v1/jobs: submit, list, get, cancel, resume, logs."""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse

from ray_jobs.storage import StorageError
from service.deps import PrincipalDep, StateDep, reject_unknown_query
from service.dispatcher import submission_id
from service.errors import ApiError, storage_unavailable
from service.job_ids import JOB_ID_FORM, JOB_ID_PATTERN, job_id_problem
from service.keys import Principal
from service.ray_client import RayError, RayUnavailable
from service.schemas import (
    SPEC_EXAMPLE,
    SPEC_YAML_EXAMPLE,
    ErrorPublic,
    JobPublic,
    JobsPublic,
    job_public,
)
from service.spec_checker import CheckerUnavailable, override_errors
from service.state import AppState
from service.store import JobConflict, JobNotFound, JobRecord
from service.validation import InputError, parse_body, spec_from_data

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(reject_unknown_query)])

_IDEMPOTENCY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
_INPUT_STATUS = {"malformed": 400, "too_large": 413, "unsupported_media": 415, "invalid": 422}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorPublic, "description": why}
    for code, why in {
        400: "Malformed body (bad JSON/YAML, bad header)",
        401: "Missing, invalid or revoked API key",
        404: "No such job (or it belongs to another key)",
        409: "The job's state forbids this, or the Idempotency-Key was used for another spec",
        413: "Body larger than QUANTRAY_MAX_BODY_BYTES, or a YAML spec of too many values",
        415: "Content-Type is not application/json or application/yaml",
        422: "Invalid spec; `errors` names each field",
        503: "A dependency is down: the job database, the storage (QUANTRAY_STORAGE_URI) or Ray",
    }.items()
}
# Documents the shape only (`json_schema_extra`): a malformed id is the API's own 404,
# checked in `_get` before any database read, not FastAPI's 422.
JobIdPath = Annotated[str, Path(description="The job's id: qr- and 16 lowercase hex digits",
                                json_schema_extra={"pattern": JOB_ID_PATTERN})]
_IDEMPOTENCY_SCHEMA = {"pattern": _IDEMPOTENCY_RE.pattern, "minLength": 1, "maxLength": 200}
# The same errors for a route whose success is not JSON (the log's text/plain): FastAPI
# would document them in the route's media type
_JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": spec["description"], "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}}}
    for code, spec in _ERRORS.items()
}
_SPEC_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "description": "A job spec (see ray_jobs/spec.py)"},
                "examples": {
                    "sp500": {"summary": "Three models on 5 symbols", "value": SPEC_EXAMPLE}
                },
            },
            "application/yaml": {
                # the body is the YAML document itself: `format: binary` makes generated
                # clients send it as is (a plain string schema got it YAML-quoted, a str)
                "schema": {"type": "string", "format": "binary",
                           "description": "A job spec as a YAML document (UTF-8)"},
                "examples": {
                    "sp500": {"summary": "The same spec as YAML", "value": SPEC_YAML_EXAMPLE}
                },
            },
        },
    }
}


_INPUT_FIELD = {"malformed": "body", "unsupported_media": "header.Content-Type"}


def _input_error(exc: InputError) -> ApiError:
    errors = exc.errors
    if not errors and exc.kind in _INPUT_FIELD:  # what is wrong is the body or its type
        errors = [{"field": _INPUT_FIELD[exc.kind], "message": exc.message}]
    return ApiError(_INPUT_STATUS[exc.kind], exc.kind, exc.message, errors)


def _get(state: AppState, job_id: str, principal: Principal) -> JobRecord:
    problem = job_id_problem(job_id)
    if problem is not None:  # never sent to the database (a NUL byte is a 500 there)
        raise ApiError(404, "not_found", problem, [{"field": "path.job_id",
                                                    "message": JOB_ID_FORM}])
    try:
        return state.store.get(job_id, principal)
    except JobNotFound as exc:
        raise ApiError(404, "not_found", f"{exc}: check the id (`quantray list`)") from None


def _public(state: AppState, job: JobRecord, *, detail: bool, with_spec: bool | None = None
            ) -> JobPublic:
    """The job as the API shows it; `detail`: with its progress and spec (`with_spec`
    overrides the latter)."""
    progress, progress_error = None, None
    if detail and job.status != "queued":
        if state.inline_file_reads or state.status_progress is None:  # a local file
            try:
                progress = state.files.read_progress(job.id, job.attempt)
            except (OSError, ValueError) as exc:
                progress_error = str(exc)
        else:  # an object store: a bounded wait, the last progress read while it is down
            progress, progress_error = state.status_progress.read(job.id, job.attempt)
    waiting = state.dispatcher.last_error
    if job.status == "queued" and not job.message and waiting:
        # why nothing moves: the same reason /readyz gives, on the job itself. A cancel of a
        # job whose submission may have reached Ray is settled once Ray answers again.
        why = ("cancel requested, settled once Ray answers again" if job.cancel_requested
               else "waiting to be submitted")  # fmt: skip
        job = dataclasses.replace(job, message=f"{why}: {waiting}")
    elif job.status == "running" and not job.message and waiting:
        # Ray does not answer (its head died?): `running` is only what it last said.
        then = ("`cancelled` if it stopped, else it is stopped" if job.cancel_requested
                else "`interrupted` (resumable) if its Ray head was restarted")  # fmt: skip
        job = dataclasses.replace(job, message=(
            f"last known status; Ray has not confirmed it since: {waiting}; once Ray answers, "
            f"the job is settled: {then}"))
    return job_public(
        job,
        dashboard_url=state.dashboard_url(job.ray_submission_id),
        progress=progress,
        progress_error=progress_error,
        with_spec=detail if with_spec is None else with_spec,
    )


def _create(
    state: AppState, principal: Principal, body: bytes, content_type: str | None, key: str | None
) -> tuple[JobRecord, bool]:
    try:
        spec = spec_from_data(parse_body(body, content_type))
        state.policy.check(spec)
    except InputError as exc:
        raise _input_error(exc) from None
    spec_dict = spec.to_dict()
    try:
        problems = override_errors(spec_dict)
    except CheckerUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
    if problems:
        text = "; ".join(f"{path}: {message}" for path, message in problems)
        raise _input_error(InputError("invalid", f"invalid job spec: {text}", [
            {"field": path, "message": message} for path, message in problems]))
    try:
        return state.store.create(
            owner=principal.name,
            name=spec.name,
            spec=spec_dict,
            idempotency_key=key,
            write_files=lambda job_id: state.files.write_spec(job_id, spec_dict),
            remove_files=state.files.remove_job,
        )
    except JobConflict as exc:  # the key was used for another spec
        raise ApiError(409, "conflict", str(exc), [{"field": "header.Idempotency-Key",
                       "message": "already used for another spec"}]) from None
    except StorageError as exc:  # nothing was stored: a later submit is safe
        raise storage_unavailable("write the job's spec to", exc.uri, exc.cause,
                                  "submit again: nothing was stored") from None


@router.post(
    "", status_code=201, response_model=JobPublic, responses=_ERRORS, openapi_extra=_SPEC_BODY,
    summary="Submit a job (JSON, or YAML with Content-Type: application/yaml)",
)  # fmt: skip
async def create_job(
    request: Request,
    response: Response,
    state: StateDep,
    principal: PrincipalDep,
    idempotency_key: Annotated[
        str | None, Header(description="Retry-safe key: same key + same spec = same job; "
                           "1-200 visible ASCII characters, e.g. a UUID",
                           json_schema_extra=_IDEMPOTENCY_SCHEMA)
    ] = None,
) -> JobPublic:
    if len(request.headers.getlist("idempotency-key")) > 1:  # only the first was used
        raise ApiError(400, "malformed", "Idempotency-Key given more than once: send one key",
                       [{"field": "header.Idempotency-Key", "message": "give it once"}])
    if idempotency_key is not None and not _IDEMPOTENCY_RE.match(idempotency_key):
        why = "use 1-200 visible ASCII characters (no spaces), e.g. a UUID"
        raise ApiError(400, "malformed", f"Idempotency-Key {idempotency_key[:40]!r}: {why}",
                       [{"field": "header.Idempotency-Key", "message": why}])
    body = await request.body()
    job, created = await run_in_threadpool(
        _create, state, principal, body, request.headers.get("content-type"), idempotency_key
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    # the spec as stored (defaults filled in), as GET, cancel and resume show it
    return _public(state, job, detail=False, with_spec=True)


@router.get("", response_model=JobsPublic, responses=_ERRORS, summary="List your jobs")
def list_jobs(
    request: Request,
    state: StateDep,
    principal: PrincipalDep,
    status: Annotated[
        list[Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]]
        | None,
        Query(max_length=6, description="Only jobs in this status (repeat: in any of them)"),
    ] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int | None, Query(ge=1, description="Default QUANTRAY_PAGE_SIZE")] = None,
) -> JobsPublic:
    size = page_size or state.settings.page_size
    if size > state.settings.max_page_size:
        raise ApiError(
            422, "invalid", f"page_size {size} exceeds {state.settings.max_page_size}",
            [{"field": "query.page_size", "message": f"at most {state.settings.max_page_size}"}],
        )  # fmt: skip
    items, total = state.store.list(principal, status=status, offset=(page - 1) * size, limit=size)
    has_next = page * size < total
    next_url = (
        str(request.url.include_query_params(page=page + 1, page_size=size)) if has_next else None
    )
    return JobsPublic(
        items=[_public(state, j, detail=False) for j in items],
        total=total, page=page, page_size=size, next=next_url,
    )  # fmt: skip


@router.get("/{job_id}", response_model=JobPublic, responses=_ERRORS, summary="Job status")
async def get_job(
    job_id: JobIdPath, request: Request, principal: PrincipalDep
) -> JobPublic:
    # The hot path of every polling client. async: a SQLite read and a local progress.json
    # read cost no threadpool hop (see `AppState.read`); the state straight from the app,
    # not through StateDep: each dependency costs FastAPI ~80 calls per request.
    state: AppState = request.app.state.qr
    job = await state.read(_get, state, job_id, principal)
    if job.status != "queued" and not state.inline_file_reads:
        return await run_in_threadpool(_public, state, job, detail=True)
    return _public(state, job, detail=True)


@router.post(
    "/{job_id}/cancel", response_model=JobPublic, responses=_ERRORS,
    summary="Cancel: stops the Ray job, keeps partial results",
)  # fmt: skip
async def cancel_job(
    job_id: JobIdPath, state: StateDep, principal: PrincipalDep
) -> JobPublic:
    job = await run_in_threadpool(_get, state, job_id, principal)
    try:
        job = await run_in_threadpool(state.store.request_cancel, job)
    except JobConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    if job.status != "cancelled" and job.ray_submission_id and state.ray is not None:
        try:
            await state.ray.stop(job.ray_submission_id)
        except RayError as exc:
            # cancel_requested is stored: the dispatcher re-sends the stop until Ray obeys.
            log.warning("job %s: stop not delivered yet: %s", job.id, exc)
    if state.inline_file_reads:
        return _public(state, job, detail=True)
    return await run_in_threadpool(_public, state, job, detail=True)  # not on the loop


@router.post(
    "/{job_id}/resume", response_model=JobPublic, responses=_ERRORS,
    summary="Resume a failed/cancelled/interrupted job (finished units are skipped)",
)  # fmt: skip
def resume_job(job_id: JobIdPath, state: StateDep, principal: PrincipalDep) -> JobPublic:
    job = _get(state, job_id, principal)
    uri = str((job.spec.get("dataset") or {}).get("uri", ""))
    try:  # the data roots of now: the setting (or a link in the root) may have changed
        state.policy.check_location(uri)
    except InputError as exc:
        raise ApiError(409, "conflict", (
            f"job {job.id} cannot be resumed: its {exc.message} (checked again on resume: "
            "QUANTRAY_DATA_ROOTS or the path changed since it was submitted); an operator "
            "can allow the data again, or submit a spec whose dataset.uri is allowed"),
            exc.errors) from None
    # a spec that is not there would fail its driver at once (storage down: a 503)
    if not state.files.has_spec(job.id):
        raise ApiError(409, "conflict", (
            f"job {job.id}'s files are not in the storage this API uses "
            f"(QUANTRAY_STORAGE_URI={state.settings.storage_uri}: no "
            f"{state.files.uri(job.id, 'spec.json')}); if the setting changed since the job "
            "was submitted, set it back to where the job was stored and resume again; if its "
            "files were deleted (or their bucket removed or replaced), the job cannot be "
            f"resumed: submit its spec again (the `spec` of GET /v1/jobs/{job.id})"))
    try:
        return _public(state, state.store.resume(job), detail=True)
    except JobConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None


@router.get(
    "/{job_id}/logs", response_class=PlainTextResponse, responses=_JSON_ERRORS,
    summary="The job driver's log, from Ray",
)  # fmt: skip
async def job_logs(
    job_id: JobIdPath, state: StateDep, principal: PrincipalDep,
    attempt: Annotated[int | None, Query(ge=0, description=(
        "an earlier attempt's log (0 first, +1 per resume of a run that reached Ray), "
        "from the copy the job stored; "
        "default: the latest attempt, from Ray, or from that copy when Ray has none"))] = None,
) -> PlainTextResponse:
    job = await run_in_threadpool(_get, state, job_id, principal)
    if attempt is not None and attempt > job.attempt:
        raise ApiError(422, "invalid", f"job {job.id} has attempts 0..{job.attempt}",
                       [{"field": "query.attempt", "message": f"use 0 to {job.attempt}"}])
    if attempt is not None and attempt < job.attempt:
        # Ray keeps each attempt's whole log until its head restarts; the stored copy may
        # miss a killed driver's last seconds
        sid = submission_id(job, attempt)
        if state.ray is None:
            why = "no Ray cluster is configured (QUANTRAY_RAY_ADDRESS)"
        else:
            try:
                text = await state.ray.logs(sid)
            except RayError as exc:
                text, why = None, f"Ray did not give the log of submission {sid} ({exc})"
            else:
                why = f"Ray has no record of submission {sid} (the head was restarted?)"
            if text is not None:
                return PlainTextResponse(text)
        return await _stored_log(state, job, attempt, why)
    if job.ray_submission_id is None:
        earlier = (f"; its earlier attempts' logs: ?attempt=0 to {job.attempt - 1} (`quantray "
                   f"logs {job.id} --attempt N`)" if job.attempt else "")  # a resumed job
        why = (f"yet (`quantray logs {job.id} -f` waits for it to start)"
               if job.status == "queued" else "(it never reached Ray)")
        raise ApiError(409, "conflict", f"job {job.id} is {job.status} and has no Ray logs "
                       f"{why}{earlier}")
    why = None
    if state.ray is None:
        why = "no Ray cluster is configured (QUANTRAY_RAY_ADDRESS)"
    else:
        try:
            text = await state.ray.logs(job.ray_submission_id)
        except RayUnavailable as exc:
            why = f"Ray is unavailable: {exc}"
        except RayError as exc:
            raise ApiError(502, "ray_error", str(exc)) from None
        else:
            if text is not None:
                return PlainTextResponse(text)
            why = (f"Ray has no record of submission {job.ray_submission_id} (the head was "
                   "restarted?)")
    return await _stored_log(state, job, job.attempt, why)


async def _stored_log(state: AppState, job: JobRecord, attempt: int, why: str) -> PlainTextResponse:
    """The driver log the job stored for `attempt`, under a line saying where it is from."""
    text = await run_in_threadpool(state.files.read_driver_log, job.id, attempt)
    if text is None:
        raise ApiError(404, "not_found", f"{why}, and job {job.id} stored no driver log for "
                       f"attempt {attempt} (its driver stores a copy every 10 s: one that "
                       "ended sooner may have none)")
    head = (f"[attempt {attempt}: {why}: the driver's log as the job stored it; workers' "
            "output is not in it]\n")
    return PlainTextResponse(head + text)
