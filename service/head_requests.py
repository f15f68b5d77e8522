"""Pure ASGI middleware: HEAD answers as GET would, without the body.

FastAPI's routes answer only the methods they declare, so `curl -I` on a status, a plot or
an artifact got a 405. Here a HEAD request is routed as a GET (auth, checks and headers
alike, Content-Length included) and the body is dropped on the way out.
"""

from __future__ import annotations

from typing import Any


class HeadAsGetMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: dict) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)
