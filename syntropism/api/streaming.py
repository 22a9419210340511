"""The HTTP of an inference answer: a whole one as JSON with what is left of the quota, a streamed one as
server-sent events — each settled (its use recorded) only after it went out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import Response, StreamingResponse

from syntropism.core.intelligence import Answer, Stream


class SettledStream(StreamingResponse):
    """A streamed answer that settles its request however the response ends: a relay that never began (the
    client left first) has no ``finally`` of its own to run."""

    def __init__(self, content: AsyncIterator[bytes], settle: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._settle = settle

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._settle()


def inference_response(result: Answer | Stream) -> Response:
    """The answer as the agent's OpenAI-compatible client expects it, with ``X-Tokens-Remaining`` (and
    ``X-Replayed`` on a repeat served from the first answer)."""
    if isinstance(result, Stream):
        return SettledStream(result.chunks, result.settle, media_type="text/event-stream")
    headers = {"X-Tokens-Remaining": str(result.tokens_remaining)}
    if result.replayed:
        headers = {"X-Replayed": "true", **headers}
    background = BackgroundTask(result.settle) if result.settle is not None else None
    return Response(result.body, media_type="application/json", headers=headers, background=background)
