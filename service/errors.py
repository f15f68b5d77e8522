"""The one HTTP error type, raised at the edge (routes, dependencies) only, and its
handlers: every error body is `{"error", "message", "errors": [{"field", "message"}]}`."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from service.job_files import StorageUnreadable

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An HTTP error with a message that says what is wrong and how to fix it."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.errors = errors or []
        self.headers = headers


class BodyTooLarge(Exception):
    """Raised from `receive` when a streamed body passes the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


class ErrorResponse(JSONResponse):
    """An error's JSON answer. Text it echoes that UTF-8 cannot encode (a lone surrogate a
    check quoted back) is sent \\u-escaped (`ensure_ascii`), never failed with a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False,
                              separators=(",", ":")).encode("ascii")


def error_body(code: str, message: str, errors: list[dict[str, str]] | None = None) -> dict:
    return {"error": code, "message": message, "errors": errors or []}


def too_large_message(limit: int) -> str:
    return (
        f"request body exceeds the {limit}-byte limit (QUANTRAY_MAX_BODY_BYTES); "
        "send a smaller spec"
    )


def too_large_body(limit: int) -> dict:
    message = too_large_message(limit)
    return error_body("too_large", message, [{"field": "body", "message": message}])


def storage_unavailable(doing: str, uri: str, cause: object, then: str) -> ApiError:
    """The 503 of a storage that cannot be reached, or whose bucket does not exist."""
    return ApiError(503, "storage_unavailable", f"could not {doing} {uri} ({cause}); check "
                    f"QUANTRAY_STORAGE_URI (its bucket, endpoint and credentials) and {then}")


# SQLite's OperationalErrors that are an outage (a lock held past the busy timeout, a file
# that cannot be opened or read); its others are bugs or setup (bad SQL, a missing table,
# a read-only file): a 500
SQLITE_OUTAGE_WORDS = ("locked", "unable to open", "disk i/o", "busy")


def is_database_outage(exc: DBAPIError) -> bool:
    """Whether `exc` says the job database cannot be reached now (worth retrying), not that
    a statement is wrong."""
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError | InterfaceError):
        return False
    if type(exc.orig).__module__.startswith("sqlite3"):
        return any(w in str(exc.orig).lower() for w in SQLITE_OUTAGE_WORDS)
    return True  # a server database's OperationalError: a connection lost or refused


def database_unavailable(exc: DBAPIError) -> ApiError:
    """The 503 of a job database that cannot be reached or dropped the connection mid-request
    (a restart, a network cut; SQLite's lock timeout too). A statement whose transaction
    did not commit left nothing; a change whose commit went through before the connection
    was lost is kept, so a request that changes a job is read back before it is repeated."""
    cause = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    detail = f"{type(exc.orig or exc).__name__}: {cause[0] if cause else ''}"[:300]
    return ApiError(
        503, "database_unavailable",
        f"the job database could not be reached ({detail}); retry: reads are safe to repeat, "
        "and a submit with the same Idempotency-Key returns its job if it was created; after "
        "a resume or cancel, read the job's status first (it may have been applied). Check "
        "QUANTRAY_DATABASE_URL and the database server if this persists",
        headers={"Retry-After": "5"})


def _field_error(error: dict[str, Any]) -> dict[str, str]:
    """A request validation error as {field, message}. A repeated query parameter's value
    is named by its parameter (`query.horizon`, not pydantic's `query.horizon.0`), with the
    value in the message, so the field matches the parameter a client sent."""
    loc = list(error.get("loc", ()))
    message = str(error.get("msg"))
    if len(loc) == 3 and loc[0] == "query" and isinstance(loc[2], int):
        message = f"{loc[1]}={error.get('input')!s:.40}: {message}"
        loc = loc[:2]
    return {"field": ".".join(str(p) for p in loc), "message": message}


def install_handlers(app: FastAPI) -> None:
    async def storage_unreadable(request: Request, exc: Exception) -> JSONResponse:
        # every route that reads a job's files (results, summary, plots, artifacts, logs,
        # resume's spec check): the storage itself, not a file, cannot be read
        assert isinstance(exc, StorageUnreadable)
        return await api_error(request, storage_unavailable(
            f"read {exc.what} from", exc.uri, exc.cause, "retry"))

    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DBAPIError)
        if not is_database_outage(exc):
            raise exc  # a bug (a constraint, bad SQL): the 500 of `UnexpectedErrorMiddleware`
        log.warning("database unavailable in %s %s: %s", request.method, request.url.path, exc)
        return await api_error(request, database_unavailable(exc))

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return ErrorResponse(
            error_body(exc.code, exc.message, exc.errors), exc.status, headers=exc.headers
        )

    async def too_large(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BodyTooLarge)
        return ErrorResponse(too_large_body(exc.limit), 413)

    async def validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [_field_error(e) for e in exc.errors()]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return ErrorResponse(error_body("invalid", f"invalid request: {summary}", errors), 422)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers: Any = getattr(exc, "headers", None)
        message = str(exc.detail)
        if exc.status_code == 405:
            allowed = allowed_methods(request)
            if allowed:  # every route on the path, not only the first that matched it
                headers = {**(headers or {}), "Allow": ", ".join(allowed)}
                message = f"{request.method} is not allowed on {request.url.path}: use " \
                    f"{', '.join(allowed)}"  # fmt: skip
        return ErrorResponse(error_body(code, message), exc.status_code, headers=headers)

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        # The last resort, in Starlette's ServerErrorMiddleware: an error raised outside
        # `UnexpectedErrorMiddleware` (in an outer middleware). Starlette re-raises it after
        # this answer and uvicorn then closes the connection: say so, so that a pooled
        # client does not reuse it (its next request would fail with a reset).
        return ErrorResponse(internal_error_body(exc), 500, headers={"Connection": "close"})

    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StorageUnreadable, storage_unreadable)
    app.add_exception_handler(DBAPIError, database_error)
    app.add_exception_handler(BodyTooLarge, too_large)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)


_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """The methods the app serves on the request's path (HEAD wherever GET is:
    `HeadAsGetMiddleware`), each asked of the routes as a request would be. Starlette's 405
    names only the first route matching the path: `OPTIONS /v1/jobs` said `Allow: POST`,
    although GET is served there too."""
    routes = request.app.router.routes
    methods = {method for method in _METHODS if any(
        route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)}
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def internal_error_body(exc: BaseException) -> dict:
    """The body of a 500: a bug or an outage no route maps. The traceback is in the server
    log, never in the answer."""
    return error_body(
        "internal", f"internal server error ({type(exc).__name__}); the server log has the "
        "details: report it, or retry if a dependency (database, storage) was down")


class UnexpectedErrorMiddleware:
    """Pure ASGI, just outside the routes' exception handlers: an error no handler maps is
    logged with its traceback and answered with a JSON 500, and the request ends there.

    An exception handler registered for `Exception` runs in Starlette's outermost
    ServerErrorMiddleware instead, which re-raises after answering; uvicorn then logs it
    and closes the keep-alive connection, so a pooled client's next request (even a POST)
    failed with a connection reset. Here the connection stays usable. An error after the
    response has started (a stream cut short) is re-raised: only closing the connection
    tells the client that the body is incomplete."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            if started:
                raise
            # the client left before its body was read: no fault of the server's (a 500 and
            # a traceback said so). 499, nginx's "client closed request", for /metrics; the
            # answer itself reaches no one.
            log.info("client disconnected before sending its whole request: %s %r",
                     scope.get("method"), scope.get("path"))  # fmt: skip
            await ErrorResponse(error_body("client_disconnected", "the client disconnected "
                                           "before sending its whole request"), 499)(
                scope, receive, send)
        except Exception as exc:
            if started:
                raise
            log.error("unhandled error in %s %r", scope.get("method"), scope.get("path"),
                      exc_info=exc)  # fmt: skip
            await ErrorResponse(internal_error_body(exc), 500)(scope, receive, send)
