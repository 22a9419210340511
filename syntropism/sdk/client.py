"""A typed client for the System Service, for agents written in Python.

Inside an execution it needs no arguments: it reads ``SYSTEM_SERVICE_URL``, ``SYSTEM_SERVICE_SOCKET`` (the only
way out of the sandbox) and ``SYNTROPISM_TOKEN`` from the environment::

    from syntropism.sdk import SystemService

    with SystemService() as service:
        print(service.balance().available)
        service.bid({"cpu_percent": "0.1", "memory_percent": "0.05", "duration_seconds": 5}, "2.5")

Every write sends an ``Idempotency-Key`` (a fresh one unless you pass ``key=``), and a retry after a lost
connection reuses it, so a write is never applied twice. A refusal raises :class:`ServiceError` with the
service's ``reason`` (``insufficient_funds``, ``token_expired``, …).
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from syntropism.domain.models import ResourceBundle
from syntropism.schemas import (
    BalanceOut,
    BidOut,
    HistoryOut,
    InboxOut,
    MarketStateOut,
    MessageOut,
    ReceiptOut,
    SpawnOut,
)

M = TypeVar("M", bound=BaseModel)
RETRIES = 3


class ServiceError(Exception):
    """The service refused a call: ``status``, ``error`` (its kind), ``reason`` (a stable code), ``detail``."""

    def __init__(self, status: int, error: str, reason: str, detail: str) -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status = status
        self.error = error
        self.reason = reason
        self.detail = detail


class SystemService:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        socket: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        url = url or os.environ.get("SYSTEM_SERVICE_URL")
        token = token or os.environ.get("SYNTROPISM_TOKEN")
        socket = socket or os.environ.get("SYSTEM_SERVICE_SOCKET")
        if not url or not token:
            raise RuntimeError("SYSTEM_SERVICE_URL and SYNTROPISM_TOKEN are not set: run inside an execution")
        transport = httpx.HTTPTransport(uds=socket) if socket else None
        self._http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, transport=transport, timeout=timeout
        )

    # --- who and what this execution is -------------------------------------------------------------------

    @property
    def agent_id(self) -> str:
        return os.environ["SYNTROPISM_AGENT_ID"]

    @property
    def execution_id(self) -> str:
        return os.environ["SYNTROPISM_EXECUTION_ID"]

    @property
    def deadline(self) -> datetime:
        return datetime.fromisoformat(os.environ["SYNTROPISM_DEADLINE"])

    @property
    def envelope(self) -> dict[str, Any]:
        envelope: dict[str, Any] = json.loads(os.environ.get("SYNTROPISM_ENVELOPE", "{}"))
        return envelope

    # --- economic -------------------------------------------------------------------------------------------

    def balance(self) -> BalanceOut:
        return self._call("GET", "/economic/balance", BalanceOut)

    def transfer(
        self, to_agent: str, amount: Decimal | int | str, *, purpose: str | None = None, key: str | None = None
    ) -> ReceiptOut:
        body = {"to_agent": to_agent, "amount": _credits(amount), "purpose": purpose}
        return self._call("POST", "/economic/transfer", ReceiptOut, json=body, key=key)

    def history(self, *, limit: int = 50, before: int | None = None) -> HistoryOut:
        params = {"limit": limit} | ({"before": before} if before is not None else {})
        return self._call("GET", "/economic/history", HistoryOut, params=params)

    # --- market ---------------------------------------------------------------------------------------------

    def market_state(self) -> MarketStateOut:
        return self._call("GET", "/market/state", MarketStateOut)

    def bid(
        self,
        bundle: ResourceBundle | dict[str, Any],
        amount: Decimal | int | str,
        *,
        lifetime_cycles: int | None = None,
        on_behalf_of: str | None = None,
        key: str | None = None,
    ) -> BidOut:
        if isinstance(bundle, ResourceBundle):
            bundle = bundle.model_dump(mode="json")
        body = {
            "bundle": bundle,
            "amount": _credits(amount),
            "lifetime_cycles": lifetime_cycles,
            "on_behalf_of": on_behalf_of,
        }
        return self._call("POST", "/market/bid", BidOut, json=body, key=key)

    def cancel(self, bid_id: str) -> BidOut:
        return self._call("DELETE", f"/market/bid/{bid_id}", BidOut)

    # --- social ---------------------------------------------------------------------------------------------

    def inbox(self) -> list[MessageOut]:
        """Every message that arrived since your last execution, page after page."""
        messages: list[MessageOut] = []
        after: str | None = None
        while True:
            page = self.inbox_page(after=after)
            messages += page.messages
            if page.next_after is None:
                return messages
            after = page.next_after

    def inbox_page(self, *, after: str | None = None, limit: int | None = None) -> InboxOut:
        """One page of the inbox; pass its ``next_after`` as ``after`` for the next."""
        params = {k: v for k, v in (("after", after), ("limit", limit)) if v is not None}
        return self._call("GET", "/social/inbox", InboxOut, params=params)

    def send(self, to_agent: str, body: str, *, key: str | None = None) -> MessageOut:
        return self._call("POST", "/social/message", MessageOut, json={"to_agent": to_agent, "body": body}, key=key)

    def spawn(
        self,
        agent_id: str,
        *,
        source: str = ".",
        entry_point: str = "main.py",
        funds: Decimal | int | str = "0",
        name: str | None = None,
        key: str | None = None,
    ) -> SpawnOut:
        body = {
            "agent_id": agent_id,
            "source": source,
            "entry_point": entry_point,
            "funds": _credits(funds),
            "name": name,
        }
        return self._call("POST", "/social/spawn", SpawnOut, json=body, key=key)

    # --- attention and intelligence -------------------------------------------------------------------------

    def prompt_human(
        self, text: str, *, attachments: list[str] | None = None, key: str | None = None
    ) -> dict[str, Any]:
        body = {"text": text, "attachments": attachments or []}
        prompt: dict[str, Any] = self._request("POST", "/attention/prompt", json=body, key=key).json()
        return prompt

    def infer(
        self, messages: list[dict[str, Any]], *, model: str | None = None, key: str | None = None, **params: Any
    ) -> dict[str, Any]:
        body = {"messages": messages, "model": model, **params}
        completion: dict[str, Any] = self._request("POST", "/intelligence/inference", json=body, key=key).json()
        return completion

    # --- plumbing -------------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, model: type[M], **kwargs: Any) -> M:
        return model.model_validate(self._request(method, path, **kwargs).json())

    def _request(
        self, method: str, path: str, *, json: Any = None, params: Any = None, key: str | None = None
    ) -> httpx.Response:
        headers = {}
        if method in ("POST", "PUT", "PATCH"):
            headers["Idempotency-Key"] = key or uuid.uuid4().hex  # the same key on every retry below
        if json is not None:
            json = {k: v for k, v in json.items() if v is not None}
        for attempt in range(1, RETRIES + 1):
            try:
                response = self._http.request(method, path, json=json, params=params, headers=headers)
                break
            except httpx.TransportError:
                if attempt == RETRIES:
                    raise
        if response.status_code >= 400:
            try:
                error = response.json()
                kind, reason, detail = error["error"], error["reason"], error["detail"]
            except (ValueError, KeyError, TypeError):
                kind, reason, detail = "error", "unexpected", response.text[:500]
            raise ServiceError(response.status_code, kind, reason, detail)
        return response

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SystemService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _credits(amount: Decimal | int | str) -> str | int:
    if isinstance(amount, float):
        raise TypeError("credits are exact: pass a Decimal, an int or a decimal string, not a float")
    return amount if isinstance(amount, int) else str(amount)
