"""A small OpenAI-compatible upstream for tests (outside our system, so a fake is fair): real HTTP, real SSE.

It counts a prompt as one token per word plus one per message, and always writes ``max_tokens`` tokens, so a
test knows exactly what it will be charged. Model names steer it: ``broken`` answers 500, ``slow`` takes 5 s,
``no-usage`` reports no usage.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.support.api import serving


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content", "")).split()) + 1 for m in messages)


def fake_llm_app() -> FastAPI:
    app = FastAPI()
    app.state.calls = []

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> Any:
        body = await request.json()
        app.state.calls.append(body)
        model, max_tokens = body.get("model") or "fake", int(body.get("max_tokens") or 16)
        if model == "broken":
            return JSONResponse({"error": {"message": "the model fell over"}}, status_code=500)
        if model == "slow":
            await asyncio.sleep(5)
        usage = {"prompt_tokens": prompt_tokens(body["messages"]), "completion_tokens": max_tokens}
        usage["total_tokens"] = usage["prompt_tokens"] + max_tokens
        if body.get("stream"):
            return StreamingResponse(stream(model, max_tokens, usage, body), media_type="text/event-stream")
        answer: dict[str, Any] = {
            "id": "cmpl-1",
            "object": "chat.completion",
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "tok " * max_tokens},
                    "finish_reason": "length",
                }
            ],
        }
        if model != "no-usage":
            answer["usage"] = usage
        return answer

    return app


async def stream(model: str, max_tokens: int, usage: dict[str, int], body: dict[str, Any]) -> AsyncIterator[bytes]:
    for _ in range(max_tokens):
        chunk = {
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": {"content": "tok "}}],
        }
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    if (body.get("stream_options") or {}).get("include_usage") and model != "no-usage":
        yield f"data: {json.dumps({'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n".encode()
    yield b"data: [DONE]\n\n"


@contextmanager
def fake_llm() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Serve the fake; yields its base URL (…/v1) and the list of request bodies it received."""
    app = fake_llm_app()
    with serving(app) as server:
        yield f"{server.url}/v1", app.state.calls
