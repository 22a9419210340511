"""A small OpenAI-compatible upstream for tests (outside our system, so a fake is fair): real HTTP, real SSE.

It counts a prompt as one token per word plus one per message, and always writes ``max_tokens`` tokens for each
of the ``n`` choices, so a test knows exactly what it will be charged. Model names steer it: ``broken`` answers
500, ``slow`` takes 5 s, ``sleep-0.3`` takes 0.3 s, ``no-usage`` reports no usage. It records every request
body it received, and when each was being served (``calls.spans``: start, end, body), so a test can see what was
upstream at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.support.api import serving


class Calls(list[dict[str, Any]]):
    """The request bodies the fake received, in order; ``spans`` says when each was in flight (monotonic s)."""

    def __init__(self) -> None:
        super().__init__()
        self.spans: list[tuple[float, float, dict[str, Any]]] = []

    def peak(self, weight: Any) -> int:
        """The most ``weight(body)`` summed over requests that were upstream at the same moment."""
        edges = sorted(
            [(start, 1, weight(body)) for start, _end, body in self.spans]
            + [(end, 0, -weight(body)) for _start, end, body in self.spans]
        )  # at one instant an end comes before a start: touching spans do not overlap
        level = peak = 0
        for _at, _kind, change in edges:
            level += change
            peak = max(peak, level)
        return peak


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content", "")).split()) + 1 for m in messages)


def fake_llm_app() -> FastAPI:
    app = FastAPI()
    app.state.calls = Calls()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> Any:
        began = time.monotonic()
        body = await request.json()
        app.state.calls.append(body)
        try:
            return await answer(body, began)
        finally:
            if not body.get("stream"):
                app.state.calls.spans.append((began, time.monotonic(), body))

    async def answer(body: dict[str, Any], began: float) -> Any:
        model, max_tokens, n = body.get("model") or "fake", int(body.get("max_tokens") or 16), int(body.get("n") or 1)
        if model == "broken":
            return JSONResponse({"error": {"message": "the model fell over"}}, status_code=500)
        if model == "slow":
            await asyncio.sleep(5)
        if model.startswith("sleep-"):
            await asyncio.sleep(float(model.removeprefix("sleep-")))
        usage = {"prompt_tokens": prompt_tokens(body["messages"]), "completion_tokens": n * max_tokens}
        usage["total_tokens"] = usage["prompt_tokens"] + n * max_tokens
        if body.get("stream"):
            return StreamingResponse(
                spanned(stream(model, max_tokens, usage, body), body, began), media_type="text/event-stream"
            )
        answer: dict[str, Any] = {
            "id": "cmpl-1",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": index,
                    "message": {"role": "assistant", "content": "tok " * max_tokens},
                    "finish_reason": "length",
                }
                for index in range(n)
            ],
        }
        if model != "no-usage":
            answer["usage"] = usage
        return answer

    async def spanned(chunks: AsyncIterator[bytes], body: dict[str, Any], began: float) -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            app.state.calls.spans.append((began, time.monotonic(), body))

    return app


async def stream(model: str, max_tokens: int, usage: dict[str, int], body: dict[str, Any]) -> AsyncIterator[bytes]:
    for _ in range(max_tokens):
        for index in range(int(body.get("n") or 1)):
            chunk = {
                "object": "chat.completion.chunk",
                "model": model,
                "choices": [{"index": index, "delta": {"content": "tok "}}],
            }
            yield f"data: {json.dumps(chunk)}\n\n".encode()
    if (body.get("stream_options") or {}).get("include_usage") and model != "no-usage":
        yield f"data: {json.dumps({'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n".encode()
    yield b"data: [DONE]\n\n"


@contextmanager
def fake_llm() -> Iterator[tuple[str, Calls]]:
    """Serve the fake; yields its base URL (…/v1) and the request bodies it received (a ``Calls``)."""
    app = fake_llm_app()
    with serving(app) as server:
        yield f"{server.url}/v1", app.state.calls
