"""The intelligence service: an LLM proxy where tokens are a physical resource, like CPU (seed 001, decision 2).

An execution may spend only the tokens its bundle bought: quota = tokens_percent × LLM_SPEND_LIMIT ×
duration_seconds. Before a request goes upstream, its worst case is reserved from that quota and taken from the
system-wide bucket (LLM_SPEND_LIMIT tokens/s, burst LLM_SPEND_LIMIT × llm_window_seconds, shared by every
runtime on the database). The worst case is an upper bound of everything that makes or is made of tokens:

- the prompt: a byte-level tokenizer never makes more tokens than its text has UTF-8 bytes, so the bound is the
  UTF-8 bytes of each message, of the tools (or functions) and the response format (as JSON, pretty-printed as
  some chat templates render them), of the tool choice and of the stop sequences, plus the tokens a chat
  template adds around each (``prompt_token_bound``);
- the completion: ``n`` × ``max_tokens``. A request that gives no ``max_tokens`` gets ``DEFAULT_MAX_TOKENS``
  (1024) per choice, or less when less is left of the quota or when the bucket's burst could never hold more —
  never "whatever is left", which would hold the shared bucket for one slow request.

A request that cannot fit is refused before it costs anything: ``quota_exceeded`` past the quota,
``system_limit`` (with the seconds to retry after) when the bucket is spent for now, ``exceeds_system_limit``
when it could never hold the request — each saying which ``max_tokens`` would fit. After the response the upstream's
reported ``usage`` is charged (at most the reservation, which bounds it; a missing ``usage`` charges the whole
reservation) and the rest is returned to the quota and the bucket; an upstream error or timeout charges
nothing. So an execution never receives more tokens than it bought, however many requests it runs at once.

Idempotency: a repeat of a key with the same body replays the first answer (a streamed one cannot be); a
key reused for a different body is refused (``idempotency_conflict``, compared by a hash of the canonical
body); a repeat that arrives while the first is in flight waits for it and replays it. Each execution keeps
its last ``REPLAY_ANSWERS`` answers (up to ``REPLAY_BYTES``) and the body hashes of its last ``REPLAY_KEYS``
keys; a repeat whose answer is no longer kept is refused, a key older than that is new again.

Reservations live in this process, which is the one that runs the execution and serves its socket; the charge
is recorded durably with ``intelligence.tokens_consumed`` (and ``executions.tokens_consumed``), for all requests
settled within ``RECORD_DELAY`` in one transaction, just after their answers went out. A record that fails
(the database busy) is kept, logged and retried; nothing charged is lost.

The service answers with plain results — an :class:`Answer` (the upstream's body, as it sent it) or a
:class:`Stream` (its lines, relayed as they come) — and refuses with :class:`InferenceRefused`; the API makes
the HTTP of them. The upstream itself is :class:`~syntropism.infra.upstream_llm.UpstreamLLM`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from anyio import to_thread

from syntropism.config import Settings
from syntropism.core.market import bundle_of
from syntropism.domain.errors import Reason, Refused
from syntropism.domain.events import RequestDenied, RequestDeniedData, TokensConsumed, TokensConsumedData
from syntropism.domain.models import HardEnvelope
from syntropism.infra.database import Database
from syntropism.infra.metering import charge_tokens, metered_execution
from syntropism.infra.outbox import outbox_row, record_event, record_rows
from syntropism.infra.spend_limiter import SpendLimiter
from syntropism.infra.upstream_llm import UpstreamFailed, UpstreamLLM, UpstreamStream

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MAX_TOKENS = 1024  # per choice, for a request that names no max_tokens
TEMPLATE_TOKENS_PER_MESSAGE = 8  # role markers and separators a chat template adds around each message
TEMPLATE_TOKENS_PER_REQUEST = 8
TEMPLATE_TOKENS_PER_FIELD = 64  # what a template may wrap around tools, a response format, a tool choice
TEMPLATE_TOKENS_FOR_TOOLS = 256  # the instructions a template puts before a list of tools ("You may call…")
TEMPLATE_TOKENS_PER_TOOL = 16
SCHEMA_FIELDS = ("tools", "functions", "response_format")  # JSON a template may pretty-print into the prompt
TEXT_FIELDS = ("tool_choice", "function_call", "stop")
REPLAY_ANSWERS = 64  # answers kept per execution for replay…
REPLAY_BYTES = 2 * 1024 * 1024  # …and their bytes at most
REPLAY_KEYS = 4096  # idempotency keys (with their body's hash) remembered per execution
RECORD_DELAY = 0.1  # seconds: consumption settled within this long is recorded in one transaction
RECORD_RETRY_DELAY = 1.0  # seconds before a failed record is tried again
DENIAL_DETAIL_CHARS = 1000


class InferenceRefused(Refused):
    """A request refused before or by the upstream. ``retry_after``: the seconds after which the same request
    may fit (the system-wide bucket spent for now), when that is known."""

    def __init__(self, reason: Reason, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(reason, detail)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Answer:
    """A whole answer: the upstream's JSON ``body`` as it sent it (or as it was first served, ``replayed``) and
    the tokens left of the quota. ``settle``, when there is one, records the request: await it once the answer
    went out, so the record never delays it."""

    body: bytes
    tokens_remaining: int
    replayed: bool = False
    settle: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True)
class Stream:
    """A streamed answer: its server-sent-event lines, relayed as the upstream writes them. ``settle`` must be
    called however the response ends — a relay never begun (the client left first) cannot settle itself; it is
    settled once, whoever calls first."""

    chunks: AsyncIterator[bytes]
    settle: Callable[[], None]


_COMPACT = json.JSONEncoder(ensure_ascii=False)  # made once: json.dumps with options makes one per call
_INDENTED = json.JSONEncoder(ensure_ascii=False, indent=4)
_CANONICAL = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _utf8_bytes(value: Any, encoder: json.JSONEncoder = _COMPACT) -> int:
    return len(encoder.encode(value).encode("utf-8", "surrogatepass"))


def prompt_token_bound(request: Mapping[str, Any]) -> int:
    """An upper bound of the prompt's tokens: the UTF-8 bytes of everything a chat template renders into it (the
    messages; the tools, functions and response format as JSON, indented as some templates render them; the tool
    choice; the stop sequences, counted too) plus the tokens the template adds around each."""
    bound = TEMPLATE_TOKENS_PER_REQUEST + sum(
        _utf8_bytes(message) + TEMPLATE_TOKENS_PER_MESSAGE for message in request["messages"]
    )
    for name in SCHEMA_FIELDS:
        value = request.get(name)
        if value:
            bound += _utf8_bytes(value, _INDENTED) + TEMPLATE_TOKENS_PER_FIELD
            if isinstance(value, list):
                bound += TEMPLATE_TOKENS_FOR_TOOLS + TEMPLATE_TOKENS_PER_TOOL * len(value)
    for name in TEXT_FIELDS:
        value = request.get(name)
        if value is not None:
            bound += _utf8_bytes(value) + TEMPLATE_TOKENS_PER_FIELD
    return bound


def request_digest(request: Mapping[str, Any]) -> bytes:
    """The SHA-256 of the canonical request body: what tells a repeat from another request under the same key."""
    return hashlib.sha256(_CANONICAL.encode(request).encode("utf-8", "surrogatepass")).digest()


@dataclass
class Quota:
    """One execution's tokens: what it bought, what it was charged, what its requests in flight hold; and what
    its idempotency keys were used for."""

    total: int
    consumed: int = 0
    reserved: int = 0
    keys: OrderedDict[str, tuple[bytes, bool]] = field(default_factory=OrderedDict)  # key → (body hash, streamed)
    answers: OrderedDict[str, bytes] = field(default_factory=OrderedDict)  # key → its answer, for replay
    answer_bytes: int = 0
    in_flight: dict[str, tuple[bytes, asyncio.Future[None]]] = field(default_factory=dict)  # key → (hash, done)

    @property
    def remaining(self) -> int:
        return self.total - self.consumed - self.reserved

    def remember(self, key: str, digest: bytes, answer: bytes | None) -> None:
        """Keep what ``key`` was used for (``answer`` None: streamed, not replayable), within the bounds."""
        self.keys[key] = (digest, answer is None)
        while len(self.keys) > REPLAY_KEYS:
            oldest, _ = self.keys.popitem(last=False)
            self.answer_bytes -= len(self.answers.pop(oldest, b""))
        if answer is not None and len(answer) <= REPLAY_BYTES:
            self.answers[key] = answer
            self.answer_bytes += len(answer)
            while len(self.answers) > REPLAY_ANSWERS or self.answer_bytes > REPLAY_BYTES:
                _, dropped = self.answers.popitem(last=False)
                self.answer_bytes -= len(dropped)


@dataclass
class _Request:
    agent_id: str
    execution_id: str
    quota: Quota
    reservation: int
    max_tokens: int
    model: str


Settled = tuple[_Request, int, int, int]  # a request, its prompt and completion tokens, the quota left after it


class IntelligenceService:
    """The metered proxy: admits, forwards and charges each execution's inference requests."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.limiter = SpendLimiter(database, rate=settings.llm_spend_limit, window=settings.llm_window_seconds)
        self._quotas: dict[str, Quota] = {}
        self._settled: list[Settled] = []
        self._unreturned = 0  # tokens recorded as unused whose return to the bucket failed: returned next flush
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Future[bool]] = set()
        self.upstream = UpstreamLLM(settings.llm_base_url or "", settings.llm_api_key, settings.llm_timeout_seconds)

    async def close(self) -> None:
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        for _attempt in range(3):
            if await self.flush():
                break
            await asyncio.sleep(0.2)
        else:
            log.error(
                "closing with %d inference request(s) not recorded (%d tokens charged in memory only) and %d tokens "
                "not returned to the system-wide bucket: see the errors above",
                len(self._settled), sum(self._spent(self._settled)), self._unreturned,
            )  # fmt: skip
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        await to_thread.run_sync(self.limiter.close)
        await self.upstream.close()

    # --- the request ----------------------------------------------------------------------------------------

    async def infer(self, agent_id: str, execution_id: str, body: dict[str, Any], key: str) -> Answer | Stream:
        """Serve ``body`` (a validated ``InferenceIn``) under idempotency ``key``: replay a repeat, make a repeat
        that arrives while the first is in flight wait for it, refuse another body under a used key."""
        if not self.settings.llm_base_url:
            raise await self._deny(
                agent_id, execution_id, Reason.NO_UPSTREAM,
                "no LLM is configured: set SYNTROPISM_LLM_BASE_URL (an OpenAI-compatible /v1 URL: a hosted API, "
                "vLLM, Ollama, llama.cpp server), and SYNTROPISM_LLM_API_KEY if it needs a key",
            )  # fmt: skip
        digest = request_digest(body)
        quota = await self._quota(execution_id)
        while True:  # no await between looking and registering: the first of two same-key requests owns the key
            replay = self._replay(quota, key, digest)
            if replay is not None:
                return replay
            first = quota.in_flight.get(key)
            if first is None:
                break
            if first[0] != digest:
                raise InferenceRefused(
                    Reason.IDEMPOTENCY_CONFLICT,
                    f"another request under the key {key!r} is in flight; use a new key for a new request",
                )  # fmt: skip
            await asyncio.shield(first[1])  # then replay its answer, or try again if it failed
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        quota.in_flight[key] = (digest, done)
        try:
            return await self._forward(agent_id, execution_id, quota, body, key, digest)
        finally:
            del quota.in_flight[key]
            done.set_result(None)

    @staticmethod
    def _replay(quota: Quota, key: str, digest: bytes) -> Answer | None:
        """The answer already served under ``key`` for this body; None if the key is new; refused if it cannot
        be replayed."""
        used = quota.keys.get(key)
        if used is None:
            return None
        if used[0] != digest:
            raise InferenceRefused(
                Reason.IDEMPOTENCY_CONFLICT,
                f"the key {key!r} was used for a different request; use a new key for a new request",
            )  # fmt: skip
        if used[1]:
            raise InferenceRefused(Reason.IDEMPOTENCY_CONFLICT, f"a streamed answer ({key!r}) cannot be replayed")
        answer = quota.answers.get(key)
        if answer is None:
            raise InferenceRefused(
                Reason.IDEMPOTENCY_CONFLICT,
                f"the answer under the key {key!r} is no longer kept (an execution keeps its last {REPLAY_ANSWERS} "
                f"answers, {REPLAY_BYTES} bytes at most); use a new key",
            )  # fmt: skip
        return Answer(answer, quota.remaining, replayed=True)

    async def _forward(
        self, agent_id: str, execution_id: str, quota: Quota, body: dict[str, Any], key: str, digest: bytes
    ) -> Answer | Stream:
        request = await self._admit(agent_id, execution_id, quota, body)
        upstream_body = {**body, "model": request.model, "max_tokens": request.max_tokens}
        upstream_body.pop("max_completion_tokens", None)
        if body.get("stream"):
            upstream_body["stream_options"] = {"include_usage": True}  # the usage is what is charged
            return await self._stream(request, upstream_body, key, digest)
        upstream_body.pop("stream_options", None)
        return await self._complete(request, upstream_body, key, digest)

    async def _admit(self, agent_id: str, execution_id: str, quota: Quota, body: dict[str, Any]) -> _Request:
        """Reserve the request's worst case — its prompt bound plus n × max_tokens — from the quota and from the
        system-wide bucket, or refuse it saying what would fit."""
        prompt = prompt_token_bound(body)
        n = int(body.get("n") or 1)
        burst = math.floor(self.limiter.capacity)
        room = (quota.remaining - prompt) // n  # the most max_tokens the quota allows
        ever = (burst - prompt) // n  # the most max_tokens the bucket can ever hold
        asked = body.get("max_tokens") or body.get("max_completion_tokens")
        max_tokens = int(asked) if asked else max(1, min(DEFAULT_MAX_TOKENS, room, ever))
        reservation = prompt + n * max_tokens
        completion = f"max_tokens {max_tokens}" if n == 1 else f"n {n} × max_tokens {max_tokens}"
        if max_tokens > room:
            most = min(room, ever)  # what fits the quota and the bucket alike
            fits = (
                f"max_tokens ≤ {most} would fit" if most >= 1 else f"no max_tokens would (its prompt may use {prompt})"
            )
            raise await self._deny(
                agent_id, execution_id, Reason.QUOTA_EXCEEDED,
                f"this request may use up to {reservation} tokens (prompt ≤ {prompt}, {completion}); "
                f"{quota.remaining} of the execution's {quota.total} remain: {fits}",
                requested=reservation, remaining=quota.remaining,
            )  # fmt: skip
        if max_tokens > ever:
            fits = f"max_tokens ≤ {ever} would" if ever >= 1 else "its prompt alone is too large"
            raise await self._deny(
                agent_id, execution_id, Reason.EXCEEDS_SYSTEM_LIMIT,
                f"this request may use up to {reservation} tokens (prompt ≤ {prompt}, {completion}): more than the "
                f"system-wide bucket ever holds ({burst} = LLM_SPEND_LIMIT {self.settings.llm_spend_limit} tokens/s × "
                f"llm_window_seconds {self.settings.llm_window_seconds:g}), so it can never fit; {fits}",
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
                agent_id, execution_id, Reason.SYSTEM_LIMIT,
                f"LLM_SPEND_LIMIT ({self.settings.llm_spend_limit} tokens/s) is spent for now; retry in {retry}",
                requested=reservation, remaining=quota.remaining,
                retry_after=max(1, int(wait) + 1) if wait != float("inf") else None,
            )  # fmt: skip
        model = body.get("model") or self.settings.llm_default_model or ""
        mapped = self.settings.llm_model_map.get(model, model)
        return _Request(agent_id, execution_id, quota, reservation, max_tokens, mapped)

    async def _send(self, request: _Request, call: Awaitable[T]) -> T:
        """What the upstream ``call`` gives; a failure (a timeout, no connection, an error status) is refused and
        not charged. Cancelled meanwhile (the runtime stopping), the request is charged its whole reservation:
        the upstream may have written it all."""
        try:
            return await call
        except UpstreamFailed as failed:
            raise await self._fail(request, failed.reason, failed.detail) from None
        except asyncio.CancelledError:
            self._queue(request, 0, request.reservation, self._charge(request, 0, request.reservation))
            raise

    async def _complete(self, request: _Request, upstream_body: dict[str, Any], key: str, digest: bytes) -> Answer:
        content = await self._send(request, self.upstream.complete(upstream_body))
        try:
            answer = json.loads(content)
        except ValueError:
            raise await self._fail(request, Reason.UPSTREAM_ERROR, "the upstream's answer is not JSON") from None
        prompt, completion = self._usage(answer.get("usage") if isinstance(answer, dict) else None, request)
        remaining = self._charge(request, prompt, completion)
        request.quota.remember(key, digest, content)
        settle = functools.partial(self._settle, request, prompt, completion, remaining)
        return Answer(content, remaining, settle=settle)

    async def _stream(self, request: _Request, upstream_body: dict[str, Any], key: str, digest: bytes) -> Stream:
        response: UpstreamStream = await self._send(request, self.upstream.stream(upstream_body))
        request.quota.remember(key, digest, None)
        usage: dict[str, Any] | None = None
        settled = False

        def settle() -> None:  # once, when the relay ends — or when the client left before it began
            nonlocal settled
            if not settled:
                settled = True
                response.release()
                prompt, completion = self._usage(usage, request)
                self._queue(request, prompt, completion, self._charge(request, prompt, completion))

        async def relay() -> AsyncIterator[bytes]:
            nonlocal usage
            try:
                async for raw in response.lines:
                    line = raw.decode(errors="replace").rstrip("\r\n")
                    if line.startswith("data: ") and line != "data: [DONE]":
                        try:
                            chunk = json.loads(line[6:])
                        except ValueError:
                            chunk = None
                        if isinstance(chunk, dict) and chunk.get("usage"):
                            usage = chunk["usage"]
                    yield (line + "\n").encode()
            finally:
                settle()

        return Stream(relay(), settle)

    # --- metering -------------------------------------------------------------------------------------------

    def _usage(self, usage: dict[str, Any] | None, request: _Request) -> tuple[int, int]:
        """The upstream's count; without one, the whole reservation is charged (never less than was used)."""
        try:
            prompt, completion = int(usage["prompt_tokens"]), int(usage["completion_tokens"])  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            log.warning("upstream reported no usage for execution %s: charging its reservation", request.execution_id)
            return 0, request.reservation
        return max(0, prompt), max(0, completion)

    @staticmethod
    def _charge(request: _Request, prompt: int, completion: int) -> int:
        """Replace the reservation by what was used; returns what remains. The reservation bounds what the
        upstream can use, so the charge is what it reported; an upstream that reports more is charged the
        reservation (and logged: its tokenizer or template breaks the bound)."""
        if prompt + completion > request.reservation:
            log.warning(
                "upstream reported %d tokens for a request of execution %s that reserved %d: charging the reservation",
                prompt + completion, request.execution_id, request.reservation,
            )  # fmt: skip
        used = min(prompt + completion, request.reservation)
        request.quota.reserved -= request.reservation
        request.quota.consumed += used
        return request.quota.remaining

    async def _settle(self, request: _Request, prompt: int, completion: int, remaining: int) -> None:
        self._queue(request, prompt, completion, remaining)

    def _queue(self, request: _Request, prompt: int, completion: int, remaining: int) -> None:
        """Queue the consumption for the next record: one durable transaction for every request settled within
        ``RECORD_DELAY`` (the quota itself was charged already, in memory, before the answer went out)."""
        self._settled.append((request, prompt, completion, remaining))
        self._schedule_flush(RECORD_DELAY)

    def _schedule_flush(self, delay: float) -> None:
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(delay, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_handle = None
        task = asyncio.ensure_future(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self) -> bool:
        """Record everything settled so far; True when it all was. What fails to be recorded (the database busy)
        is logged, kept, and tried again in ``RECORD_RETRY_DELAY`` — never lost."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        settled, self._settled = self._settled, []
        unreturned, self._unreturned = self._unreturned, 0
        if not settled and not unreturned:
            return True
        try:
            unreturned = await to_thread.run_sync(self._record_consumption, settled, unreturned)
        except Exception:
            log.exception(
                "recording %d settled inference request(s) of execution(s) %s (%d tokens) failed: kept, retrying "
                "in %g s", len(settled), sorted({request.execution_id for request, *_ in settled}),
                sum(self._spent(settled)), RECORD_RETRY_DELAY,
            )  # fmt: skip
            self._settled[:0] = settled
            self._unreturned += unreturned
            self._schedule_flush(RECORD_RETRY_DELAY)
            return False
        if unreturned:
            self._unreturned += unreturned
            self._schedule_flush(RECORD_RETRY_DELAY)
            return False
        return True

    @staticmethod
    def _spent(settled: list[Settled]) -> list[int]:
        return [min(prompt + completion, request.reservation) for request, prompt, completion, _ in settled]

    def _record_consumption(self, settled: list[Settled], unreturned: int = 0) -> int:
        """Record what was used, with its events, in one transaction (all or nothing: it raises if it fails);
        then give unused reservations (and ``unreturned``) back to the system-wide bucket. Returns the tokens
        that could not be given back, for the next try."""
        spent = self._spent(settled)
        if settled:
            per_execution: dict[str, int] = {}
            for (request, *_), tokens in zip(settled, spent, strict=True):
                per_execution[request.execution_id] = per_execution.get(request.execution_id, 0) + tokens
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
                charge_tokens(session, per_execution)
                record_rows(session, [outbox_row(event) for event in events])
        unused = unreturned + sum(request.reservation for request, *_ in settled) - sum(spent)
        try:
            self.limiter.give_back(unused)
        except Exception:
            log.exception("giving %d unused tokens back to the system-wide bucket failed: retrying", unused)
            return unused
        return 0

    async def _fail(self, request: _Request, reason: Reason, detail: str) -> InferenceRefused:
        """The upstream failed: nothing is charged, the reservation goes back to the quota and the bucket."""
        request.quota.reserved -= request.reservation
        await self.limiter.database.short(self.limiter.give_back, request.reservation)
        return await self._deny(
            request.agent_id, request.execution_id, reason, detail, remaining=request.quota.remaining
        )

    async def _deny(
        self,
        agent_id: str,
        execution_id: str,
        reason: Reason,
        detail: str,
        *,
        requested: int | None = None,
        remaining: int | None = None,
        retry_after: int | None = None,
    ) -> InferenceRefused:
        """Record the refusal (``intelligence.request_denied``), then give it to the caller to raise."""
        event = RequestDenied(
            agent_id=agent_id,
            data=RequestDeniedData(
                execution_id=execution_id,
                reason=reason,
                detail=detail[:DENIAL_DETAIL_CHARS],
                requested_tokens=requested,
                remaining_quota=max(0, remaining) if remaining is not None else None,
            ),
        )
        await to_thread.run_sync(self._record, event)
        return InferenceRefused(reason, detail, retry_after=retry_after)

    def _record(self, event: RequestDenied) -> None:
        with self.database.transaction() as session:
            record_event(session, event)

    async def _quota(self, execution_id: str) -> Quota:
        quota = self._quotas.get(execution_id)
        if quota is None:
            quota = await to_thread.run_sync(self._load_quota, execution_id)
            quota = self._quotas.setdefault(execution_id, quota)
        return quota

    def _load_quota(self, execution_id: str) -> Quota:
        with self.database.reader() as session:
            execution = metered_execution(session, execution_id)
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
