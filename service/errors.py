"""The one HTTP error type, raised at the edge (routes, dependencies) only, and its
handlers: every error body is `{"error", "message", "errors": [{"field", "message"}]}`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.job_files import StorageUnreadable


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


def install_handlers(app: FastAPI) -> None:
    async def storage_unreadable(request: Request, exc: Exception) -> JSONResponse:
        # every route that reads a job's files (results, summary, plots, artifacts, logs,
        # resume's spec check): the storage itself, not a file, cannot be read
        assert isinstance(exc, StorageUnreadable)
        return await api_error(request, storage_unavailable(
            f"read {exc.what} from", exc.uri, exc.cause, "retry"))

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse(
            error_body(exc.code, exc.message, exc.errors), exc.status, headers=exc.headers
        )

    async def too_large(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BodyTooLarge)
        return JSONResponse(too_large_body(exc.limit), 413)

    async def validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg"))}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse(error_body("invalid", f"invalid request: {summary}", errors), 422)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers: Any = getattr(exc, "headers", None)
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=headers)

    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        # A bug or an outage no route maps: the same JSON body as every error (the traceback
        # goes to the server log, which Starlette writes after this handler answers).
        return JSONResponse(error_body(
            "internal", f"internal server error ({type(exc).__name__}); the server log has "
            "the details: report it, or retry if a dependency (database, storage) was down"),
            500)  # fmt: skip

    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StorageUnreadable, storage_unreadable)
    app.add_exception_handler(BodyTooLarge, too_large)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
