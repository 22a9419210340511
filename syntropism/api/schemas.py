"""The System Service's wire format: what agents send and receive (Pydantic only, so the SDK can share it).

Credits travel as decimal strings (``"12.5"``); an integer is accepted in a request, a binary float never is.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from syntropism.domain.models import Resource, ResourceBundle, credits_text

AgentId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^:\s/]+$")]
CreditsIn = Annotated[
    str | int,
    Field(description='Credits as a decimal string such as "12.5" (an integer is accepted; floats are not)'),
]


Money = Annotated[Decimal, PlainSerializer(credits_text, return_type=str, when_used="json")]
"""Credits out: a decimal string without trailing zeros, ``"12.5"``."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorBody(Model):
    error: str = Field(description="The kind of failure: unauthorized, forbidden, payment_required, not_found, …")
    reason: str = Field(description="A stable code, e.g. insufficient_funds, token_expired, idempotency_conflict")
    detail: str = Field(description="What went wrong, in words")


# --- economic ------------------------------------------------------------------------------------------------


class BalanceOut(Model):
    agent_id: str
    available: Money
    locked: Money


class TransferIn(Model):
    to_agent: AgentId
    amount: CreditsIn
    purpose: Annotated[str, Field(max_length=500)] | None = None


class ReceiptOut(Model):
    transfer_id: str
    kind: str
    amount: Money
    debit_account: str
    credit_account: str
    debit_balance_after: Money
    credit_balance_after: Money
    reference: str | None
    memo: str | None
    created_at: datetime
    replayed: bool = False


class HistoryOut(Model):
    entries: list[ReceiptOut]
    next_before: int | None = Field(description="Pass as `before` for the next, older page; null on the last")


# --- market --------------------------------------------------------------------------------------------------


class ResourceStateOut(Model):
    resource: Resource
    price: Decimal = Field(description="Credits per 100 %-capacity-second, from the last cycle's winning bids")
    utilization: Decimal
    supply: Decimal
    cycle: int


class BidOut(Model):
    bid_id: str
    agent_id: str
    on_behalf_of: str | None = None
    amount: Money
    status: str
    bundle: ResourceBundle | None = None
    cycles_remaining: int | None = None
    replayed: bool = False


class MarketStateOut(Model):
    cycle: int
    resources: list[ResourceStateOut]
    own_bids: list[BidOut] = Field(description="Your pending bids")


class BidIn(Model):
    bundle: ResourceBundle
    amount: CreditsIn
    lifetime_cycles: Annotated[int, Field(ge=1, le=1000)] | None = None
    on_behalf_of: AgentId | None = Field(None, description="Bid for another agent, to wake it; you pay")


# --- social --------------------------------------------------------------------------------------------------


class MessageIn(Model):
    to_agent: AgentId
    body: Annotated[str, Field(min_length=1, max_length=20_000)]


class MessageOut(Model):
    message_id: str
    from_agent: str
    to_agent: str
    body: str
    sent_at: datetime
    replayed: bool = False


class RewardOut(Model):
    prompt_id: str
    interesting: int
    useful: int
    understandable: int
    credits: Money


class InboxOut(Model):
    messages: list[MessageOut]
    rewards: list[RewardOut] = Field(default_factory=list, description="Your prompts the human scored since")


class SpawnIn(Model):
    agent_id: AgentId
    source: Annotated[str, Field(min_length=1, max_length=1000)] = Field(
        ".", description="A file or folder in your workspace: the child's code"
    )
    entry_point: Annotated[str, Field(min_length=1, max_length=255)] = "main.py"
    funds: CreditsIn = Field("0", description="Credits you transfer to the child")
    name: Annotated[str, Field(min_length=1, max_length=128)] | None = None


class SpawnOut(Model):
    agent_id: str
    parent_id: str
    funds: Money
    transfer_id: str | None
    replayed: bool = False


# --- attention and intelligence (their issues fill these in) --------------------------------------------------


class PromptIn(Model):
    text: Annotated[str, Field(min_length=1, max_length=20_000)]
    attachments: list[Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=list, description="Files in your workspace for the human to look at"
    )


class PromptOut(Model):
    prompt_id: str
    agent_id: str
    text: str
    attachments: list[str]
    status: Literal["pending", "scored", "expired"]
    created_at: datetime
    expires_at: datetime
    attention_seconds: float = Field(description="What it cost of the execution's attention share")
    interesting: int | None = None
    useful: int | None = None
    understandable: int | None = None
    credits: Money | None = None
    replayed: bool = False


class ScoreIn(Model):
    interesting: Annotated[int, Field(ge=0, le=10)]
    useful: Annotated[int, Field(ge=0, le=10)]
    understandable: Annotated[int, Field(ge=0, le=10)]


class InferenceIn(BaseModel):
    """An OpenAI-compatible chat completion request; fields beyond these are passed on to the upstream."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(max_length=200)] | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: Annotated[int, Field(ge=1)] | None = Field(None, description="Default: what is left of the quota")
    stream: bool = False


# --- admin ---------------------------------------------------------------------------------------------------


class AgentIn(Model):
    agent_id: AgentId
    name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    files: dict[Annotated[str, Field(min_length=1, max_length=255)], str] = Field(
        default_factory=dict, description="Path in the workspace → content; the agent's code"
    )
    entry_point: Annotated[str, Field(min_length=1, max_length=255)] = "main.py"
    initial_grant: CreditsIn = "0"


class AgentOut(Model):
    agent_id: str
    name: str
    status: Literal["active", "dormant", "died"]
    parent_id: str | None
    entry_point: str
    available: Money
    locked: Money
    created_at: datetime


class ExecutionOut(Model):
    execution_id: str
    agent_id: str
    status: str
    reason: str | None
    bid_id: str | None
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    signal: int | None
    cpu_seconds: float | None
    peak_memory_bytes: int | None


class AgentDetailOut(Model):
    agent: AgentOut
    executions: list[ExecutionOut]
    pending_bids: list[BidOut]


class GrantIn(Model):
    agent_id: AgentId
    amount: CreditsIn
    reason: Annotated[str, Field(max_length=500)] = "operator grant"


class RewardIn(Model):
    agent_id: AgentId
    interesting: Annotated[int, Field(ge=0, le=10)]
    useful: Annotated[int, Field(ge=0, le=10)]
    understandable: Annotated[int, Field(ge=0, le=10)]
    prompt_id: str | None = None


class AdminBidIn(BidIn):
    agent_id: AgentId = Field(description="Who pays (and runs, unless on_behalf_of is given)")
