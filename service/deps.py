"""FastAPI dependencies: the app state and the calling principal (API-key auth)."""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from service.errors import ApiError
from service.keys import Principal, verify_key
from service.state import AppState

LOCAL_PRINCIPAL = Principal(name="local", admin=True)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def get_state(request: Request) -> AppState:
    # async on purpose: FastAPI runs a sync dependency in the threadpool, a hop per request.
    return request.app.state.qr


StateDep = Annotated[AppState, Depends(get_state)]


async def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not take: `?split=test` on a route without
    that filter must not quietly return every row."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params:
        return
    allowed: set[str] = set()
    many: set[str] = set()  # the parameters that take several values (symbol=A&symbol=B)
    stack = [dependant]
    while stack:
        d = stack.pop()
        allowed.update(p.alias for p in d.query_params)
        many.update(p.alias for p in d.query_params if _takes_many(p.field_info.annotation))
        stack.extend(d.dependencies)
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        takes = ", ".join(sorted(allowed)) or "none"
        raise ApiError(422, "invalid", f"unknown query parameter(s) {unknown}; this route takes: "
                       f"{takes}", [{"field": f"query.{u}", "message": "not a parameter of this "
                                     "route"} for u in unknown])  # fmt: skip
    # one value kept of several (limit=1&limit=5 read as 5, prefix=A&prefix=B as B) would
    # answer another question than the one asked
    repeated = sorted(k for k in set(request.query_params) - many
                      if len(request.query_params.getlist(k)) > 1)
    if repeated:
        raise ApiError(422, "invalid", f"query parameter(s) {repeated} given more than once; "
                       "each takes one value", [{"field": f"query.{k}", "message": "give it "
                       "once"} for k in repeated])  # fmt: skip


def _takes_many(annotation: Any) -> bool:
    """Whether a parameter's annotation is a list (or tuple, set), optional or not."""
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    if origin in (Union, UnionType):
        return any(_takes_many(arg) for arg in get_args(annotation))
    return annotation in (list, tuple, set, frozenset)


class ApiKeyAuth(HTTPBearer):
    """The Bearer scheme of the OpenAPI document (it is an `HTTPBearer`) that also checks
    the key, in one dependency: a separate `HTTPBearer` sub-dependency cost a sixth of a
    status poll's time in FastAPI's dependency solving alone."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        return await get_principal(request)


async def get_principal(request: Request) -> Principal:
    """`Authorization: Bearer <key>` -> the key's principal; 401 when missing or invalid.

    The key's row is read on every request (no cache), so a key revoked by any process
    (`quantray keys revoke`) is refused from its very next request; async so that the read
    costs no threadpool hop on SQLite (`AppState.read`)."""
    state: AppState = request.app.state.qr
    if not state.settings.auth:
        return LOCAL_PRINCIPAL
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(
            401, "unauthorized",
            "missing Authorization header: send 'Authorization: Bearer <API key>' "
            "(an admin creates keys with `quantray keys create --name NAME`)",
            headers=_CHALLENGE,
        )  # fmt: skip
    if len(request.headers.getlist("authorization")) > 1:  # which key is meant?
        raise ApiError(400, "malformed", "Authorization header given more than once: send "
                       "one 'Authorization: Bearer <API key>'",
                       [{"field": "header.Authorization", "message": "give it once"}])
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "unauthorized", "Authorization header must be 'Bearer <API key>'",
            headers=_CHALLENGE,
        )  # fmt: skip
    principal = await state.read(verify_key, state.engine, token.strip())
    if principal is None:
        raise ApiError(
            401, "unauthorized", "invalid or revoked API key: ask an admin for a new key",
            headers=_CHALLENGE,
        )  # fmt: skip
    return principal


# scheme_name: the OpenAPI document names the scheme "HTTPBearer", as before.
_AUTH = ApiKeyAuth(
    auto_error=False, scheme_name="HTTPBearer", description="An API key: `quantray keys create`"
)
PrincipalDep = Annotated[Principal, Depends(_AUTH)]
