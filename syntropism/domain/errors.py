"""The one shape of a refusal, shared by every service, and the one vocabulary of its reasons.

Every refusal carries a :class:`Reason`: a stable code an agent can branch on, with the HTTP status the System
Service answers it with, both in :data:`STATUS_OF_REASON` — one table, so a new code cannot be raised without a
status, and a mistyped code is a type error rather than a silent 422.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a request was refused. The value is the wire code (``"reason"`` in every error body)."""

    # 401: who is asking?
    MISSING_TOKEN = "missing_token"
    INVALID_TOKEN = "invalid_token"
    TOKEN_EXPIRED = "token_expired"
    # 402: not with these credits or this quota
    INSUFFICIENT_FUNDS = "insufficient_funds"
    QUOTA_EXCEEDED = "quota_exceeded"
    # 403 / 404
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    UNKNOWN_AGENT = "unknown_agent"
    # 409: the state says no
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    NOT_PENDING = "not_pending"
    AGENT_EXISTS = "agent_exists"
    AGENT_DEAD = "agent_dead"
    ALREADY_SCORED = "already_scored"
    EXPIRED = "expired"
    WORKSPACE_EXISTS = "workspace_exists"
    # 413 / 429: bounded
    TOO_LARGE = "too_large"
    REQUEST_TOO_LARGE = "request_too_large"
    TOO_MANY_BIDS = "too_many_bids"
    INBOX_FULL = "inbox_full"
    TOO_MANY_REQUESTS = "too_many_requests"
    SYSTEM_LIMIT = "system_limit"
    EXCEEDS_SYSTEM_LIMIT = "exceeds_system_limit"
    # 422: the request itself is wrong
    INVALID_INPUT = "invalid_input"
    INVALID_AMOUNT = "invalid_amount"
    AMOUNT_TOO_LARGE = "amount_too_large"
    INVALID_BUNDLE = "invalid_bundle"
    BUNDLE_TOO_LARGE = "bundle_too_large"
    INVALID_LIFETIME = "invalid_lifetime"
    BID_TOO_SMALL = "bid_too_small"
    EMPTY_BUNDLE = "empty_bundle"
    INVALID_AGENT_ID = "invalid_agent_id"
    INVALID_PATH = "invalid_path"
    INVALID_SPAWN = "invalid_spawn"
    INVALID_MESSAGE = "invalid_message"
    INVALID_PROMPT = "invalid_prompt"
    INVALID_ATTACHMENT = "invalid_attachment"
    INVALID_SCORE = "invalid_score"
    UNREACHABLE = "unreachable"
    # 5xx: the system or its upstream failed
    INTERNAL_ERROR = "internal_error"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    NO_UPSTREAM = "no_upstream"
    UPSTREAM_TIMEOUT = "upstream_timeout"

    @property
    def status(self) -> int:
        """The HTTP status the System Service answers this refusal with."""
        return STATUS_OF_REASON[self]


STATUS_OF_REASON: dict[Reason, int] = {
    Reason.MISSING_TOKEN: 401,
    Reason.INVALID_TOKEN: 401,
    Reason.TOKEN_EXPIRED: 401,
    Reason.INSUFFICIENT_FUNDS: 402,
    Reason.QUOTA_EXCEEDED: 402,
    Reason.FORBIDDEN: 403,
    Reason.NOT_FOUND: 404,
    Reason.UNKNOWN_AGENT: 404,
    Reason.IDEMPOTENCY_CONFLICT: 409,
    Reason.NOT_PENDING: 409,
    Reason.AGENT_EXISTS: 409,
    Reason.AGENT_DEAD: 409,
    Reason.ALREADY_SCORED: 409,
    Reason.EXPIRED: 409,
    Reason.WORKSPACE_EXISTS: 409,
    Reason.TOO_LARGE: 413,
    Reason.REQUEST_TOO_LARGE: 413,
    Reason.TOO_MANY_BIDS: 429,
    Reason.INBOX_FULL: 429,
    Reason.TOO_MANY_REQUESTS: 429,
    Reason.SYSTEM_LIMIT: 429,
    Reason.EXCEEDS_SYSTEM_LIMIT: 429,
    Reason.INVALID_INPUT: 422,
    Reason.INVALID_AMOUNT: 422,
    Reason.AMOUNT_TOO_LARGE: 422,
    Reason.INVALID_BUNDLE: 422,
    Reason.BUNDLE_TOO_LARGE: 422,
    Reason.INVALID_LIFETIME: 422,
    Reason.BID_TOO_SMALL: 422,
    Reason.EMPTY_BUNDLE: 422,
    Reason.INVALID_AGENT_ID: 422,
    Reason.INVALID_PATH: 422,
    Reason.INVALID_SPAWN: 422,
    Reason.INVALID_MESSAGE: 422,
    Reason.INVALID_PROMPT: 422,
    Reason.INVALID_ATTACHMENT: 422,
    Reason.INVALID_SCORE: 422,
    Reason.UNREACHABLE: 422,
    Reason.INTERNAL_ERROR: 500,
    Reason.UPSTREAM_ERROR: 502,
    Reason.UPSTREAM_UNREACHABLE: 502,
    Reason.NO_UPSTREAM: 503,
    Reason.UPSTREAM_TIMEOUT: 504,
}
assert set(STATUS_OF_REASON) == set(Reason), "every reason needs its status"


class Refused(ValueError):
    """A request the economy's rules refuse: ``reason`` says which rule (and so the status), ``detail`` says why,
    in words an agent's author can act on."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = Reason(reason)  # a bare string that is no Reason fails here, at the raise
        self.detail = detail
