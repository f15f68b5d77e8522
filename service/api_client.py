"""A thin synchronous HTTP client of the quantray API, used by the CLI (httpx only)."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import httpx

from service.job_ids import job_id_problem

DEFAULT_API = "http://127.0.0.1:8000"
# A submit waits for the spec to be stored, with retries: against an S3 endpoint that does
# not answer that is ~4 x its ~10 s timeout before the API's 503. Outlast it.
SUBMIT_TIMEOUT_S = 120.0


class ApiClientError(RuntimeError):
    """The API refused the request or could not be reached; the message is for the user."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiUnreachable(ApiClientError):
    """No answer from the API (refused, reset, timed out): it may be restarting."""


class ApiClient:
    def __init__(self, api: str | None, api_key: str | None, *, timeout_s: float = 30.0) -> None:
        self.base = (api or os.environ.get("QUANTRAY_API") or DEFAULT_API).rstrip("/")
        if "://" in self.base and not self.base.startswith(("http://", "https://")):
            raise ApiClientError(f"--api {self.base!r}: the API is served over http:// or "
                                 "https://, e.g. http://127.0.0.1:8000")
        if not self.base.startswith(("http://", "https://")):
            raise ApiClientError(f"--api {self.base!r}: give the URL with its scheme, e.g. "
                                 f"http://{self.base}")
        if api_key is not None and not api_key.strip():
            raise ApiClientError("--api-key is empty: give a key, or leave the option out to "
                                 "use QUANTRAY_API_KEY")
        # the routes' own /v1 is added per request: a base given with it would double it
        self.base = self.base.removesuffix("/v1").rstrip("/")
        key = api_key or os.environ.get("QUANTRAY_API_KEY")
        self.has_key = bool(key)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.base, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.ReadTimeout as exc:  # it was reached, and may have acted on the request
            then = ("; it may still carry it out: check `quantray list` before repeating it"
                    if method != "GET" else ": it is up but busy, or stuck")  # fmt: skip
            raise ApiUnreachable(f"the quantray API at {self.base} did not answer {method} "
                                 f"{path} in time ({type(exc).__name__}){then}") from None
        except httpx.TransportError as exc:
            raise ApiUnreachable(
                f"cannot reach the quantray API at {self.base} ({type(exc).__name__}: {exc}); "
                "start it with `quantray serve` or set QUANTRAY_API / --api"
            ) from None
        except httpx.HTTPError as exc:
            raise ApiClientError(f"request to the quantray API at {self.base} failed "
                                 f"({type(exc).__name__}: {exc})") from None  # fmt: skip
        if resp.status_code == 401 and not self.has_key:
            raise ApiClientError(
                "HTTP 401: no API key: set QUANTRAY_API_KEY or pass --api-key (an admin "
                "creates keys with `quantray keys create --name NAME`)", 401)  # fmt: skip
        if resp.status_code == 503 and _error_code(resp) == "database_unavailable":
            # answered, but nothing was done: retried like an API that is restarting
            raise ApiUnreachable(_error_text(resp), 503)
        if resp.status_code >= 400:
            raise ApiClientError(_error_text(resp) + self._not_quantray(resp), resp.status_code)
        return resp

    def _not_quantray(self, resp: httpx.Response) -> str:
        """A hint when a 404 is not one of the API's own (a job, a file it does not have),
        but a route this server does not serve: --api names another server (the Ray
        dashboard, 8265), or a path under the API's root (/docs)."""
        if resp.status_code != 404:
            return ""
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("error") == "not_found" \
                and body.get("message") != "Not Found":  # fmt: skip
            return ""  # the API's own answer: no such job, no such file
        return (f"\n{self.base} has no {resp.request.method} {resp.request.url.path}: is it "
                "the root URL of a quantray API (`quantray serve`, e.g. http://127.0.0.1:8000)? "
                "Check --api / QUANTRAY_API")

    def submit(self, body: bytes, content_type: str, idempotency_key: str | None) -> dict:
        """Always with an Idempotency-Key (a new one unless given): a submit that timed out
        may have created the job, and resending the same key returns that job."""
        import uuid

        key = idempotency_key or f"cli-{uuid.uuid4()}"
        headers = {"Content-Type": content_type, "Idempotency-Key": key}
        try:
            return self.request("POST", "/v1/jobs", content=body, headers=headers,
                                timeout=SUBMIT_TIMEOUT_S).json()  # fmt: skip
        except ApiUnreachable as exc:
            raise ApiUnreachable(f"{exc}; or submit again with `--idempotency-key {key}`: "
                                 "that returns the job if it was created") from None

    def job(self, job_id: str) -> dict:
        return self.request("GET", job_path(job_id)).json()

    def jobs(
        self, *, status: str | list[str] | None, page: int, page_size: int | None
    ) -> dict:
        params: dict[str, Any] = {"page": page}
        if status:
            params["status"] = status  # a list: jobs in any of them
        if page_size is not None:
            params["page_size"] = page_size
        return self.request("GET", "/v1/jobs", params=params).json()

    def cancel(self, job_id: str) -> dict:
        return self.request("POST", job_path(job_id, "/cancel")).json()

    def resume(self, job_id: str) -> dict:
        return self.request("POST", job_path(job_id, "/resume")).json()

    def logs(self, job_id: str, attempt: int | None = None) -> str:
        params = {} if attempt is None else {"attempt": attempt}
        return self.request("GET", job_path(job_id, "/logs"), params=params).text

    def results(self, job_id: str, filters: dict[str, list], *, csv: bool) -> httpx.Response:
        params = {k: v for k, v in filters.items() if v not in (None, [], "")}
        headers = {"Accept": "text/csv" if csv else "application/json"}
        return self.request("GET", job_path(job_id, "/results"), params=params,
                            headers=headers)

    def summary(self, job_id: str) -> dict:
        return self.request("GET", job_path(job_id, "/summary")).json()

    def plots(self, job_id: str) -> list[str]:
        return list(self.request("GET", job_path(job_id, "/plots")).json()["plots"])

    def plot(self, job_id: str, name: str) -> bytes:
        _inside_the_job(name, "plot name", "plots")
        return self.request("GET", job_path(job_id, f"/plots/{quote(name, safe='')}")).content

    def artifacts(self, job_id: str, prefix: str = "") -> list[dict]:
        params = {"prefix": prefix} if prefix else {}
        return list(self.request("GET", job_path(job_id, "/artifacts"), params=params)
                    .json()["files"])

    def artifact(self, job_id: str, path: str) -> bytes:
        _inside_the_job(path, "artifact path", "artifacts")
        return self.request("GET", job_path(job_id, f"/artifacts/{quote(path, safe='/')}")
                            ).content

    def models(self) -> dict:
        return self.request("GET", "/v1/models").json()


def job_path(job_id: str, rest: str = "") -> str:
    """The API path of job `job_id` (+ `rest`), or `ApiClientError` for an id that is not
    one: put in the URL as given, `../../v1/jobs` or `a/../qr-B` would reach another route
    or another job (httpx normalises the path), and `?x=1` would become a query."""
    problem = job_id_problem(job_id)
    if problem is not None:
        raise ApiClientError(problem)
    return f"/v1/jobs/{job_id}{rest}"


def _inside_the_job(path: str, what: str, command: str) -> None:
    """`ApiClientError` for a `.` or `..` segment: httpx normalises the URL's path, so
    `--get ../summary` fetched the job's /summary (and `../../qr-B/...` another job's file)
    where the API itself refuses such a path."""
    for segment in path.split("/"):
        if segment in (".", ".."):
            raise ApiClientError(f"{what} {path!r} contains {segment!r}: give a path inside "
                                 f"the job, as `quantray {command} ID` lists them")


def _error_text(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text.strip()[:500]}"
    if isinstance(body, dict) and "message" in body:
        errors = body.get("errors") or []
        if not errors:
            return f"HTTP {resp.status_code}: {body['message']}"
        # the message, unless it only joins the errors' own messages (a spec's fields)
        message = str(body["message"])
        covered = all(str(e.get("message")) in message for e in errors)
        lines = [f"HTTP {resp.status_code} ({body.get('error', 'error')}):"
                 + ("" if covered else f" {message}")]
        lines += [f"  {e.get('field') or '(body)'}: {e.get('message')}" for e in errors]
        return "\n".join(lines)
    return f"HTTP {resp.status_code}: {body}"


def _error_code(resp: httpx.Response) -> str | None:
    """The API's error code (`{"error": ...}`), or None for another body."""
    try:
        body = resp.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None
