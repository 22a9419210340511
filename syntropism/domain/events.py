"""The event taxonomy: one immutable, typed record per kind of state change (DESIGN §4).

Every event shares the envelope of :class:`Event` and carries a typed ``data`` payload. Its NATS subject is
``system.<service>.<event>``. Models are closed, and :func:`parse_event` decodes the wire strictly: an unknown
field or a value of the wrong JSON type is rejected with a message naming the field, so a consumer never
guesses what an event means. Python callers may still pass an enum's value or an int for a Decimal.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NonNegativeInt, TypeAdapter, ValidationError

from syntropism.domain.models import Credits, Fraction, Price, Resource, ResourceBundle

SUBJECT_PREFIX = "system"

Id = Annotated[str, Field(min_length=1, max_length=128)]
Score = Annotated[int, Field(ge=0, le=10)]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Event(BaseModel):
    """The envelope every event shares. Subclasses pin ``type`` and give ``data`` its payload model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: UUID = Field(default_factory=uuid4)
    timestamp: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    source: Literal["system", "agent", "judge"] = "system"
    type: str
    correlation_id: Id | None = None
    causation_id: UUID | None = None
    agent_id: Id | None = None
    data: Payload

    @property
    def subject(self) -> str:
        return f"{SUBJECT_PREFIX}.{self.type}"

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


# --- economy ---------------------------------------------------------------------------------------------------


class CreditsLockedData(Payload):
    transfer_id: Id
    amount: Credits
    bid_id: Id | None = None
    available_after: Credits
    locked_after: Credits


class UnlockReason(StrEnum):
    OUTBID = "outbid"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"
    REFUND = "refund"  # a winner paid less than it locked (critical-value payments)


class CreditsUnlockedData(Payload):
    transfer_id: Id
    amount: Credits
    reason: UnlockReason
    bid_id: Id | None = None
    available_after: Credits
    locked_after: Credits


class CreditsBurnedData(Payload):
    transfer_id: Id
    amount: Credits
    bid_id: Id | None = None
    execution_id: Id | None = None
    burned_total: Credits


class CreditsTransferredData(Payload):
    transfer_id: Id
    from_agent: Id
    to_agent: Id
    amount: Credits
    purpose: str | None = Field(None, max_length=500)


class RewardIssuedData(Payload):
    transfer_id: Id
    amount: Credits
    interesting: Score
    useful: Score
    understandable: Score
    prompt_id: Id | None = None
    minted_total: Credits


class CreditsGrantedData(Payload):
    transfer_id: Id
    amount: Credits
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    available_after: Credits
    minted_total: Credits


class CreditsLocked(Event):
    type: Literal["economy.credits_locked"] = "economy.credits_locked"
    data: CreditsLockedData


class CreditsUnlocked(Event):
    type: Literal["economy.credits_unlocked"] = "economy.credits_unlocked"
    data: CreditsUnlockedData


class CreditsBurned(Event):
    type: Literal["economy.credits_burned"] = "economy.credits_burned"
    data: CreditsBurnedData


class CreditsTransferred(Event):
    type: Literal["economy.credits_transferred"] = "economy.credits_transferred"
    data: CreditsTransferredData


class RewardIssued(Event):
    type: Literal["economy.reward_issued"] = "economy.reward_issued"
    data: RewardIssuedData


class CreditsGranted(Event):
    """The operator minted credits to an agent (an initial grant): like a reward, but not from scores."""

    type: Literal["economy.credits_granted"] = "economy.credits_granted"
    data: CreditsGrantedData


# --- market ----------------------------------------------------------------------------------------------------


class BidPlacedData(Payload):
    bid_id: Id
    bundle: ResourceBundle
    amount: Credits
    lifetime_cycles: Annotated[int, Field(ge=1)]
    on_behalf_of: Id | None = None


class BidRejectedData(Payload):
    reason: Annotated[str, Field(min_length=1, max_length=64)]
    detail: Annotated[str, Field(max_length=1000)]
    bundle: ResourceBundle | None = None
    amount: Credits | None = None
    on_behalf_of: Id | None = None
    unrecorded_before: NonNegativeInt = Field(
        0, description="Rejections of this bidder since its last recorded one that were counted, not recorded"
    )


class BidCancelledData(Payload):
    bid_id: Id
    amount_unlocked: Credits


class BidOutcome(StrEnum):
    WON = "won"
    CARRIED = "carried"
    OUTBID = "outbid"


class BidProcessedData(Payload):
    bid_id: Id
    cycle: NonNegativeInt
    outcome: BidOutcome
    amount: Credits
    reason: str | None = Field(None, max_length=500)
    execution_id: Id | None = None


class PriceDiscoveredData(Payload):
    cycle: NonNegativeInt
    resource: Resource
    old_price: Price
    new_price: Price
    utilization: Fraction
    volume: Annotated[Decimal, Field(ge=0, allow_inf_nan=False, description="capacity-seconds won this cycle")]


class BidPlaced(Event):
    type: Literal["market.bid_placed"] = "market.bid_placed"
    data: BidPlacedData


class BidRejected(Event):
    type: Literal["market.bid_rejected"] = "market.bid_rejected"
    data: BidRejectedData


class BidCancelled(Event):
    type: Literal["market.bid_cancelled"] = "market.bid_cancelled"
    data: BidCancelledData


class BidProcessed(Event):
    type: Literal["market.bid_processed"] = "market.bid_processed"
    data: BidProcessedData


class PriceDiscovered(Event):
    type: Literal["market.price_discovered"] = "market.price_discovered"
    data: PriceDiscoveredData


# --- scheduler -------------------------------------------------------------------------------------------------


class ResourcesAllocatedData(Payload):
    cycle: NonNegativeInt
    bid_id: Id
    execution_id: Id
    bundle: ResourceBundle
    amount: Credits


class CycleCompletedData(Payload):
    cycle: NonNegativeInt
    bids_considered: NonNegativeInt
    winners: NonNegativeInt
    losers: NonNegativeInt
    burned: Credits
    utilization: dict[Resource, Fraction]
    prices: dict[Resource, Price]
    duration_ms: Annotated[float, Field(ge=0, allow_inf_nan=False)]


class ResourcesAllocated(Event):
    type: Literal["scheduler.resources_allocated"] = "scheduler.resources_allocated"
    data: ResourcesAllocatedData


class CycleCompleted(Event):
    type: Literal["scheduler.cycle_completed"] = "scheduler.cycle_completed"
    data: CycleCompletedData


# --- execution -------------------------------------------------------------------------------------------------


class TerminationReason(StrEnum):
    COMPLETED = "completed"
    CPU_EXCEEDED = "cpu_exceeded"
    MEMORY_EXCEEDED = "memory_exceeded"
    TIMEOUT = "timeout"
    KILLED = "killed"
    DISK_EXCEEDED = "disk_exceeded"  # its workspace grew past workspace_max_bytes or workspace_max_entries
    ERROR = "error"


class ExecutionStartedData(Payload):
    execution_id: Id
    bid_id: Id | None = None
    bundle: ResourceBundle
    pid: int | None = None
    sandbox_layers: list[str] = Field(default_factory=list)
    missing_layers: list[str] = Field(default_factory=list)


class ExecutionTerminatedData(Payload):
    execution_id: Id
    reason: TerminationReason
    exit_code: int | None = None
    signal: int | None = None
    detail: str | None = Field(None, max_length=2000)
    wall_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    cpu_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    peak_memory_bytes: NonNegativeInt


class ExecutionStarted(Event):
    type: Literal["execution.started"] = "execution.started"
    data: ExecutionStartedData


class ExecutionTerminated(Event):
    type: Literal["execution.terminated"] = "execution.terminated"
    data: ExecutionTerminatedData


# --- intelligence ----------------------------------------------------------------------------------------------


class TokensConsumedData(Payload):
    execution_id: Id
    model: str
    prompt_tokens: NonNegativeInt
    completion_tokens: NonNegativeInt
    remaining_quota: NonNegativeInt


class RequestDeniedData(Payload):
    execution_id: Id | None = None
    reason: Annotated[str, Field(min_length=1, max_length=64)]
    detail: Annotated[str, Field(max_length=1000)]
    requested_tokens: NonNegativeInt | None = None
    remaining_quota: NonNegativeInt | None = None


class TokensConsumed(Event):
    type: Literal["intelligence.tokens_consumed"] = "intelligence.tokens_consumed"
    data: TokensConsumedData


class RequestDenied(Event):
    type: Literal["intelligence.request_denied"] = "intelligence.request_denied"
    data: RequestDeniedData


# --- attention -------------------------------------------------------------------------------------------------


class PromptSubmittedData(Payload):
    prompt_id: Id
    execution_id: Id
    text: Annotated[str, Field(min_length=1, max_length=20_000)]
    attachments: list[str] = Field(default_factory=list)


class PromptScoredData(Payload):
    prompt_id: Id
    interesting: Score
    useful: Score
    understandable: Score
    credits: Credits


class PromptSubmitted(Event):
    type: Literal["attention.prompt_submitted"] = "attention.prompt_submitted"
    data: PromptSubmittedData


class PromptScored(Event):
    type: Literal["attention.prompt_scored"] = "attention.prompt_scored"
    data: PromptScoredData


class PromptExpiredData(Payload):
    prompt_id: Id
    expired_at: AwareDatetime


class PromptExpired(Event):
    """A prompt nobody scored within ``prompt_ttl_seconds``: it can no longer mint."""

    type: Literal["attention.prompt_expired"] = "attention.prompt_expired"
    data: PromptExpiredData


# --- agent -----------------------------------------------------------------------------------------------------


class AgentSpawnedData(Payload):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    parent_id: Id | None = None
    entry_point: Annotated[str, Field(min_length=1, max_length=1000)]
    initial_grant: Credits


class AgentDormantData(Payload):
    last_execution_id: Id | None = None


class AgentAwakeData(Payload):
    execution_id: Id
    bid_id: Id
    woken_by: Id | None = None


class AgentDiedData(Payload):
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    workspace_archive: str | None = None


class AgentSpawned(Event):
    type: Literal["agent.spawned"] = "agent.spawned"
    data: AgentSpawnedData


class AgentDormant(Event):
    type: Literal["agent.dormant"] = "agent.dormant"
    data: AgentDormantData


class AgentAwake(Event):
    type: Literal["agent.awake"] = "agent.awake"
    data: AgentAwakeData


class AgentDied(Event):
    type: Literal["agent.died"] = "agent.died"
    data: AgentDiedData


# --- social ----------------------------------------------------------------------------------------------------


class MessageSentData(Payload):
    message_id: Id
    from_agent: Id
    to_agent: Id
    body: Annotated[str, Field(min_length=1, max_length=20_000)]


class MessageSent(Event):
    type: Literal["social.message_sent"] = "social.message_sent"
    data: MessageSentData


class MessagesDeliveredData(Payload):
    execution_id: Id
    message_ids: list[Id] = Field(min_length=1, max_length=1000)


class MessagesDelivered(Event):
    """Messages handed to an execution's inbox: from now on they are its, and no later execution sees them."""

    type: Literal["social.messages_delivered"] = "social.messages_delivered"
    data: MessagesDeliveredData


# --- registry --------------------------------------------------------------------------------------------------

EVENT_CLASSES: tuple[type[Event], ...] = (
    CreditsLocked,
    CreditsUnlocked,
    CreditsBurned,
    CreditsTransferred,
    RewardIssued,
    CreditsGranted,
    BidPlaced,
    BidRejected,
    BidCancelled,
    BidProcessed,
    PriceDiscovered,
    ResourcesAllocated,
    CycleCompleted,
    ExecutionStarted,
    ExecutionTerminated,
    TokensConsumed,
    RequestDenied,
    PromptSubmitted,
    PromptScored,
    PromptExpired,
    AgentSpawned,
    AgentDormant,
    AgentAwake,
    AgentDied,
    MessageSent,
    MessagesDelivered,
)

EVENT_TYPES: dict[str, type[Event]] = {cls.model_fields["type"].default: cls for cls in EVENT_CLASSES}

AnyEvent = Annotated[
    CreditsLocked
    | CreditsUnlocked
    | CreditsBurned
    | CreditsTransferred
    | RewardIssued
    | CreditsGranted
    | BidPlaced
    | BidRejected
    | BidCancelled
    | BidProcessed
    | PriceDiscovered
    | ResourcesAllocated
    | CycleCompleted
    | ExecutionStarted
    | ExecutionTerminated
    | TokensConsumed
    | RequestDenied
    | PromptSubmitted
    | PromptScored
    | PromptExpired
    | AgentSpawned
    | AgentDormant
    | AgentAwake
    | AgentDied
    | MessageSent
    | MessagesDelivered,
    Field(discriminator="type"),
]

_ANY_EVENT: TypeAdapter[Event] = TypeAdapter(AnyEvent)


class InvalidEvent(ValueError):
    """Raised for bytes that are not a valid event; the message lists every offending field."""


def parse_event(raw: bytes | str) -> Event:
    """Decode one event from JSON, choosing its class by ``type``."""
    try:
        return _ANY_EVENT.validate_json(raw, strict=True)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise InvalidEvent(f"invalid event: {problems}") from exc


def subject_for(event_type: str) -> str:
    """The NATS subject of an event type, e.g. ``market.bid_placed`` → ``system.market.bid_placed``."""
    return f"{SUBJECT_PREFIX}.{event_type}"
