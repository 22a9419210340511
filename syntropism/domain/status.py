"""The life stages of the economy's things, one enum each. The values are what the database stores (its CHECK
constraints list the same words) and what the API answers; being ``str`` enums they compare equal to those words."""

from __future__ import annotations

from enum import StrEnum


class AgentStatus(StrEnum):
    ACTIVE = "active"  # an execution of it is allocated or running
    DORMANT = "dormant"  # alive, waiting for a bid by or for it to win
    DIED = "died"  # no credits, nothing pending, past the grace period: its accounts take no more credits


class BidStatus(StrEnum):
    PENDING = "pending"  # in the book, its credits locked
    WON = "won"
    OUTBID = "outbid"  # its lifetime ran out without winning; its credits unlocked
    CANCELLED = "cancelled"  # withdrawn by its bidder


class ExecutionStatus(StrEnum):
    ALLOCATED = "allocated"  # won, not yet started
    RUNNING = "running"
    TERMINATED = "terminated"


class PromptStatus(StrEnum):
    PENDING = "pending"  # waiting for the human
    SCORED = "scored"
    EXPIRED = "expired"


LIVE_EXECUTION_STATUSES = (ExecutionStatus.ALLOCATED, ExecutionStatus.RUNNING)
