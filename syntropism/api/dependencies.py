"""What every endpoint depends on: the services, the caller behind a request (from its execution's token alone,
so it cannot act as another), the operator check, and the shared parameter and response declarations."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from syntropism.api.fairness import FairTurns, TooManyRequests
from syntropism.config import Settings
from syntropism.core.accounts import AccountsService
from syntropism.core.attention import AttentionService
from syntropism.core.execution import ExecutionManager, hash_token
from syntropism.core.intelligence import IntelligenceService
from syntropism.core.market import MarketManager
from syntropism.core.social import SocialService
from syntropism.domain.errors import Reason, Refused
from syntropism.domain.status import ExecutionStatus
from syntropism.infra.database import Database
from syntropism.infra.ledger import Ledger
from syntropism.infra.tokens import TokenLookup
from syntropism.schemas import ErrorBody

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (401, 402, 403, 404, 409, 413, 422, 429)
}
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        description="Makes the write safe to retry: a repeat returns the first result",
    ),
]


@dataclass
class Services:
    """What the endpoints work with; the composition root (:mod:`syntropism.runtime`) builds it."""

    database: Database
    settings: Settings
    ledger: Ledger
    market: MarketManager
    social: SocialService
    operator_token: str
    intelligence: IntelligenceService
    attention: AttentionService
    accounts: AccountsService
    tokens: TokenLookup
    turns: FairTurns
    executions: ExecutionManager | None = None


@dataclass(frozen=True)
class Caller:
    """The agent behind a request, as its execution's token says."""

    agent_id: str
    execution_id: str


RUNNING = ExecutionStatus.RUNNING  # the only status whose token opens the service

bearer = HTTPBearer(auto_error=False, description="The token of a running execution (SYNTROPISM_TOKEN)")
operator_bearer = HTTPBearer(auto_error=False, scheme_name="OperatorToken", description="The operator token")


async def services(request: Request) -> Services:  # async: no thread hop for a lookup
    """The services :func:`syntropism.api.app.create_app` put in the app's state."""
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


async def caller(
    svc: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> AsyncIterator[Caller]:
    """The caller, holding one of its execution's turns (see :mod:`syntropism.api.fairness`) for the request."""
    me = await _authenticated(svc, credentials)
    try:
        async with svc.turns.turn(me.execution_id):
            yield me
    except TooManyRequests as crowd:  # raised only on entering, before the request is served
        raise Refused(Reason.TOO_MANY_REQUESTS, f"{crowd}; wait for your answers before sending more") from None


async def _authenticated(svc: Services, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    if credentials is None:
        raise Refused(Reason.MISSING_TOKEN, "send Authorization: Bearer <SYNTROPISM_TOKEN>")
    row = await svc.database.short(svc.tokens.lookup, hash_token(credentials.credentials))
    if row is None:
        raise Refused(Reason.INVALID_TOKEN, "this token belongs to no execution")
    ended = svc.executions is not None and svc.executions.has_ended(row.id)  # even before its end is recorded
    if row.status != RUNNING or ended:
        raise Refused(Reason.TOKEN_EXPIRED, f"execution {row.id} has ended; its token is no longer valid")
    return Caller(row.agent_id, row.id)


def operator(
    svc: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(operator_bearer)]
) -> None:
    if credentials is None:
        raise Refused(Reason.MISSING_TOKEN, "send Authorization: Bearer <operator token>")
    if not hmac.compare_digest(credentials.credentials.encode(), svc.operator_token.encode()):
        raise Refused(Reason.FORBIDDEN, "this is not the operator token")


CallerDep = Annotated[Caller, Depends(caller)]
