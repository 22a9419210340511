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
from pathlib import Path, PurePosixPath

from syntropism.config import Settings
from syntropism.domain import economy
from syntropism.domain.errors import Reason, Refused
from syntropism.domain.events import (
    PromptExpired,
    PromptExpiredData,
    PromptScored,
    PromptScoredData,
    PromptSubmitted,
    PromptSubmittedData,
)
from syntropism.domain.models import from_micros, seconds_to_ms, time_ordered_id
from syntropism.domain.status import PromptStatus
from syntropism.infra import allocations, prompts
from syntropism.infra.database import Database
from syntropism.infra.ledger import Receipt, apply
from syntropism.infra.outbox import record_event
from syntropism.infra.tables import Prompt, bundle_of, utcnow
from syntropism.infra.workspaces import WorkspaceRefused, Workspaces

MAX_PROMPT_CHARS = 20_000
MAX_ATTACHMENTS = 10
MAX_ATTACHMENT_BYTES = 1 << 20  # copied to the host for the human: bounded


class AttentionError(Refused):
    """A refused prompt or score."""


@dataclass(frozen=True)
class PromptView:
    prompt_id: str
    agent_id: str
    text: str
    attachments: list[str]  # absolute paths, for the human to open
    status: PromptStatus
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
        self.workspaces = Workspaces.of(settings)

    def cost_ms(self, text: str) -> int:
        """What reading ``text`` takes of the human, in attention-milliseconds."""
        seconds = self.settings.attention_seconds_per_prompt + len(text) / self.settings.attention_chars_per_second
        return math.ceil(seconds * 1000)

    def submit(
        self, agent_id: str, execution_id: str, text: str, attachments: list[str], *, idempotency_key: str
    ) -> PromptView:
        """Put a prompt before the human, within the execution's attention share."""
        if not text.strip() or len(text) > MAX_PROMPT_CHARS:
            raise AttentionError(Reason.INVALID_PROMPT, f"a prompt is 1 to {MAX_PROMPT_CHARS} characters of text")
        contents = self._read_attachments(agent_id, attachments)
        cost = self.cost_ms(text)
        with self.database.transaction() as session:
            existing = prompts.by_key(session, agent_id, idempotency_key)
            if existing is not None:
                if (existing.text, json.loads(existing.attachments)) != (text, attachments):
                    raise AttentionError(
                        Reason.IDEMPOTENCY_CONFLICT, f"key {idempotency_key!r} was used for another prompt"
                    )
                return self._view(existing, replayed=True)
            execution = allocations.locked(session, execution_id)  # two prompts cannot both take the last of it
            bundle = bundle_of(execution)
            share_ms = seconds_to_ms(bundle.attention_percent * bundle.duration_seconds)
            spent_ms = prompts.attention_spent_ms(session, execution_id)
            if spent_ms + cost > share_ms:
                raise AttentionError(
                    Reason.QUOTA_EXCEEDED,
                    f"this prompt takes {cost / 1000:g} attention-seconds; {max(0, share_ms - spent_ms) / 1000:g} of "
                    f"the {share_ms / 1000:g} this execution bought remain (attention_percent × duration_seconds)",
                )
            now = utcnow()
            prompt = prompts.add(
                session,
                time_ordered_id(),
                agent_id=agent_id,
                execution_id=execution_id,
                idempotency_key=idempotency_key,
                text=text,
                attachments=json.dumps(attachments),
                attention_ms=cost,
                created_at=now,
                expires_at=now + timedelta(seconds=self.settings.prompt_ttl_seconds),
            )
            stored = self._store_attachments(prompt.id, attachments, contents)
            record_event(
                session,
                PromptSubmitted(
                    agent_id=agent_id,
                    data=PromptSubmittedData(
                        prompt_id=prompt.id, execution_id=execution_id, text=text, attachments=[str(p) for p in stored]
                    ),
                ),
            )
            session.flush()
            return self._view(prompt)

    def pending(self) -> list[PromptView]:
        """The prompts waiting for the human, oldest first (expiring the stale ones on the way)."""
        self.expire()
        with self.database.reader() as session:
            return [self._view(p) for p in prompts.pending(session)]

    def get(self, prompt_id: str) -> PromptView:
        with self.database.reader() as session:
            prompt = prompts.get(session, prompt_id)
            if prompt is None:
                raise AttentionError(Reason.NOT_FOUND, f"no prompt {prompt_id}")
            return self._view(prompt)

    def score(self, prompt_id: str, *, interesting: int, useful: int, understandable: int) -> PromptView:
        """The human's verdict: mints the reward once; a second scoring, or one of an expired prompt, is refused."""
        view, _receipt = self._score(prompt_id, None, interesting, useful, understandable)
        return view

    def reward(
        self,
        agent_id: str,
        *,
        interesting: int,
        useful: int,
        understandable: int,
        idempotency_key: str,
        prompt_id: str | None = None,
    ) -> Receipt:
        """The operator's reward: for a prompt of the agent's, it is that prompt's scoring (once, like
        :meth:`score`); without one, a reward for the agent's work as a whole."""
        if prompt_id is not None:
            _view, receipt = self._score(prompt_id, agent_id, interesting, useful, understandable)
            if receipt is None:
                raise AttentionError(Reason.INVALID_SCORE, "a reward of all-zero scores mints nothing")
            return receipt
        operation = economy.reward(
            agent_id,
            interesting=interesting,
            useful=useful,
            understandable=understandable,
            weights=self.settings.reward_weights,
            idempotency_key=idempotency_key,
        )
        with self.database.transaction() as session:
            return apply(session, operation)

    def _score(
        self, prompt_id: str, agent_id: str | None, interesting: int, useful: int, understandable: int
    ) -> tuple[PromptView, Receipt | None]:
        weights = self.settings.reward_weights
        credits = economy.reward_credits(interesting, useful, understandable, weights)  # validates the scores
        with self.database.transaction() as session:
            prompt = prompts.locked(session, prompt_id)
            if prompt is None or (agent_id is not None and prompt.agent_id != agent_id):
                raise AttentionError(
                    Reason.NOT_FOUND, f"no prompt {prompt_id}" + (f" of {agent_id}" if agent_id else "")
                )
            if prompt.status == PromptStatus.SCORED:
                raise AttentionError(
                    Reason.ALREADY_SCORED, f"prompt {prompt_id} was scored at {prompt.scored_at:%Y-%m-%d %H:%M:%S}"
                )
            if prompt.status == PromptStatus.EXPIRED or prompt.expires_at <= utcnow():
                raise AttentionError(
                    Reason.EXPIRED, f"prompt {prompt_id} expired unscored at {prompt.expires_at:%Y-%m-%d %H:%M:%S}"
                )
            receipt = None
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
            prompt.status, prompt.scored_at = PromptStatus.SCORED, utcnow()
            prompt.transfer_id = receipt.transfer_id if receipt else None
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
            return self._view(prompt), receipt

    def expire(self, now: datetime | None = None) -> int:
        """Mark prompts past their time as expired; returns how many."""
        now = now or utcnow()
        with self.database.transaction() as session:
            expired = prompts.expire_due(session, now)
            for prompt_id, agent_id, expires_at in expired:
                record_event(
                    session,
                    PromptExpired(
                        agent_id=agent_id, data=PromptExpiredData(prompt_id=prompt_id, expired_at=expires_at)
                    ),
                )
            return len(expired)

    def scored_since(self, agent_id: str, execution_id: str) -> list[PromptView]:
        """The agent's scored prompts its executions have not seen yet (this one sees them, repeatedly)."""
        with self.database.transaction() as session:
            return [self._view(p) for p in prompts.claim_scored(session, agent_id, execution_id)]

    def _read_attachments(self, agent_id: str, attachments: list[str]) -> list[bytes]:
        """Each attachment's content, read now from the agent's workspace without following a link: what the
        human will see is what was checked, whatever the agent does with the file afterwards."""
        if len(attachments) > MAX_ATTACHMENTS:
            raise AttentionError(Reason.INVALID_PROMPT, f"at most {MAX_ATTACHMENTS} attachments")
        contents = []
        for attachment in attachments:
            try:
                contents.append(self.workspaces.read(agent_id, attachment, max_bytes=MAX_ATTACHMENT_BYTES))
            except WorkspaceRefused as refused:
                raise AttentionError(Reason.INVALID_ATTACHMENT, refused.detail) from None
        return contents

    def attachment_path(self, prompt_id: str, index: int, name: str) -> Path:
        """Where the copy of a prompt's attachment lives, for the human to open."""
        return self.settings.state_dir / "attachments" / prompt_id / f"{index}-{PurePosixPath(name).name}"

    def _store_attachments(self, prompt_id: str, names: list[str], contents: list[bytes]) -> list[Path]:
        paths = []
        for index, (name, content) in enumerate(zip(names, contents, strict=True)):
            path = self.attachment_path(prompt_id, index, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)  # a folder of the host's, named by the prompt's id: no agent reaches it
            paths.append(path.resolve())
        return paths

    def _view(self, prompt: Prompt, *, replayed: bool = False) -> PromptView:
        names = json.loads(prompt.attachments)
        return PromptView(
            prompt_id=prompt.id,
            agent_id=prompt.agent_id,
            text=prompt.text,
            attachments=[str(self.attachment_path(prompt.id, i, name).resolve()) for i, name in enumerate(names)],
            status=PromptStatus(prompt.status),
            created_at=prompt.created_at,
            expires_at=prompt.expires_at,
            attention_seconds=prompt.attention_ms / 1000,
            interesting=prompt.interesting,
            useful=prompt.useful,
            understandable=prompt.understandable,
            credits=from_micros(prompt.reward_micros) if prompt.reward_micros is not None else None,
            replayed=replayed,
        )
