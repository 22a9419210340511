"""The intelligence service: an LLM proxy where tokens are a physical resource, like CPU (seed 001, decision 2).

An execution may spend only the tokens its bundle bought: quota = tokens_percent × LLM_SPEND_LIMIT ×
duration_seconds. Before a request goes upstream, its worst case is reserved from that quota — an upper bound
of the prompt's tokens (a byte-level tokenizer never makes more tokens than the prompt has UTF-8 bytes, plus the
chat template's few per message) plus ``max_tokens`` (set to what is left when the request gives none) — and
taken from the system-wide bucket (LLM_SPEND_LIMIT tokens/s, shared by every runtime on the database). A
request that cannot fit is refused (402 past the quota, 429 past the system limit) before it costs anything.
After the response, the upstream's reported ``usage`` is charged and the rest of the reservation returned; an
upstream error or timeout charges nothing. So an execution never receives more tokens than it bought, however
many requests it runs at once.

Reservations live in this process, which is the one that runs the execution and serves its socket; the
charge is recorded durably with ``intelligence.tokens_consumed`` (and ``executions.tokens_consumed``), for all
requests settled within 100 ms in one transaction, just after their answers went out.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
from sqlalchemy import bindparam, select, update
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from syntropism.config import Settings
from syntropism.core.market import bundle_of
from syntropism.domain.events import RequestDenied, RequestDeniedData, TokensConsumed, TokensConsumedData
from syntropism.domain.models import HardEnvelope
from syntropism.infra.database import Database
from syntropism.infra.outbox import outbox_row, record_event, record_rows
from syntropism.infra.spend_limiter import SpendLimiter
from syntropism.infra.tables import Execution

log = logging.getLogger(__name__)

TEMPLATE_TOKENS_PER_MESSAGE = 8  # role markers and separators a chat template adds around each message
TEMPLATE_TOKENS_PER_REQUEST = 8
RECORD_DELAY = 0.1  # seconds: consumption settled within this long is recorded in one transaction
EXECUTIONS = Execution.__table__
CHARGE_TOKENS = (
    update(EXECUTIONS)
    .where(EXECUTIONS.c.id == bindparam("execution"))
    .values(tokens_consumed=EXECUTIONS.c.tokens_consumed + bindparam("spent"))
)


class InferenceRefused(Exception):
    """A request refused before or by the upstream; ``status`` and ``reason`` for the API's error body."""

    def __init__(self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail, self.headers = status, reason, detail, headers


def prompt_token_bound(messages: list[dict[str, Any]]) -> int:
    """An upper bound of the prompt's tokens: its UTF-8 bytes plus the chat template's per-message tokens."""
    return TEMPLATE_TOKENS_PER_REQUEST + sum(
        len(json.dumps(message, ensure_ascii=False).encode()) + TEMPLATE_TOKENS_PER_MESSAGE for message in messages
    )


@dataclass
class Quota:
    """One execution's tokens: what it bought, what it was charged, what its requests in flight hold."""

    total: int
    consumed: int = 0
    reserved: int = 0
    served: dict[str, bytes | None] = field(default_factory=dict)  # idempotency key → its answer (None: streamed)

    @property
    def remaining(self) -> int:
        return self.total - self.consumed - self.reserved


@dataclass
class _Request:
    agent_id: str
    execution_id: str
    quota: Quota
    reservation: int
    model: str


class IntelligenceService:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.limiter = SpendLimiter(database, rate=settings.llm_spend_limit, window=settings.llm_window_seconds)
        self._quotas: dict[str, Quota] = {}
        self._settled: list[tuple[_Request, int, int, int]] = []
        self._flush_scheduled = False
        self._client: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        await self.flush()
        await run_in_threadpool(self.limiter.close)
        if self._client is not None:
            await self._client.close()
            self._client = None

    # --- the request ----------------------------------------------------------------------------------------

    async def infer(self, agent_id: str, execution_id: str, body: dict[str, Any], key: str) -> Response:
        if not self.settings.llm_base_url:
            raise await self._deny(
                agent_id, execution_id, 503, "no_upstream",
                "no LLM is configured: set SYNTROPISM_LLM_BASE_URL (an OpenAI-compatible /v1 URL: a hosted API, "
                "vLLM, Ollama, llama.cpp server), and SYNTROPISM_LLM_API_KEY if it needs a key",
            )  # fmt: skip
        quota = await self._quota(execution_id)
        if key in quota.served:
            answer = quota.served[key]
            if answer is None:
                raise InferenceRefused(409, "idempotency_conflict", f"a streamed answer ({key!r}) cannot be replayed")
            return Response(answer, media_type="application/json", headers={"X-Replayed": "true"})
        request = await self._admit(agent_id, execution_id, quota, body)
        upstream_body = {**body, "model": request.model, "max_tokens": body["max_tokens"]}
        upstream_body.pop("max_completion_tokens", None)
        if body.get("stream"):
            upstream_body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            quota.served[key] = None
            return await self._stream(request, upstream_body)
        return await self._complete(request, upstream_body, key)

    async def _admit(self, agent_id: str, execution_id: str, quota: Quota, body: dict[str, Any]) -> _Request:
        """Reserve the request's worst case from the quota and from the system-wide bucket, or refuse it."""
        prompt = prompt_token_bound(body["messages"])
        asked = body.get("max_tokens") or body.get("max_completion_tokens")
        max_tokens = int(asked) if asked else quota.remaining - prompt
        reservation = prompt + max_tokens
        if max_tokens < 1 or reservation > quota.remaining:
            raise await self._deny(
                agent_id, execution_id, 402, "quota_exceeded",
                f"this request may use up to {reservation} tokens (prompt ≤ {prompt}, max_tokens {max_tokens}); "
                f"{quota.remaining} of the execution's {quota.total} remain",
                requested=reservation, remaining=quota.remaining,
            )  # fmt: skip
        quota.reserved += reservation  # before any await: concurrent requests see it at once
        try:
            wait = await self.limiter.database.short(self.limiter.try_take, reservation)
        except BaseException:
            quota.reserved -= reservation
            raise
        if wait is not None:
            quota.reserved -= reservation
            retry = "never, at this size" if wait == float("inf") else f"{wait:.1f} s"
            raise await self._deny(
                agent_id, execution_id, 429, "system_limit",
                f"LLM_SPEND_LIMIT ({self.settings.llm_spend_limit} tokens/s) is spent for now; retry in {retry}",
                requested=reservation, remaining=quota.remaining,
                headers={"Retry-After": str(max(1, int(wait) + 1))} if wait != float("inf") else None,
            )  # fmt: skip
        body["max_tokens"] = max_tokens
        model = body.get("model") or self.settings.llm_default_model or ""
        return _Request(agent_id, execution_id, quota, reservation, self.settings.llm_model_map.get(model, model))

    async def _send(
        self, request: _Request, upstream_body: dict[str, Any], *, stream: bool
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        """The upstream's answer and, unless streaming, its body; a timeout is 504, anything else that goes
        wrong 502, and neither is charged."""
        try:
            response = await self._http().post(self._completions_url, json=upstream_body)
            content = b"" if stream and response.status < 400 else await response.read()
        except TimeoutError:
            timeout = self.settings.llm_timeout_seconds
            raise await self._fail(request, 504, "upstream_timeout", f"no answer within {timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise await self._fail(request, 502, "upstream_unreachable", f"{type(exc).__name__}: {exc}") from None
        if response.status >= 400:
            text = content.decode(errors="replace")[:500]
            raise await self._fail(request, 502, "upstream_error", f"upstream answered {response.status}: {text}")
        return response, content

    async def _complete(self, request: _Request, upstream_body: dict[str, Any], key: str) -> Response:
        _response, content = await self._send(request, upstream_body, stream=False)
        try:
            answer = json.loads(content)
        except ValueError:
            raise await self._fail(request, 502, "upstream_error", "the upstream's answer is not JSON") from None
        prompt, completion = self._usage(answer.get("usage") if isinstance(answer, dict) else None, request)
        remaining = self._charge(request, prompt, completion)
        request.quota.served[key] = content
        return Response(
            content,
            media_type="application/json",
            headers={"X-Tokens-Remaining": str(remaining)},
            background=BackgroundTask(self._settle, request, prompt, completion, remaining),  # after the answer
        )

    async def _stream(self, request: _Request, upstream_body: dict[str, Any]) -> Response:
        response, _ = await self._send(request, upstream_body, stream=True)

        async def relay() -> AsyncIterator[bytes]:
            usage: dict[str, Any] | None = None
            try:
                async for raw in response.content:
                    line = raw.decode(errors="replace").rstrip("\r\n")
                    if line.startswith("data: ") and line != "data: [DONE]":
                        try:
                            chunk = json.loads(line[6:])
                        except ValueError:
                            chunk = {}
                        usage = chunk.get("usage") or usage
                    yield (line + "\n").encode()
            finally:
                response.release()
                prompt, completion = self._usage(usage, request)
                remaining = self._charge(request, prompt, completion)
                await self._settle(request, prompt, completion, remaining)

        return StreamingResponse(relay(), media_type="text/event-stream")

    # --- metering -------------------------------------------------------------------------------------------

    def _usage(self, usage: dict[str, Any] | None, request: _Request) -> tuple[int, int]:
        """The upstream's count; without one, the whole reservation is charged (never less than was used)."""
        try:
            prompt, completion = int(usage["prompt_tokens"]), int(usage["completion_tokens"])  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            log.warning("upstream reported no usage for execution %s: charging its reservation", request.execution_id)
            return 0, request.reservation
        return prompt, completion

    @staticmethod
    def _charge(request: _Request, prompt: int, completion: int) -> int:
        """Replace the reservation by what was used (never more than reserved); returns what remains."""
        used = min(prompt + completion, request.reservation)
        request.quota.reserved -= request.reservation
        request.quota.consumed += used
        return request.quota.remaining

    async def _settle(self, request: _Request, prompt: int, completion: int, remaining: int) -> None:
        """Queue the consumption for the next record: one durable transaction for every request settled within
        ``RECORD_DELAY`` (the quota itself was charged already, in memory, before the answer went out)."""
        self._settled.append((request, prompt, completion, remaining))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(RECORD_DELAY, lambda: asyncio.ensure_future(self.flush()))

    async def flush(self) -> None:
        self._flush_scheduled = False
        settled, self._settled = self._settled, []
        if settled:
            await run_in_threadpool(self._record_consumption, settled)

    def _record_consumption(self, settled: list[tuple[_Request, int, int, int]]) -> None:
        """Give unused reservations back to the system-wide bucket; record what was used, with its events."""
        used = [(request, min(prompt + completion, request.reservation)) for request, prompt, completion, _ in settled]
        self.limiter.give_back(sum(request.reservation - spent for request, spent in used))
        per_execution: dict[str, int] = {}
        for request, spent in used:
            per_execution[request.execution_id] = per_execution.get(request.execution_id, 0) + spent
        events = [
            TokensConsumed(
                agent_id=request.agent_id,
                data=TokensConsumedData(
                    execution_id=request.execution_id,
                    model=request.model or "default",
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    remaining_quota=max(0, remaining),
                ),
            )
            for request, prompt, completion, remaining in settled
        ]
        with self.database.transaction() as session:
            session.connection().execute(
                CHARGE_TOKENS, [{"execution": e, "spent": spent} for e, spent in per_execution.items()]
            )
            record_rows(session, [outbox_row(event) for event in events])

    async def _fail(self, request: _Request, status: int, reason: str, detail: str) -> InferenceRefused:
        """The upstream failed: nothing is charged, the reservation goes back to the quota and the bucket."""
        request.quota.reserved -= request.reservation
        await self.limiter.database.short(self.limiter.give_back, request.reservation)
        return await self._deny(
            request.agent_id, request.execution_id, status, reason, detail, remaining=request.quota.remaining
        )

    async def _deny(
        self,
        agent_id: str,
        execution_id: str,
        status: int,
        reason: str,
        detail: str,
        *,
        requested: int | None = None,
        remaining: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> InferenceRefused:
        event = RequestDenied(
            agent_id=agent_id,
            data=RequestDeniedData(
                execution_id=execution_id,
                reason=reason,
                detail=detail[:1000],
                requested_tokens=requested,
                remaining_quota=max(0, remaining) if remaining is not None else None,
            ),
        )
        await run_in_threadpool(self._record, event)
        return InferenceRefused(status, reason, detail, headers)

    def _record(self, event: RequestDenied) -> None:
        with self.database.transaction() as session:
            record_event(session, event)

    async def _quota(self, execution_id: str) -> Quota:
        quota = self._quotas.get(execution_id)
        if quota is None:
            quota = await run_in_threadpool(self._load_quota, execution_id)
            quota = self._quotas.setdefault(execution_id, quota)
        return quota

    def _load_quota(self, execution_id: str) -> Quota:
        with self.database.reader() as session:
            execution = session.scalars(select(Execution).where(Execution.id == execution_id)).one()
            envelope = HardEnvelope.of(
                bundle_of(execution),
                cpu_cores=Decimal(str(self.settings.cpu_cores)),
                memory_bytes=self.settings.memory_bytes,
                llm_spend_limit=self.settings.llm_spend_limit,
            )
            return Quota(envelope.token_quota, consumed=execution.tokens_consumed or 0)

    def forget(self, execution_id: str) -> None:
        """The execution ended: its reservations and replay cache go."""
        self._quotas.pop(execution_id, None)

    @property
    def _completions_url(self) -> str:
        return f"{(self.settings.llm_base_url or '').rstrip('/')}/chat/completions"

    def _http(self) -> aiohttp.ClientSession:
        """aiohttp rather than httpx here: per request it costs about a third, and this is the hot path."""
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.settings.llm_api_key}"} if self.settings.llm_api_key else {}
            timeout = aiohttp.ClientTimeout(total=self.settings.llm_timeout_seconds)
            self._client = aiohttp.ClientSession(headers=headers, timeout=timeout)
        return self._client
