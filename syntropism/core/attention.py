"""The human's attention: the only source of new credits (DESIGN §2, seed 003 §1).

Attention is a resource with supply 1.0 — the human reading full time. A bundle's ``attention_percent ×
duration_seconds`` is the attention-seconds its execution bought; putting a prompt before the human costs
``attention_seconds_per_prompt`` plus the time to read it (its length at ``attention_chars_per_second``).
Past the execution's share a prompt is refused (402), before the human sees anything.

The human scores each pending prompt once on Interesting, Useful and Understandable (0–10); the score mints
I·W_i + U·W_u + Un·W_un credits to the agent through the ledger (``economy.reward_issued``) in the same
transaction as ``attention.prompt_scored``. Unscored prompts expire after ``prompt_ttl_seconds``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import func, select, update

from syntropism.config import Settings
from syntropism.core.market import bundle_of
from syntropism.domain import economy
from syntropism.domain.errors import Refused
from syntropism.domain.events import PromptScored, PromptScoredData, PromptSubmitted, PromptSubmittedData
from syntropism.domain.models import from_micros, time_ordered_id
from syntropism.infra.database import Database
from syntropism.infra.ledger import apply
from syntropism.infra.outbox import record_event
from syntropism.infra.tables import Execution, Prompt, utcnow

MAX_PROMPT_CHARS = 20_000
MAX_ATTACHMENTS = 10


class AttentionError(Refused):
    """A refused prompt or score."""


@dataclass(frozen=True)
class PromptView:
    prompt_id: str
    agent_id: str
    text: str
    attachments: list[str]  # absolute paths, for the human to open
    status: str
    created_at: datetime
    expires_at: datetime
    attention_seconds: float
    interesting: int | None = None
    useful: int | None = None
    understandable: int | None = None
    credits: Decimal | None = None
    replayed: bool = False


class AttentionService:
    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings

    def cost_ms(self, text: str) -> int:
        """What reading ``text`` takes of the human, in attention-milliseconds."""
        seconds = self.settings.attention_seconds_per_prompt + len(text) / self.settings.attention_chars_per_second
        return math.ceil(seconds * 1000)

    def submit(
        self, agent_id: str, execution_id: str, text: str, attachments: list[str], *, idempotency_key: str
    ) -> PromptView:
        """Put a prompt before the human, within the execution's attention share."""
        if not text.strip() or len(text) > MAX_PROMPT_CHARS:
            raise AttentionError("invalid_prompt", f"a prompt is 1 to {MAX_PROMPT_CHARS} characters of text")
        paths = self._attachments(agent_id, attachments)
        cost = self.cost_ms(text)
        with self.database.transaction() as session:
            existing = session.scalars(
                select(Prompt).where(Prompt.agent_id == agent_id, Prompt.idempotency_key == idempotency_key)
            ).one_or_none()
            if existing is not None:
                if (existing.text, json.loads(existing.attachments)) != (text, attachments):
                    raise AttentionError("idempotency_conflict", f"key {idempotency_key!r} was used for another prompt")
                return self._view(existing, replayed=True)
            execution = session.get_one(Execution, execution_id)
            bundle = bundle_of(execution)
            share_ms = int(bundle.attention_percent * bundle.duration_seconds * 1000)
            spent_ms = session.scalar(
                select(func.coalesce(func.sum(Prompt.attention_ms), 0)).where(Prompt.execution_id == execution_id)
            )
            if spent_ms + cost > share_ms:
                raise AttentionError(
                    "quota_exceeded",
                    f"this prompt takes {cost / 1000:g} attention-seconds; {max(0, share_ms - spent_ms) / 1000:g} of "
                    f"the {share_ms / 1000:g} this execution bought remain (attention_percent × duration_seconds)",
                )
            now = utcnow()
            prompt = Prompt(
                id=time_ordered_id(),
                agent_id=agent_id,
                execution_id=execution_id,
                idempotency_key=idempotency_key,
                text=text,
                attachments=json.dumps(attachments),
                attention_ms=cost,
                created_at=now,
                expires_at=now + timedelta(seconds=self.settings.prompt_ttl_seconds),
            )
            session.add(prompt)
            record_event(
                session,
                PromptSubmitted(
                    agent_id=agent_id,
                    data=PromptSubmittedData(
                        prompt_id=prompt.id, execution_id=execution_id, text=text, attachments=[str(p) for p in paths]
                    ),
                ),
            )
            session.flush()
            return self._view(prompt)

    def pending(self) -> list[PromptView]:
        """The prompts waiting for the human, oldest first (expiring the stale ones on the way)."""
        self.expire()
        with self.database.reader() as session:
            prompts = session.scalars(select(Prompt).where(Prompt.status == "pending").order_by(Prompt.created_at))
            return [self._view(p) for p in prompts]

    def get(self, prompt_id: str) -> PromptView:
        with self.database.reader() as session:
            prompt = session.get(Prompt, prompt_id)
            if prompt is None:
                raise AttentionError("not_found", f"no prompt {prompt_id}")
            return self._view(prompt)

    def score(self, prompt_id: str, *, interesting: int, useful: int, understandable: int) -> PromptView:
        """The human's verdict: mints the reward once; a second scoring, or one of an expired prompt, is refused."""
        weights = (
            self.settings.reward_weight_interesting,
            self.settings.reward_weight_useful,
            self.settings.reward_weight_understandable,
        )
        credits = economy.reward_credits(interesting, useful, understandable, weights)  # validates the scores
        with self.database.transaction() as session:
            prompt = session.scalars(self._locked(select(Prompt).where(Prompt.id == prompt_id))).one_or_none()
            if prompt is None:
                raise AttentionError("not_found", f"no prompt {prompt_id}")
            if prompt.status == "scored":
                raise AttentionError(
                    "already_scored", f"prompt {prompt_id} was scored at {prompt.scored_at:%Y-%m-%d %H:%M:%S}"
                )
            if prompt.status == "expired" or prompt.expires_at <= utcnow():
                raise AttentionError(
                    "expired", f"prompt {prompt_id} expired unscored at {prompt.expires_at:%Y-%m-%d %H:%M:%S}"
                )
            transfer_id = None
            if credits > 0:
                receipt = apply(
                    session,
                    economy.reward(
                        prompt.agent_id,
                        interesting=interesting,
                        useful=useful,
                        understandable=understandable,
                        weights=weights,
                        idempotency_key=f"reward:{prompt_id}",
                        prompt_id=prompt_id,
                    ),
                )
                transfer_id = receipt.transfer_id
            prompt.status, prompt.scored_at, prompt.transfer_id = "scored", utcnow(), transfer_id
            prompt.interesting, prompt.useful, prompt.understandable = interesting, useful, understandable
            prompt.reward_micros = economy.parse_amount(credits) if credits > 0 else 0
            record_event(
                session,
                PromptScored(
                    agent_id=prompt.agent_id,
                    data=PromptScoredData(
                        prompt_id=prompt_id,
                        interesting=interesting,
                        useful=useful,
                        understandable=understandable,
                        credits=credits,
                    ),
                ),
            )
            session.flush()
            return self._view(prompt)

    def expire(self, now: datetime | None = None) -> int:
        """Mark prompts past their time as expired; returns how many."""
        with self.database.transaction() as session:
            result = session.execute(
                update(Prompt)
                .where(Prompt.status == "pending", Prompt.expires_at <= (now or utcnow()))
                .values(status="expired")
            )
            return result.rowcount or 0  # type: ignore[attr-defined]

    def scored_since(self, agent_id: str, execution_id: str) -> list[PromptView]:
        """The agent's scored prompts its executions have not seen yet (this one sees them, repeatedly)."""
        with self.database.transaction() as session:
            session.execute(
                update(Prompt)
                .where(Prompt.agent_id == agent_id, Prompt.status == "scored", Prompt.seen_execution_id.is_(None))
                .values(seen_execution_id=execution_id)
            )
            prompts = session.scalars(
                select(Prompt).where(Prompt.agent_id == agent_id, Prompt.seen_execution_id == execution_id)
            )
            return [self._view(p) for p in prompts]

    def _attachments(self, agent_id: str, attachments: list[str]) -> list[Path]:
        if len(attachments) > MAX_ATTACHMENTS:
            raise AttentionError("invalid_prompt", f"at most {MAX_ATTACHMENTS} attachments")
        workspace = (self.settings.effective_workspace_root / agent_id).resolve()
        paths = []
        for attachment in attachments:
            try:
                path = (workspace / attachment).resolve()
                found = path.is_relative_to(workspace) and path.is_file()
            except OSError:  # a name the filesystem refuses (too long, …) names no file
                found = False
            if not found:
                raise AttentionError("invalid_attachment", f"{attachment[:200]!r} is not a file in your workspace")
            paths.append(path)
        return paths

    def _locked(self, statement):  # type: ignore[no-untyped-def]
        return statement if self.database.backend == "sqlite" else statement.with_for_update()

    def _view(self, prompt: Prompt, *, replayed: bool = False) -> PromptView:
        workspace = (self.settings.effective_workspace_root / prompt.agent_id).resolve()
        return PromptView(
            prompt_id=prompt.id,
            agent_id=prompt.agent_id,
            text=prompt.text,
            attachments=[str(workspace / a) for a in json.loads(prompt.attachments)],
            status=prompt.status,
            created_at=prompt.created_at,
            expires_at=prompt.expires_at,
            attention_seconds=prompt.attention_ms / 1000,
            interesting=prompt.interesting,
            useful=prompt.useful,
            understandable=prompt.understandable,
            credits=from_micros(prompt.reward_micros) if prompt.reward_micros is not None else None,
            replayed=replayed,
        )
