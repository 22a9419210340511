"""The relational schema (SQLAlchemy 2 declarative). Alembic migrations in ``migrations/`` create it.

Conventions: money is integer micro-credits (``*_micros``), capacity fractions are integer parts per million
(``*_ppm``), prices are exact decimal text, timestamps are timezone-aware UTC. No binary floats hold money.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from syntropism.domain.models import PPM, Resource, ResourceBundle, bundle_from_ppm, bundle_to_ppm, seconds_to_ms
from syntropism.domain.status import AgentStatus, BidStatus, ExecutionStatus, PromptStatus

# Integer primary keys that autoincrement on SQLite (rowid) and are 64-bit elsewhere.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and always returns them aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is UTC:
            return value
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: store timezone-aware UTC timestamps")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DecimalText(TypeDecorator[Decimal]):
    """An exact Decimal stored as text: portable, and no float ever touches it."""

    impl = String(64)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValueError(f"DecimalText needs a finite Decimal, got {value!r}")
        return str(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def table_of(model: type[Base]) -> Table:
    """The Core table behind a mapped class, typed as one (``__table__`` is typed as any FromClause)."""
    return Base.metadata.tables[model.__tablename__]


class BundleColumns:
    """The resource bundle, flattened: fractions in ppm, duration in milliseconds."""

    cpu_ppm: Mapped[int] = mapped_column(Integer)
    memory_ppm: Mapped[int] = mapped_column(Integer)
    tokens_ppm: Mapped[int] = mapped_column(Integer)
    attention_ppm: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(BigInteger)


def ppm_columns(ppm: Mapping[Resource, int], duration_ms: int) -> dict[str, int]:
    """Shares in ppm and a duration in ms as the :class:`BundleColumns` they fill, by column name."""
    return {f"{resource.value}_ppm": ppm[resource] for resource in Resource} | {"duration_ms": duration_ms}


def bundle_columns(bundle: ResourceBundle) -> dict[str, int]:
    """A bundle as the bids and executions columns store it: fractions in ppm, duration in ms."""
    return ppm_columns(bundle_to_ppm(bundle), seconds_to_ms(bundle.duration_seconds))


def bundle_of(row: BundleColumns) -> ResourceBundle:
    """The bundle a bids or executions row stores (the inverse of :func:`bundle_columns`)."""
    ppm = {resource: int(getattr(row, f"{resource.value}_ppm")) for resource in Resource}
    return bundle_from_ppm(ppm, row.duration_ms)


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default=AgentStatus.DORMANT)  # an AgentStatus
    entry_point: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    status_changed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (CheckConstraint("status IN ('active', 'dormant', 'died')", name="status"),)


class Account(Base):
    """A ledger account (TigerBeetle style): postings only grow; balance = credits − debits."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(160), primary_key=True)  # agent:<id>:available, system:burn, …
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # available | locked | burn | mint
    debits_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    debits_must_not_exceed_credits: Mapped[bool] = mapped_column(default=True)

    __table_args__ = (
        CheckConstraint("debits_micros >= 0 AND credits_micros >= 0", name="postings_non_negative"),
        CheckConstraint("NOT debits_must_not_exceed_credits OR debits_micros <= credits_micros", name="no_overdraft"),
    )


class Transfer(Base):
    """One journal entry: ``amount`` leaves the debit account and enters the credit account."""

    __tablename__ = "transfers"

    seq: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)  # journal order
    id: Mapped[str] = mapped_column(String(64), unique=True)  # time-ordered: its index grows at one end
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # lock | unlock | burn | transfer | reward | grant
    debit_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    credit_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    debit_balance_after_micros: Mapped[int] = mapped_column(BigInteger)
    credit_balance_after_micros: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str | None] = mapped_column(String(128))  # bid, prompt or execution it belongs to
    memo: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    __table_args__ = (
        CheckConstraint("amount_micros > 0", name="amount_positive"),
        CheckConstraint("debit_account_id <> credit_account_id", name="distinct_accounts"),
        CheckConstraint("kind IN ('lock', 'unlock', 'burn', 'transfer', 'reward', 'grant')", name="kind"),
    )


class Bid(BundleColumns, Base):
    __tablename__ = "bids"

    seq: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)  # placement order, breaks ties
    id: Mapped[str] = mapped_column(String(64), unique=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)  # who pays
    on_behalf_of: Mapped[str | None] = mapped_column(ForeignKey("agents.id"))  # who runs, when not the payer
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    lifetime_cycles: Mapped[int] = mapped_column(Integer)
    cycles_remaining: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=BidStatus.PENDING)  # a BidStatus
    paid_micros: Mapped[int | None] = mapped_column(BigInteger)  # what it paid when it won
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    placed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        CheckConstraint("amount_micros > 0", name="amount_positive"),
        CheckConstraint("status IN ('pending', 'won', 'outbid', 'cancelled')", name="status"),
        Index("ix_bids_pending", "status", "seq"),
        Index("ix_bids_agent_status", "agent_id", "status"),  # an agent's pending bids, counted at each bid
    )


class Execution(BundleColumns, Base):
    __tablename__ = "executions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    bid_id: Mapped[str | None] = mapped_column(ForeignKey("bids.id"), unique=True)
    cycle: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default=ExecutionStatus.ALLOCATED)  # an ExecutionStatus
    allocated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    pid: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(String(32))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    signal: Mapped[int | None] = mapped_column(Integer)
    cpu_seconds: Mapped[float | None] = mapped_column()  # a measurement, not money
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sandbox_layers: Mapped[str | None] = mapped_column(Text)  # JSON: applied and missing layers
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)  # sha256 of the execution's token
    detail: Mapped[str | None] = mapped_column(Text)  # why it ended, in words
    tokens_consumed: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # LLM tokens metered

    __table_args__ = (
        CheckConstraint("status IN ('allocated', 'running', 'terminated')", name="status"),
        Index("ix_executions_live", "status"),
    )


class Message(Base):
    """A message between agents; delivered to the first execution of the recipient that reads its inbox."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    from_agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    to_agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    body: Mapped[str] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    delivered_execution_id: Mapped[str | None] = mapped_column(String(64))
    sent_execution_id: Mapped[str | None] = mapped_column(String(64), index=True)  # counts against its quota

    __table_args__ = (
        UniqueConstraint("from_agent_id", "idempotency_key"),
        Index("ix_messages_inbox", "to_agent_id", "delivered_execution_id"),
    )


class Prompt(Base):
    """A prompt an agent put before the human, and how the human scored it."""

    __tablename__ = "prompts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    execution_id: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    attachments: Mapped[str] = mapped_column(Text, default="[]")  # JSON: paths in the agent's workspace
    attention_ms: Mapped[int] = mapped_column(BigInteger)  # what it cost of the execution's attention share
    status: Mapped[str] = mapped_column(String(16), default=PromptStatus.PENDING)  # a PromptStatus
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    scored_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    interesting: Mapped[int | None] = mapped_column(Integer)
    useful: Mapped[int | None] = mapped_column(Integer)
    understandable: Mapped[int | None] = mapped_column(Integer)
    reward_micros: Mapped[int | None] = mapped_column(BigInteger)
    transfer_id: Mapped[str | None] = mapped_column(String(64))
    seen_execution_id: Mapped[str | None] = mapped_column(String(64))  # the execution that read its score

    __table_args__ = (
        UniqueConstraint("agent_id", "idempotency_key"),
        CheckConstraint("status IN ('pending', 'scored', 'expired')", name="status"),
        Index("ix_prompts_status", "status", "created_at"),
    )


class SpendBucket(Base):
    """The system-wide LLM token bucket (LLM_SPEND_LIMIT), shared by every runtime on this database."""

    __tablename__ = "spend_buckets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    level: Mapped[float] = mapped_column()  # tokens available now (a measure, not money)
    refreshed_at: Mapped[float] = mapped_column()  # epoch seconds of the last refill
    version: Mapped[int] = mapped_column(BigInteger)  # how many changes it has seen


class MarketState(Base):
    """One row per resource: the capacity measure, what is in use and the last discovered price."""

    __tablename__ = "market_state"

    resource: Mapped[str] = mapped_column(String(16), primary_key=True)
    available_supply_ppm: Mapped[int] = mapped_column(Integer, default=PPM)
    current_utilization_ppm: Mapped[int] = mapped_column(Integer, default=0)
    current_market_price: Mapped[Decimal] = mapped_column(DecimalText)
    cycle: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class OutboxEvent(Base):
    """An event committed with its state change, waiting for the relay to see JetStream acknowledge it."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    # Not indexed: uuid4 ids are unique by construction, and a random-key index costs a page write per event.
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(128))
    payload: Mapped[str] = mapped_column(Text)
    headers: Mapped[str] = mapped_column(Text, default="{}")  # JSON: trace context and the like
    agent_id: Mapped[str | None] = mapped_column(String(128))
    correlation_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    stream_seq: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index(
            "ix_outbox_unpublished",
            "id",
            sqlite_where=text("published_at IS NULL"),
            postgresql_where=text("published_at IS NULL"),
        ),
    )
