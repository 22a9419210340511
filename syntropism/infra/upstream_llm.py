"""The upstream LLM: one OpenAI-compatible ``/chat/completions`` endpoint, reached over HTTP.

aiohttp rather than httpx here: per request it costs about a third, and this is the proxy's hot path. Every way
the upstream can fail is one :class:`UpstreamFailed` carrying its :class:`~syntropism.domain.errors.Reason` — no
answer in time, no connection, an error status — so the service above decides what a failure costs without
knowing the client. A cancelled request is no failure: the cancellation propagates as it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from syntropism.domain.errors import Reason

ERROR_TEXT_CHARS = 500  # of an error answer's body, quoted in the refusal


class UpstreamFailed(Exception):
    """The upstream gave no usable answer; ``reason`` says how, ``detail`` what it said or what went wrong."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class UpstreamStream:
    """A streamed answer as it arrives: its lines (each with its line ending), read straight off the connection,
    and ``release`` to give the connection back once the relay is over, however it ended."""

    lines: AsyncIterable[bytes]
    release: Callable[[], None]


class UpstreamLLM:
    """One client session for the runtime's life, opened on first use (inside the event loop that serves)."""

    def __init__(self, base_url: str, api_key: str | None, timeout_seconds: float) -> None:
        self.url = f"{base_url.rstrip('/')}/chat/completions"
        self.timeout_seconds = timeout_seconds
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._session: aiohttp.ClientSession | None = None

    async def complete(self, body: dict[str, Any]) -> bytes:
        """The upstream's whole answer to ``body``, as it sent it."""
        response = await self._post(body)
        content = await self._read(response)
        if response.status >= 400:
            raise self._error(response.status, content)
        return content

    async def stream(self, body: dict[str, Any]) -> UpstreamStream:
        """The upstream's streamed answer to ``body``, once its status says it is one."""
        response = await self._post(body)
        if response.status >= 400:
            raise self._error(response.status, await self._read(response))
        return UpstreamStream(response.content, response.release)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, body: dict[str, Any]) -> aiohttp.ClientResponse:
        try:
            return await self._client().post(self.url, json=body)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._failure(exc) from None

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        try:
            return await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._failure(exc) from None

    def _failure(self, exc: Exception) -> UpstreamFailed:
        if isinstance(exc, TimeoutError):
            return UpstreamFailed(Reason.UPSTREAM_TIMEOUT, f"no answer within {self.timeout_seconds:g} s")
        return UpstreamFailed(Reason.UPSTREAM_UNREACHABLE, f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _error(status: int, content: bytes) -> UpstreamFailed:
        text = content.decode(errors="replace")[:ERROR_TEXT_CHARS]
        return UpstreamFailed(Reason.UPSTREAM_ERROR, f"upstream answered {status}: {text}")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.timeout_seconds)
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=timeout)
        return self._session
