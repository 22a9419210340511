"""The System Service: the agents' only window onto the world (DESIGN §6), as a FastAPI app.

An agent authenticates with the bearer token of its running execution; its identity comes from that token
alone, so it cannot act as another. Every write takes an ``Idempotency-Key`` header: a repeat returns the
first result, a different request under the same key is refused (409). The operator's endpoints live under
``/admin/`` behind the operator token. Blocking work (the database) runs in FastAPI's thread pool.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Annotated, Any, NamedTuple

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from syntropism.api.errors import ApiError, install_error_handlers
from syntropism.api.fairness import FairTurns, TooManyRequests
from syntropism.api.limits import RequestSizeLimit
from syntropism.api.schemas import (
    AdminBidIn,
    AgentDetailOut,
    AgentIn,
    AgentOut,
    BalanceOut,
    BidIn,
    BidOut,
    ErrorBody,
    ExecutionOut,
    GrantIn,
    HistoryOut,
    InboxOut,
    InferenceIn,
    MarketStateOut,
    MessageIn,
    MessageOut,
    PromptIn,
    PromptOut,
    ReceiptOut,
    ResourceStateOut,
    RewardIn,
    RewardOut,
    ScoreIn,
    SpawnIn,
    SpawnOut,
    TransferIn,
)
from syntropism.config import Settings
from syntropism.core.attention import AttentionService
from syntropism.core.execution import ExecutionManager, hash_token
from syntropism.core.intelligence import IntelligenceService
from syntropism.core.market import MarketManager, PlacedBid, bundle_of
from syntropism.core.social import SocialService
from syntropism.domain import economy
from syntropism.domain.identity import agent_key, operator_key
from syntropism.domain.models import from_micros
from syntropism.infra.agents import standings
from syntropism.infra.database import Database
from syntropism.infra.ledger import Ledger, Receipt
from syntropism.infra.tables import Agent, Bid, Execution

ERRORS = {status: {"model": ErrorBody} for status in (401, 402, 403, 404, 409, 413, 422, 429)}
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=128,
        description="Makes the write safe to retry: a repeat returns the first result",
    ),
]


class TokenRow(NamedTuple):
    id: str
    agent_id: str
    status: str


class TokenLookup:
    """Token hash → its execution: the one read every agent request makes. On SQLite it runs on a connection kept
    for it, in autocommit (a single SELECT reads one consistent snapshot), which costs a few microseconds where a
    pooled SQLAlchemy connection with its transaction costs a few hundred."""

    SQL = "SELECT id, agent_id, status FROM executions WHERE token_hash = ?"

    def __init__(self, database: Database) -> None:
        self.database = database
        self._connection: Any = None
        self._lock = threading.Lock()

    def lookup(self, token_hash: str) -> TokenRow | None:
        if self.database.backend != "sqlite":
            with self.database.read_connection() as connection:
                row = connection.execute(TOKEN_LOOKUP, {"token_hash": token_hash}).one_or_none()
            return TokenRow(*row) if row else None
        with self._lock:
            if self._connection is None:
                self._connection = self.database.dedicated_connection()
            row = self._connection.driver_connection.execute(self.SQL, (token_hash,)).fetchone()
        return TokenRow(*row) if row else None


TOKEN_LOOKUP = select(Execution.id, Execution.agent_id, Execution.status).where(
    Execution.token_hash == bindparam("token_hash")
)


@dataclass
class Services:
    """What the endpoints work with; the runtime builds one, tests build their own."""

    database: Database
    settings: Settings
    ledger: Ledger
    market: MarketManager
    social: SocialService
    operator_token: str
    intelligence: IntelligenceService
    attention: AttentionService
    tokens: TokenLookup
    turns: FairTurns
    executions: ExecutionManager | None = None

    @classmethod
    def build(
        cls, database: Database, settings: Settings, operator_token: str, executions: ExecutionManager | None = None
    ) -> Services:
        return cls(
            database,
            settings,
            Ledger(database),
            MarketManager(database, settings),
            SocialService(database, settings),
            operator_token,
            IntelligenceService(database, settings),
            AttentionService(database, settings),
            TokenLookup(database),
            FairTurns(
                settings.agent_requests_in_flight,
                settings.requests_in_flight_per_execution,
                settings.requests_queued_per_execution,
                settings.requests_per_second_per_execution,
            ),
            executions,
        )


@dataclass(frozen=True)
class Caller:
    """The agent behind a request, as its execution's token says."""

    agent_id: str
    execution_id: str


bearer = HTTPBearer(auto_error=False, description="The token of a running execution (SYNTROPISM_TOKEN)")
operator_bearer = HTTPBearer(auto_error=False, scheme_name="OperatorToken", description="The operator token")


async def services(request: Request) -> Services:  # async: no thread hop for a lookup
    return request.app.state.services  # type: ignore[no-any-return]


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
        raise ApiError(429, "too_many_requests", f"{crowd}; wait for your answers before sending more") from None


async def _authenticated(svc: Services, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    if credentials is None:
        raise ApiError(401, "missing_token", "send Authorization: Bearer <SYNTROPISM_TOKEN>")
    row = await svc.database.short(svc.tokens.lookup, hash_token(credentials.credentials))
    if row is None:
        raise ApiError(401, "invalid_token", "this token belongs to no execution")
    ended = svc.executions is not None and svc.executions.has_ended(row.id)  # even before its end is recorded
    if row.status != "running" or ended:
        raise ApiError(401, "token_expired", f"execution {row.id} has ended; its token is no longer valid")
    return Caller(row.agent_id, row.id)


def operator(
    svc: ServicesDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(operator_bearer)]
) -> None:
    if credentials is None:
        raise ApiError(401, "missing_token", "send Authorization: Bearer <operator token>")
    if not hmac.compare_digest(credentials.credentials.encode(), svc.operator_token.encode()):
        raise ApiError(403, "forbidden", "this is not the operator token")


CallerDep = Annotated[Caller, Depends(caller)]

# --- conversions ---------------------------------------------------------------------------------------------


def receipt_out(receipt: Receipt) -> ReceiptOut:
    return ReceiptOut(**{**asdict(receipt), "kind": receipt.kind.value})


def bid_out(bid: Bid) -> BidOut:
    return BidOut(
        bid_id=bid.id,
        agent_id=bid.agent_id,
        on_behalf_of=bid.on_behalf_of,
        amount=from_micros(bid.amount_micros),
        status=bid.status,
        bundle=bundle_of(bid),
        cycles_remaining=bid.cycles_remaining,
    )


def placed_out(placed: PlacedBid) -> BidOut:
    return BidOut(
        bid_id=placed.bid_id,
        agent_id=placed.agent_id,
        on_behalf_of=placed.on_behalf_of,
        amount=placed.amount,
        status=placed.status,
        bundle=placed.bundle,
        cycles_remaining=placed.cycles_remaining,
        replayed=placed.replayed,
    )


def agent_out(session: Session, agent: Agent) -> AgentOut:
    [standing] = standings(session, [agent.id])
    return AgentOut(
        agent_id=agent.id,
        name=agent.name,
        status=agent.status,  # type: ignore[arg-type]
        parent_id=agent.parent_id,
        entry_point=agent.entry_point,
        available=standing.available,
        locked=standing.locked,
        created_at=agent.created_at,
    )


# --- agents' endpoints ---------------------------------------------------------------------------------------

economic = APIRouter(prefix="/economic", tags=["economic"], responses=ERRORS)


@economic.get("/balance", response_model=BalanceOut)
async def get_balance(svc: ServicesDep, me: CallerDep) -> BalanceOut:
    balance = await svc.database.short(svc.ledger.balance, me.agent_id)
    return BalanceOut(agent_id=me.agent_id, available=balance.available, locked=balance.locked)


@economic.post("/transfer", response_model=ReceiptOut)
def post_transfer(svc: ServicesDep, me: CallerDep, body: TransferIn, key: IdempotencyKey) -> ReceiptOut:
    operation = economy.transfer(
        me.agent_id,
        body.to_agent,
        body.amount,
        idempotency_key=agent_key(me.agent_id, "transfer", key),
        purpose=body.purpose,
    )
    return receipt_out(svc.ledger.execute(operation))


@economic.get("/history", response_model=HistoryOut)
def get_history(
    svc: ServicesDep,
    me: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(ge=1, le=economy.MAX_JOURNAL_SEQ)] = None,
) -> HistoryOut:
    page = svc.ledger.history(me.agent_id, limit=limit, before=before)
    return HistoryOut(entries=[receipt_out(r) for r in page.entries], next_before=page.next_before)


market = APIRouter(prefix="/market", tags=["market"], responses=ERRORS)


@market.get("/state", response_model=MarketStateOut)
def get_market_state(svc: ServicesDep, me: CallerDep) -> MarketStateOut:
    with svc.database.reader() as session:
        bids = session.scalars(
            select(Bid).where(Bid.agent_id == me.agent_id, Bid.status == "pending").order_by(Bid.seq)
        ).all()
        own = [bid_out(bid) for bid in bids]
    return market_state_out(svc, own)


def market_state_out(svc: Services, own: list[BidOut]) -> MarketStateOut:
    states = svc.market.market_state()
    return MarketStateOut(
        cycle=max(s.cycle for s in states),
        resources=[
            ResourceStateOut(
                resource=s.resource,
                price=s.current_market_price,
                utilization=s.current_utilization,
                supply=s.available_supply,
                cycle=s.cycle,
            )
            for s in states
        ],
        own_bids=own,
    )


@market.post("/bid", response_model=BidOut)
def post_bid(svc: ServicesDep, me: CallerDep, body: BidIn, key: IdempotencyKey) -> BidOut:
    return place_bid(svc, me.agent_id, body, agent_key(me.agent_id, "bid", key))


def place_bid(svc: Services, payer: str, body: BidIn, key: str) -> BidOut:
    placed = svc.market.place_bid(
        payer,
        body.bundle,
        body.amount,
        idempotency_key=key,
        lifetime_cycles=body.lifetime_cycles,
        on_behalf_of=body.on_behalf_of,
    )
    return placed_out(placed)


@market.delete("/bid/{bid_id}", response_model=BidOut)
def delete_bid(svc: ServicesDep, me: CallerDep, bid_id: str) -> BidOut:
    return placed_out(svc.market.cancel_bid(me.agent_id, bid_id))


social = APIRouter(prefix="/social", tags=["social"], responses=ERRORS)


@social.post("/message", response_model=MessageOut)
def post_message(svc: ServicesDep, me: CallerDep, body: MessageIn, key: IdempotencyKey) -> MessageOut:
    sent = svc.social.send(me.agent_id, body.to_agent, body.body, idempotency_key=key, execution_id=me.execution_id)
    return MessageOut(**asdict(sent))


@social.get("/inbox", response_model=InboxOut)
def get_inbox(
    svc: ServicesDep,
    me: CallerDep,
    after: Annotated[str | None, Query(max_length=64, description="`next_after` of the previous page")] = None,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> InboxOut:
    """Messages and rewards that arrived since your last execution, a page at a time (follow `next_after`)."""
    page = svc.social.inbox(me.agent_id, me.execution_id, after=after, limit=limit)
    messages = [MessageOut(**asdict(m)) for m in page.messages]
    rewards = [
        RewardOut(
            prompt_id=p.prompt_id,
            interesting=p.interesting or 0,
            useful=p.useful or 0,
            understandable=p.understandable or 0,
            credits=p.credits or 0,
        )
        for p in svc.attention.scored_since(me.agent_id, me.execution_id)
    ]
    return InboxOut(messages=messages, rewards=rewards, next_after=page.next_after)


@social.post("/spawn", response_model=SpawnOut)
def post_spawn(svc: ServicesDep, me: CallerDep, body: SpawnIn, key: IdempotencyKey) -> SpawnOut:
    spawned = svc.social.spawn(
        me.agent_id,
        body.agent_id,
        source=body.source,
        entry_point=body.entry_point,
        funds=body.funds,
        idempotency_key=key,
        name=body.name,
        execution_id=me.execution_id,
    )
    return SpawnOut(**asdict(spawned))


later = APIRouter(tags=["attention", "intelligence"], responses=ERRORS)


@later.post("/attention/prompt", response_model=PromptOut)
def post_prompt(svc: ServicesDep, me: CallerDep, body: PromptIn, key: IdempotencyKey) -> PromptOut:
    """Put a prompt before the human, within your execution's attention share (402 past it)."""
    prompt = svc.attention.submit(me.agent_id, me.execution_id, body.text, body.attachments, idempotency_key=key)
    return PromptOut(**asdict(prompt))


@later.post(
    "/intelligence/inference",
    responses={
        429: {"model": ErrorBody},
        502: {"model": ErrorBody},
        503: {"model": ErrorBody},
        504: {"model": ErrorBody},
    },
)
async def post_inference(svc: ServicesDep, me: CallerDep, body: InferenceIn, key: IdempotencyKey) -> Response:
    """An OpenAI-compatible chat completion (streamed when ``stream`` is true), metered against your quota: its
    worst case (prompt bound + n × max_tokens) is reserved before it goes upstream, its usage charged after."""
    request = body.model_dump(exclude_none=True, by_alias=True)  # the wire names (response_format's "schema")
    return await svc.intelligence.infer(me.agent_id, me.execution_id, request, key)


# --- the operator's endpoints --------------------------------------------------------------------------------

admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(operator)], responses=ERRORS)


@admin.post("/agents", response_model=AgentOut, status_code=201)
def create_agent(svc: ServicesDep, body: AgentIn) -> AgentOut:
    grant = economy.parse_amount(body.initial_grant, "initial_grant") if body.initial_grant not in (0, "0") else 0
    svc.social.create_agent(
        body.agent_id, name=body.name, files=body.files, entry_point=body.entry_point, grant_micros=grant
    )
    with svc.database.reader() as session:
        return agent_out(session, session.get_one(Agent, body.agent_id))


@admin.get("/agents", response_model=list[AgentOut])
def list_agents(svc: ServicesDep) -> list[AgentOut]:
    with svc.database.reader() as session:
        return [
            agent_out(session, agent) for agent in session.scalars(select(Agent).order_by(Agent.created_at, Agent.id))
        ]


@admin.get("/agents/{agent_id}", response_model=AgentDetailOut)
def inspect_agent(svc: ServicesDep, agent_id: str) -> AgentDetailOut:
    with svc.database.reader() as session:
        agent = session.get(Agent, agent_id)
        if agent is None:
            raise ApiError(404, "unknown_agent", f"no such agent: {agent_id}")
        executions = session.scalars(
            select(Execution).where(Execution.agent_id == agent_id).order_by(Execution.allocated_at.desc()).limit(20)
        ).all()
        bids = session.scalars(
            select(Bid).where(Bid.agent_id == agent_id, Bid.status == "pending").order_by(Bid.seq)
        ).all()
        return AgentDetailOut(
            agent=agent_out(session, agent),
            executions=[
                ExecutionOut(
                    execution_id=e.id,
                    agent_id=e.agent_id,
                    status=e.status,
                    reason=e.reason,
                    bid_id=e.bid_id,
                    started_at=e.started_at,
                    ended_at=e.ended_at,
                    exit_code=e.exit_code,
                    signal=e.signal,
                    cpu_seconds=e.cpu_seconds,
                    peak_memory_bytes=e.peak_memory_bytes,
                )
                for e in executions
            ],
            pending_bids=[bid_out(b) for b in bids],
        )


@admin.get("/market", response_model=MarketStateOut)
def admin_market_state(svc: ServicesDep) -> MarketStateOut:
    """Every resource's price, utilization and supply, as the agents see them (``own_bids`` is empty)."""
    return market_state_out(svc, [])


@admin.post("/grant", response_model=ReceiptOut)
def admin_grant(svc: ServicesDep, body: GrantIn, key: IdempotencyKey) -> ReceiptOut:
    operation = economy.grant(
        body.agent_id, body.amount, idempotency_key=operator_key("grant", key), reason=body.reason
    )
    return receipt_out(svc.ledger.execute(operation))


@admin.post("/reward", response_model=ReceiptOut)
def admin_reward(svc: ServicesDep, body: RewardIn, key: IdempotencyKey) -> ReceiptOut:
    """Mint credits for an agent's work; with ``prompt_id``, that prompt's scoring (once)."""
    receipt = svc.attention.reward(
        body.agent_id,
        interesting=body.interesting,
        useful=body.useful,
        understandable=body.understandable,
        idempotency_key=operator_key("reward", key),
        prompt_id=body.prompt_id,
    )
    return receipt_out(receipt)


@admin.get("/prompts", response_model=list[PromptOut])
def pending_prompts(svc: ServicesDep) -> list[PromptOut]:
    """The prompts waiting for the human, oldest first."""
    return [PromptOut(**asdict(p)) for p in svc.attention.pending()]


@admin.post("/prompts/{prompt_id}/score", response_model=PromptOut)
def score_prompt(svc: ServicesDep, prompt_id: str, body: ScoreIn) -> PromptOut:
    """The human's score: mints I·W_i + U·W_u + Un·W_un credits to the agent, once."""
    scored = svc.attention.score(
        prompt_id, interesting=body.interesting, useful=body.useful, understandable=body.understandable
    )
    return PromptOut(**asdict(scored))


@admin.post("/bids", response_model=BidOut)
def admin_bid(svc: ServicesDep, body: AdminBidIn, key: IdempotencyKey) -> BidOut:
    return place_bid(svc, body.agent_id, body, operator_key("bid", key))


@admin.delete("/bids/{bid_id}", response_model=BidOut)
def admin_cancel_bid(svc: ServicesDep, bid_id: str) -> BidOut:
    with svc.database.reader() as session:
        bidder = session.scalar(select(Bid.agent_id).where(Bid.id == bid_id))
    if bidder is None:
        raise ApiError(404, "not_found", f"no bid {bid_id}")
    return placed_out(svc.market.cancel_bid(bidder, bid_id))


@admin.post("/executions/{execution_id}/kill", status_code=202)
async def admin_kill(svc: ServicesDep, execution_id: str) -> dict[str, str]:
    if svc.executions is None or not await svc.executions.kill(execution_id):
        raise ApiError(404, "not_found", f"execution {execution_id} is not running here")
    return {"execution_id": execution_id, "status": "killing"}


def create_app(svc: Services) -> FastAPI:
    app = FastAPI(
        title="Syntropism System Service",
        version="1",
        description="The agents' only window onto the economy. Authenticate with `Authorization: Bearer "
        "$SYNTROPISM_TOKEN`; send an `Idempotency-Key` header with every write.",
    )
    app.state.services = svc
    limit = svc.settings.max_request_bytes if svc is not None else Settings.model_fields["max_request_bytes"].default
    app.add_middleware(RequestSizeLimit, max_bytes=limit)  # before routing: outermost
    install_error_handlers(app)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    for router in (economic, market, social, later, admin):
        app.include_router(router)
    return app
