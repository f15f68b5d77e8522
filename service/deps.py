"""FastAPI dependencies: the app state and the calling principal (API-key auth)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import ApiError
from service.keys import Principal, verify_key
from service.state import AppState

LOCAL_PRINCIPAL = Principal(name="local", admin=True)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
# Declares the Bearer scheme in the OpenAPI document; the checks below give the messages.
_BEARER = HTTPBearer(auto_error=False, description="An API key: `quantray keys create`")


async def get_state(request: Request) -> AppState:
    # async on purpose: FastAPI runs a sync dependency in the threadpool, a hop per request.
    return request.app.state.qr


StateDep = Annotated[AppState, Depends(get_state)]


def get_principal(
    request: Request,
    state: StateDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
) -> Principal:
    """`Authorization: Bearer <key>` -> the key's principal; 401 when missing or invalid."""
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
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "unauthorized", "Authorization header must be 'Bearer <API key>'",
            headers=_CHALLENGE,
        )  # fmt: skip
    principal = verify_key(state.engine, token.strip())
    if principal is None:
        raise ApiError(
            401, "unauthorized", "invalid or revoked API key: ask an admin for a new key",
            headers=_CHALLENGE,
        )  # fmt: skip
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
