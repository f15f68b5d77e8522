"""Pure ASGI middleware that caps request bodies: a too-large Content-Length is refused
before reading; a chunked body that grows past the cap raises `BodyTooLarge` mid-read."""

from __future__ import annotations

import json
from typing import Any

from service.errors import BodyTooLarge, error_body, too_large_body


class BodyLimitMiddleware:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await _respond(send, 400, error_body("malformed", "Content-Length is not a number"))
                return
            if too_big:
                await _respond(send, 413, too_large_body(self.max_bytes))
                return
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


async def _respond(send: Any, status: int, body: dict) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()  # as JSONResponse writes it
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
