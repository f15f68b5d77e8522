"""The FastAPI application: `create_app(settings)` wires state, middleware and routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service.body_limit import BodyLimitMiddleware
from service.errors import UnexpectedErrorMiddleware, install_handlers
from service.head_requests import HeadAsGetMiddleware
from service.metrics import MetricsMiddleware
from service.routes_jobs import router as jobs_router
from service.routes_results import router as results_router
from service.routes_system import router as system_router
from service.settings import Settings
from service.state import AppState

DESCRIPTION = """Submit market-forecasting training jobs to a Ray cluster, follow them, and
read their leaderboards, plots and model artifacts. Authenticate with
`Authorization: Bearer <API key>`."""


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's document, with the limits only the settings know: `page_size`'s maximum
    (QUANTRAY_MAX_PAGE_SIZE), which a client would otherwise learn from a 422."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for param in schema["paths"]["/v1/jobs"]["get"].get("parameters", []):
            if param.get("name") == "page_size":
                for branch in param["schema"].get("anyOf", [param["schema"]]):
                    if branch.get("type") == "integer":
                        branch["maximum"] = settings.max_page_size
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: Settings) -> FastAPI:
    """Build the app; its state (DB, Ray client, dispatcher) is created here, so bad settings
    fail before the server binds, and the dispatcher starts with the lifespan."""
    state = AppState.build(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(title="quantray", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.qr = state
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    install_handlers(app)
    app.include_router(jobs_router)
    app.include_router(results_router)
    app.include_router(system_router)
    # Outermost last: metrics see every request, including those the body limit refuses
    # and the 500s of unexpected errors (answered innermost, so the connection survives).
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.add_middleware(HeadAsGetMiddleware)  # outermost: everything inside sees a GET
    return app
