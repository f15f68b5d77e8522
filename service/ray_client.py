"""A small async client for the Ray Jobs REST API served by the Ray dashboard (Ray 2.60).

Shapes checked against `ray/dashboard/modules/job/{job_head,common,pydantic_models}.py`:
- `POST /api/jobs/` body `JobSubmitRequest` (entrypoint, submission_id, runtime_env,
  metadata: dict[str, str]) -> 200 `{"job_id", "submission_id"}`. A request the job agent
  refuses (a reused submission_id: "... already exists") comes back as a 500 whose text is
  "Request failed with status code 400: <traceback>." (checked against a real 2.60 head).
- `GET /api/jobs/{id}` -> `JobDetails` (status PENDING|RUNNING|STOPPED|SUCCEEDED|FAILED,
  message, error_type, start_time/end_time in ms, metadata); 404 when unknown.
- `POST /api/jobs/{id}/stop` -> `{"stopped": bool}`; `GET /api/jobs/{id}/logs` ->
  `{"logs": str}`; `DELETE /api/jobs/{id}` -> `{"deleted": bool}`; `GET /api/version`.
Token auth (`RAY_AUTH_MODE=token`): the dashboard reads `Authorization: Bearer <token>`
(ray/_private/authentication/http_token_authentication.py); 401 = missing, 403 = wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ray_jobs.ray_token import find_ray_token

SUBMIT_TIMEOUT_S = 90.0
RAY_STATUSES = ("PENDING", "RUNNING", "STOPPED", "SUCCEEDED", "FAILED")


class RayError(RuntimeError):
    """Ray answered something unexpected; the message holds Ray's own text."""


class RayUnavailable(RayError):
    """The dashboard could not be reached (connection refused, timeout, 5xx)."""


class RayAuthError(RayError):
    """401/403 from the dashboard: the token is missing or wrong."""


class RaySubmissionExists(RayError):
    """The submission id is already taken on this Ray cluster."""


@dataclass(frozen=True)
class RayJobInfo:
    submission_id: str
    status: str
    message: str | None
    error_type: str | None
    start_time_ms: int | None
    end_time_ms: int | None
    metadata: dict[str, str]
    driver_exit_code: int | None = None


def resolve_ray_token(explicit: str | None, env: Mapping[str, str], home: Path) -> str | None:
    """The Ray auth token, first found of: QUANTRAY_RAY_AUTH_TOKEN (`explicit`), then
    `ray_jobs.ray_token.find_ray_token` (RAY_AUTH_TOKEN, the file at RAY_AUTH_TOKEN_PATH,
    `~/.ray/auth_token` under `home`), as the job entrypoint finds it."""
    if explicit:
        return explicit
    try:
        return find_ray_token(env, home)
    except ValueError as exc:  # RAY_AUTH_TOKEN_PATH names no file
        raise RayAuthError(str(exc)) from None


class RayJobsClient:
    """Talks to one Ray dashboard; every call raises a `RayError` subclass on failure."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.address = address.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(
            base_url=self.address, headers=headers, timeout=timeout_s, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def dashboard_url(self, submission_id: str) -> str:
        return f"{self.address}/#/jobs/{submission_id}"

    async def _request(
        self, method: str, path: str, *, check_5xx: bool = True, **kwargs: Any
    ) -> httpx.Response:
        try:
            resp = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise RayUnavailable(
                f"Ray dashboard at {self.address} unreachable ({type(exc).__name__}: {exc}); "
                "check QUANTRAY_RAY_ADDRESS and that the head is running"
            ) from exc
        if resp.status_code in (401, 403):
            raise RayAuthError(
                f"Ray dashboard refused {method} {path} with {resp.status_code} "
                f"({resp.text.strip()[:200]}): set QUANTRAY_RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN) "
                "to the cluster's token (`ray get-auth-token`)"
            )
        if check_5xx and resp.status_code >= 500:
            raise RayUnavailable(
                f"Ray dashboard {method} {path} failed with {resp.status_code}: "
                f"{_last_line(resp.text)}"
            )
        return resp

    async def version(self) -> dict[str, Any]:
        resp = await self._request("GET", "/api/version")
        _expect_ok(resp, "GET /api/version")
        return dict(resp.json())

    async def submit(
        self,
        *,
        entrypoint: str,
        submission_id: str,
        runtime_env: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        body: dict[str, Any] = {"entrypoint": entrypoint, "submission_id": submission_id}
        if runtime_env:
            body["runtime_env"] = dict(runtime_env)
        if metadata:
            body["metadata"] = {str(k): str(v) for k, v in metadata.items()}
        # The head waits for a job agent before answering (tens of seconds on a busy or
        # fresh node), so a submit gets a longer timeout than the polls. A timeout here is
        # ambiguous (the job may exist); the dispatcher resolves it by looking the id up.
        resp = await self._request(
            "POST", "/api/jobs/", json=body, timeout=SUBMIT_TIMEOUT_S, check_5xx=False
        )
        # The head relays the job agent's 400 as a 500 whose text starts "Request failed with
        # status code 400: <traceback>" (job_head.JobAgentSubmissionClient._raise_error).
        rejected = resp.status_code == 400 or (
            resp.status_code == 500 and "status code 400" in resp.text
        )
        if rejected and "already exists" in resp.text:
            raise RaySubmissionExists(f"Ray already has a job with submission_id {submission_id}")
        if rejected:
            raise RayError(f"Ray rejected the job: {_last_line(resp.text)}")
        if resp.status_code >= 500:
            raise RayUnavailable(f"POST /api/jobs/ failed with {resp.status_code}: "
                                 f"{_last_line(resp.text)}")  # fmt: skip
        _expect_ok(resp, "POST /api/jobs/")
        return str(resp.json()["submission_id"])

    async def get(self, submission_id: str) -> RayJobInfo | None:
        """The job's Ray-side state, or None when Ray does not know the id."""
        resp = await self._request("GET", f"/api/jobs/{submission_id}")
        if resp.status_code == 404:
            return None
        _expect_ok(resp, f"GET /api/jobs/{submission_id}")
        data = resp.json()
        status = str(data.get("status"))
        if status not in RAY_STATUSES:
            raise RayError(f"Ray returned unknown job status {status!r} for {submission_id}")
        return RayJobInfo(
            submission_id=str(data.get("submission_id") or submission_id),
            status=status,
            message=data.get("message"),
            error_type=data.get("error_type"),
            start_time_ms=data.get("start_time"),
            end_time_ms=data.get("end_time"),
            metadata=dict(data.get("metadata") or {}),
            driver_exit_code=data.get("driver_exit_code"),
        )

    async def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop the job; False when Ray does not know it."""
        resp = await self._request("POST", f"/api/jobs/{submission_id}/stop")
        if resp.status_code == 404:
            return False
        _expect_ok(resp, f"POST /api/jobs/{submission_id}/stop")
        return bool(resp.json().get("stopped"))

    async def logs(self, submission_id: str) -> str | None:
        """The driver's log text, or None when Ray does not know the job."""
        resp = await self._request("GET", f"/api/jobs/{submission_id}/logs")
        if resp.status_code == 404:
            return None
        _expect_ok(resp, f"GET /api/jobs/{submission_id}/logs")
        return str(resp.json().get("logs", ""))

    async def delete(self, submission_id: str) -> bool:
        resp = await self._request("DELETE", f"/api/jobs/{submission_id}")
        if resp.status_code == 404:
            return False
        _expect_ok(resp, f"DELETE /api/jobs/{submission_id}")
        return bool(resp.json().get("deleted"))


def _expect_ok(resp: httpx.Response, what: str) -> None:
    if resp.status_code != 200:
        raise RayError(f"{what} returned {resp.status_code}: {_last_line(resp.text)}")


def _last_line(text: str) -> str:
    # Ray puts a Python traceback in error bodies; its last line is the actual error (the
    # head's relay appends a lone ".").
    lines = [line for line in text.strip().splitlines() if line.strip() not in ("", ".")]
    return lines[-1][:500] if lines else "(empty body)"

