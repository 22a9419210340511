"""Property: under any sequence of ledger operations, valid or not, credits are conserved exactly.

A reference model (plain integers, written independently of the ledger) predicts every balance. After each
step the database must agree with it, ``verify`` must find the invariant intact, and a refused operation must
have raised a clear error and written nothing: no journal row, no event.
"""

from __future__ import annotations

import shutil
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import func, select

from syntropism.domain import economy as E
from syntropism.domain.economy import LedgerError
from syntropism.infra.ledger import Ledger
from syntropism.infra.tables import Account, OutboxEvent, Transfer
from tests.support.ledger_template import AGENTS, copy_of_template

WEIGHTS = (Decimal(1), Decimal("0.5"), Decimal("0.25"))


valid_amounts = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(200), places=6)
invalid_amounts = st.one_of(
    st.sampled_from([0, -1, "-0.5", "NaN", "Infinity", "-Infinity", "1e400", "0.0000001", "abc", None]),
    st.floats(allow_nan=True, allow_infinity=True),  # binary floats are never accepted as money
    st.integers(min_value=10**12 + 1, max_value=10**20),
)
amounts = st.one_of(valid_amounts, valid_amounts, invalid_amounts)  # mostly valid, many over balance
agents = st.sampled_from([*AGENTS, "ghost"])  # ghost: an unknown agent
keys = st.integers(min_value=0, max_value=40).map(lambda i: f"key-{i}")  # small pool: keys get reused


class LedgerMachine(RuleBasedStateMachine):
    @initialize()
    def open_ledger(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="ledger-prop-"))
        self.database = copy_of_template(self.folder)
        self.ledger = Ledger(self.database)
        self.balance = {E.available_account(a): 0 for a in AGENTS} | {E.locked_account(a): 0 for a in AGENTS}
        self.minted = self.burned = 0
        self.done: dict[str, tuple[Any, ...]] = {}  # idempotency key → what it did

    def teardown(self) -> None:
        if hasattr(self, "database"):
            self.database.dispose()
            shutil.rmtree(self.folder, ignore_errors=True)

    # --- the reference model ------------------------------------------------------------------------------

    def expect(self, signature: tuple[Any, ...], key: str, debit: str, credit: str, amount: Any) -> str:
        """What the model predicts: 'ok', 'replay' or the refusal code."""
        try:
            micros = E.parse_amount(amount)
        except LedgerError as error:
            return error.code
        if key in self.done:
            return "replay" if self.done[key] == (*signature, micros) else "idempotency_conflict"
        known = {*self.balance, E.SYSTEM_MINT, E.SYSTEM_BURN}
        if debit not in known or credit not in known:
            return "unknown_agent"
        if debit in self.balance and self.balance[debit] < micros:
            return "insufficient_funds"
        return "ok"

    def apply_model(self, signature: tuple[Any, ...], key: str, debit: str, credit: str, amount: Any) -> None:
        micros = E.parse_amount(amount)
        self.done[key] = (*signature, micros)
        if debit == E.SYSTEM_MINT:
            self.minted += micros
        else:
            self.balance[debit] -= micros
        if credit == E.SYSTEM_BURN:
            self.burned += micros
        else:
            self.balance[credit] += micros

    def attempt(self, build: Any, signature: tuple[Any, ...], key: str, debit: str, credit: str, amount: Any) -> None:
        predicted = self.expect(signature, key, debit, credit, amount)
        before = self.row_counts()
        try:
            receipt = self.ledger.execute(build())
        except LedgerError as error:
            assert error.code == predicted, (error.code, predicted, str(error))
            assert str(error), "every refusal says why"
            assert self.row_counts() == before, "a refused operation wrote something"
            return
        assert predicted in ("ok", "replay"), f"accepted, but the model expected {predicted}"
        assert receipt.replayed == (predicted == "replay")
        if predicted == "ok":
            self.apply_model(signature, key, debit, credit, amount)
            assert self.row_counts() == (before[0] + 1, before[1] + 1), "one journal row and one event"
        else:
            assert self.row_counts() == before

    def row_counts(self) -> tuple[int, int]:
        with self.database.reader() as session:
            return (
                session.scalar(select(func.count()).select_from(Transfer)) or 0,
                session.scalar(select(func.count()).select_from(OutboxEvent)) or 0,
            )

    # --- rules --------------------------------------------------------------------------------------------

    @rule(agent=agents, amount=amounts, key=keys)
    def grant(self, agent: str, amount: Any, key: str) -> None:
        account = E.available_account(agent)
        self.attempt(
            lambda: E.grant(agent, amount, idempotency_key=key),
            ("grant", E.SYSTEM_MINT, account),
            key,
            E.SYSTEM_MINT,
            account if agent != "ghost" else "agent:ghost:available",
            amount,
        )

    @rule(agent=agents, scores=st.tuples(*[st.integers(0, 10)] * 3), key=keys)
    def reward(self, agent: str, scores: tuple[int, int, int], key: str) -> None:
        amount = E.reward_credits(*scores, WEIGHTS)
        if amount == 0:
            return
        self.attempt(
            lambda: E.reward(
                agent,
                interesting=scores[0],
                useful=scores[1],
                understandable=scores[2],
                weights=WEIGHTS,
                idempotency_key=key,
            ),
            ("reward", E.SYSTEM_MINT, E.available_account(agent)),
            key,
            E.SYSTEM_MINT,
            E.available_account(agent),
            amount,
        )

    @rule(agent=agents, amount=amounts, key=keys)
    def lock(self, agent: str, amount: Any, key: str) -> None:
        debit, credit = E.available_account(agent), E.locked_account(agent)
        self.attempt(
            lambda: E.lock(agent, amount, idempotency_key=key), ("lock", debit, credit), key, debit, credit, amount
        )

    @rule(agent=agents, amount=amounts, key=keys)
    def unlock(self, agent: str, amount: Any, key: str) -> None:
        debit, credit = E.locked_account(agent), E.available_account(agent)
        self.attempt(
            lambda: E.unlock(agent, amount, idempotency_key=key, reason="expired"),
            ("unlock", debit, credit),
            key,
            debit,
            credit,
            amount,
        )

    @rule(agent=agents, amount=amounts, key=keys)
    def burn(self, agent: str, amount: Any, key: str) -> None:
        debit = E.locked_account(agent)
        self.attempt(
            lambda: E.burn(agent, amount, idempotency_key=key),
            ("burn", debit, E.SYSTEM_BURN),
            key,
            debit,
            E.SYSTEM_BURN,
            amount,
        )

    @rule(sender=agents, recipient=agents, amount=amounts, key=keys)
    def transfer(self, sender: str, recipient: str, amount: Any, key: str) -> None:
        if sender == recipient:
            return  # refused by validation; covered in the unit tests
        debit, credit = E.available_account(sender), E.available_account(recipient)
        self.attempt(
            lambda: E.transfer(sender, recipient, amount, idempotency_key=key),
            ("transfer", debit, credit),
            key,
            debit,
            credit,
            amount,
        )

    # --- after every step ---------------------------------------------------------------------------------

    @invariant()
    def ledger_matches_the_model_and_the_invariant_holds(self) -> None:
        if not hasattr(self, "database"):
            return
        with self.database.reader() as session:
            stored = {a.id: a.credits_micros - a.debits_micros for a in session.scalars(select(Account))}
        stored_model = {account: stored[account] for account in self.balance}
        assert stored_model == self.balance
        assert stored[E.SYSTEM_MINT] == -self.minted and stored[E.SYSTEM_BURN] == self.burned
        assert all(value >= 0 for account, value in stored.items() if account != E.SYSTEM_MINT)
        report = self.ledger.verify()
        assert report.ok, report


LedgerMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,  # the same sequences on every run and in CI
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerProperties = LedgerMachine.TestCase
