"""The request-size limit, enforced before routing: no request body larger than ``max_request_bytes`` is read,
whoever sends it and whatever route it names — the token is checked only after the body is read, so without
this any local process could make the service buffer gigabytes."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestSizeLimit:
    """ASGI middleware: ``413`` for a declared ``Content-Length`` over the limit (the body is never read), and
    for a streamed body as soon as it passes the limit (the app then sees the client gone)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            if declared > self.max_bytes:
                await self._refuse(send, f"the request body is {declared} bytes, over the limit of {self.max_bytes}")
            else:  # the HTTP parser delivers no more than the declared length: nothing to count
                await self.app(scope, receive, send)
            return
        seen = 0
        answered = False  # the status line went out: from the app, or our 413

        async def limited_receive() -> Message:
            nonlocal seen, answered
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    if not answered:
                        answered = True
                        await self._refuse(send, f"the request body is over the limit of {self.max_bytes} bytes")
                    return {"type": "http.disconnect"}  # the app stops reading; what it answers is dropped
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if seen > self.max_bytes:
                return
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    @staticmethod
    async def _refuse(send: Send, detail: str) -> None:
        body = json.dumps({"error": "payload_too_large", "reason": "request_too_large", "detail": detail}).encode()
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers") or []
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
