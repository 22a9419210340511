"""The AccountsService: credits moved by request — an agent's transfer, the operator's grants, rewards and new
agents — and an agent's own balance and history.

Every caller (the System Service, the CLI) goes through here, so an idempotency key is always scoped to whoever
sent it (:mod:`syntropism.domain.identity`): an agent's key can never replay the operator's, nor another agent's.
The ledger does the moving; the reward's arithmetic is the attention service's, and a new agent's registration
the social service's.
"""

from __future__ import annotations

from decimal import Decimal

from syntropism.core.attention import AttentionService
from syntropism.core.social import SocialService
from syntropism.domain import economy
from syntropism.domain.identity import agent_key, operator_key
from syntropism.infra import read_models
from syntropism.infra.database import Database
from syntropism.infra.ledger import Balance, HistoryPage, Ledger, Receipt
from syntropism.infra.read_models import AgentView

NO_GRANT = (0, "0")  # an initial grant of nothing, as a client may write it: the agent starts without credits


class AccountsService:
    def __init__(self, database: Database, ledger: Ledger, social: SocialService, attention: AttentionService) -> None:
        self.database = database
        self.ledger = ledger
        self.social = social
        self.attention = attention

    # --- an agent's own -------------------------------------------------------------------------------------

    def balance(self, agent_id: str) -> Balance:
        """The agent's available and locked credits: the hot read, one statement with no transaction."""
        return self.ledger.balance(agent_id)

    def history(self, agent_id: str, *, limit: int = 50, before: int | None = None) -> HistoryPage:
        return self.ledger.history(agent_id, limit=limit, before=before)

    def transfer(
        self, from_agent: str, to_agent: str, amount: str | int | Decimal, *, key: str, purpose: str | None = None
    ) -> Receipt:
        """Credits from one agent's available account to another's; ``key`` is the sender's own."""
        operation = economy.transfer(
            from_agent, to_agent, amount, idempotency_key=agent_key(from_agent, "transfer", key), purpose=purpose
        )
        return self.ledger.execute(operation)

    # --- the operator's -------------------------------------------------------------------------------------

    def grant(self, agent_id: str, amount: str | int | Decimal, *, key: str, reason: str) -> Receipt:
        """New credits minted to the agent; ``key`` is the operator's."""
        operation = economy.grant(agent_id, amount, idempotency_key=operator_key("grant", key), reason=reason)
        return self.ledger.execute(operation)

    def reward(
        self,
        agent_id: str,
        *,
        interesting: int,
        useful: int,
        understandable: int,
        key: str,
        prompt_id: str | None = None,
    ) -> Receipt:
        """Credits minted for the agent's work at the configured reward weights; with ``prompt_id``, that prompt's
        scoring (once)."""
        return self.attention.reward(
            agent_id,
            interesting=interesting,
            useful=useful,
            understandable=understandable,
            idempotency_key=operator_key("reward", key),
            prompt_id=prompt_id,
        )

    def create_agent(
        self,
        agent_id: str,
        *,
        name: str | None,
        files: dict[str, str],
        entry_point: str,
        initial_grant: str | int | Decimal = 0,
    ) -> AgentView:
        """A new agent with its code and, unless ``initial_grant`` is nothing, its first credits; answers it as
        it stands once created."""
        grant = 0 if initial_grant in NO_GRANT else economy.parse_amount(initial_grant, "initial_grant")
        self.social.create_agent(agent_id, name=name, files=files, entry_point=entry_point, grant_micros=grant)
        created = read_models.agent(self.database, agent_id)
        if created is None:  # only if someone removed it in between, which nothing does
            raise LookupError(f"agent {agent_id} vanished right after it was created")
        return created
