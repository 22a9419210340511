"""A deterministic OpenAI-compatible upstream for scenarios that measure token metering, not a model's wit.

It stands where a hosted API or a local server would (outside the system under test): it counts one prompt
token per word plus one per message and always writes ``max_tokens`` tokens, so a scenario knows exactly what
each call is charged. The runner serves it on loopback for a scenario whose ``initial_state.llm`` is ``echo``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request


def echo_llm_app() -> FastAPI:
    app = FastAPI(title="echo LLM")

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> dict[str, Any]:
        body = await request.json()
        max_tokens = int(body.get("max_tokens") or 16)
        prompt = sum(len(str(m.get("content", "")).split()) + 1 for m in body.get("messages", []))
        return {
            "id": "echo-1",
            "object": "chat.completion",
            "model": body.get("model") or "echo",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "echo " * max_tokens},
                    "finish_reason": "length",
                }
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": max_tokens, "total_tokens": prompt + max_tokens},
        }

    return app
