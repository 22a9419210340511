"""Differential: the lab's vectorised ledger against the real one (``domain.economy.post`` and
``infra.ledger.apply_batch`` on a real SQLite file). The same random batches of operations go through all
three; after every batch each agent's available and locked balances, minted, burned, every refusal's reason
and the invariant must be identical."""

from __future__ import annotations

import shutil
import tempfile
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from syntropism.domain import economy as E
from syntropism.domain.economy import MAX_AMOUNT_MICROS, AccountState, LedgerError, OperationKind
from syntropism.domain.errors import Reason
from syntropism.infra.ledger import Ledger, apply_batch
from syntropism.lab.ledger import ArrayLedger, Outcome
from tests.support.ledger_template import AGENTS, copy_of_template

KINDS = (OperationKind.GRANT, OperationKind.LOCK, OperationKind.UNLOCK, OperationKind.BURN, OperationKind.TRANSFER)


# Mostly ordinary amounts; some at and past the per-operation cap (so 64-bit totals overflow after ~9 grants),
# some not positive, one past int64.
ordinary = st.integers(min_value=1, max_value=500_000_000)
amounts = st.one_of(
    ordinary,
    ordinary,
    ordinary,
    st.just(MAX_AMOUNT_MICROS),
    st.just(MAX_AMOUNT_MICROS),
    st.sampled_from([MAX_AMOUNT_MICROS + 1, 0, -7, 2**70]),
)
rows = st.tuples(st.integers(0, len(AGENTS) - 1), st.integers(0, len(AGENTS) - 1), amounts)
batches = st.lists(st.tuples(st.sampled_from(KINDS), st.lists(rows, min_size=1, max_size=6)), min_size=1, max_size=25)
# Grants at the cap, spread over the agents: the tenth passes 2⁶³ − 1 in the mint's total (no agent's), first
# in a vectorised batch, then one by one; then the same for one agent's own totals through locks.
_CAP_FOR_ALL = (OperationKind.GRANT, [(a, a, MAX_AMOUNT_MICROS) for a in range(len(AGENTS))])
OVERFLOWING = [_CAP_FOR_ALL, _CAP_FOR_ALL, _CAP_FOR_ALL, (OperationKind.GRANT, [(0, 0, MAX_AMOUNT_MICROS), (1, 1, 5)])]
OVERFLOWING += [(OperationKind.LOCK, [(0, 0, MAX_AMOUNT_MICROS)] * 3), (OperationKind.UNLOCK, [(0, 0, 10**18)] * 3)]
OVERFLOWING += [(OperationKind.LOCK, [(0, 0, MAX_AMOUNT_MICROS)] * 3), (OperationKind.UNLOCK, [(0, 0, 10**18)] * 3)]
OVERFLOWING += [(OperationKind.LOCK, [(0, 0, MAX_AMOUNT_MICROS)] * 3), (OperationKind.LOCK, [(0, 0, 1)])]


def domain_operation(kind: OperationKind, agent: str, to: str, micros: int, key: str) -> E.Operation:
    amount = Decimal(micros).scaleb(-6)
    if kind is OperationKind.GRANT:
        return E.grant(agent, amount, idempotency_key=key)
    if kind is OperationKind.LOCK:
        return E.lock(agent, amount, idempotency_key=key)
    if kind is OperationKind.UNLOCK:
        return E.unlock(agent, amount, idempotency_key=key, reason="outbid")
    if kind is OperationKind.BURN:
        return E.burn(agent, amount, idempotency_key=key)
    return E.transfer(agent, to, amount, idempotency_key=key)


class Reference:
    """The real ledger twice over: the domain's post on in-memory accounts, and infra on SQLite."""

    def __init__(self, folder: Path) -> None:
        self.database = copy_of_template(folder)
        self.ledger = Ledger(self.database)
        self.accounts = {E.SYSTEM_MINT: AccountState(E.SYSTEM_MINT, debits_must_not_exceed_credits=False)}
        self.accounts[E.SYSTEM_BURN] = AccountState(E.SYSTEM_BURN, debits_must_not_exceed_credits=False)
        for agent in AGENTS:
            for account in (E.available_account(agent), E.locked_account(agent)):
                self.accounts[account] = AccountState(account)
        self.keys = 0

    def apply(self, kind: OperationKind, batch: list[tuple[int, int, int]]) -> tuple[list[Reason | None], ...]:
        """Each row through domain.post and, in one transaction, through infra.apply_batch: both reasons."""
        domain_reasons: list[Reason | None] = []
        operations: list[E.Operation] = []
        constructed: list[Reason | None] = []
        for agent, to, micros in batch:
            self.keys += 1
            try:
                operation = domain_operation(kind, AGENTS[agent], AGENTS[to], micros, f"k{self.keys}")
            except LedgerError as refused:
                domain_reasons.append(refused.code)
                constructed.append(refused.code)
                continue
            constructed.append(None)
            operations.append(operation)
            try:
                E.post(operation, self.accounts)
                domain_reasons.append(None)
            except LedgerError as refused:
                domain_reasons.append(refused.code)
        with self.database.transaction() as session:
            results = iter(apply_batch(session.connection(), [(op, {}) for op in operations]))
        infra_reasons = [reason if reason is not None else _reason(next(results)) for reason in constructed]
        return domain_reasons, infra_reasons

    def balances(self) -> list[tuple[Decimal, Decimal]]:
        return [(b.available, b.locked) for b in (self.ledger.balance(agent) for agent in AGENTS)]

    def domain_balances(self) -> list[tuple[int, int]]:
        return [
            (
                self.accounts[E.available_account(agent)].balance_micros,
                self.accounts[E.locked_account(agent)].balance_micros,
            )
            for agent in AGENTS
        ]


def _reason(result: object) -> Reason | None:
    return result.code if isinstance(result, LedgerError) else None  # type: ignore[return-value]


@given(batches)
@example(OVERFLOWING)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_lab_ledger_moves_and_refuses_exactly_as_the_real_one(steps: list) -> None:
    folder = Path(tempfile.mkdtemp(prefix="lab-ledger-"))
    reference = Reference(folder)
    lab = ArrayLedger(len(AGENTS))
    try:
        for kind, batch in steps:
            who, to, micros = (list(column) for column in zip(*batch, strict=True))
            outcomes = lab.post(kind, who, micros, to if kind is OperationKind.TRANSFER else None)
            domain_reasons, infra_reasons = reference.apply(kind, batch)
            lab_reasons = [Outcome(int(o)).reason for o in outcomes]
            for outcome in outcomes.tolist():
                event(Outcome(outcome).name)
            assert lab_reasons == domain_reasons == infra_reasons, (kind, batch)
            expected = reference.domain_balances()
            assert list(zip(lab.available_micros.tolist(), lab.locked_micros.tolist(), strict=True)) == expected
            assert reference.balances() == [(Decimal(a).scaleb(-6), Decimal(b).scaleb(-6)) for a, b in expected]
            assert lab.minted_micros == -reference.accounts[E.SYSTEM_MINT].balance_micros
            assert lab.burned_micros == reference.accounts[E.SYSTEM_BURN].balance_micros
            report = E.check_invariant(list(reference.accounts.values()))
            assert lab.invariant_holds() is report.holds is True
        assert reference.ledger.verify().ok
    finally:
        reference.database.dispose()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_large_batch_takes_the_vectorised_path_and_agrees_with_one_by_one() -> None:
    """10,000 agents, one lock each: vectorised; the same locks one at a time give the same balances."""
    rng = np.random.default_rng(20)
    n = 10_000
    fast, slow = ArrayLedger(n), ArrayLedger(n)
    grants = rng.integers(1, 10**9, n)
    locks = rng.integers(1, 2 * 10**9, n)  # about half exceed the grant: refused
    for ledger in (fast, slow):
        ledger.post(OperationKind.GRANT, np.arange(n), grants)
    vectorised = fast.post(OperationKind.LOCK, np.arange(n), locks)
    single = np.array([slow.post(OperationKind.LOCK, [i], [locks[i]])[0] for i in range(n)])
    assert (vectorised == single).all()
    assert (vectorised == Outcome.INSUFFICIENT_FUNDS).sum() == (locks > grants).sum() > 0
    assert (fast.available_micros == slow.available_micros).all() and fast.invariant_holds()


def test_an_agent_twice_in_a_batch_sees_its_own_earlier_row() -> None:
    ledger = ArrayLedger(2)
    ledger.post(OperationKind.GRANT, [0], [10])
    outcomes = ledger.post(OperationKind.LOCK, [0, 0, 0], [6, 6, 4])
    assert outcomes.tolist() == [Outcome.ACCEPTED, Outcome.INSUFFICIENT_FUNDS, Outcome.ACCEPTED]
    assert ledger.available_micros.tolist() == [0, 0] and ledger.locked_micros.tolist() == [10, 0]


def test_an_unknown_agent_is_an_error_not_a_silent_wrap() -> None:
    with pytest.raises(IndexError, match="no accounts"):
        ArrayLedger(2).post(OperationKind.GRANT, [2], [1])
