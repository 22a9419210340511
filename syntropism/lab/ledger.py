"""The ledger's rules, vectorised: many agents' accounts as integer arrays, for the lab's fast path.

These are :func:`syntropism.domain.economy.post`'s rules, not an approximation of them (a differential test
runs the same operations through both and through ``infra.ledger`` and requires identical balances and
refusals). Each agent ``i`` has an available and a locked account, each with posting totals (debits,
credits) that only grow, in micro-credits; the system's mint and burn accounts are plain integers. An
operation is refused, moving nothing, when, in this order:

1. a transfer's sender is its recipient (``invalid_input``);
2. its amount is not positive (``invalid_amount``) or above ``MAX_AMOUNT_MICROS`` (``amount_too_large``);
3. the debited agent account holds less than the amount (``insufficient_funds``);
4. a posting total would pass 2⁶³ − 1 (``amount_too_large``).

A batch is applied as if its operations ran one after another in order. When no account appears twice in
it (the lab's usual case: one bid per agent per cycle) that is one vectorised step; otherwise it falls back
to a loop, so the result never depends on which path ran.

Invariant (checked by :meth:`ArrayLedger.invariant_holds`): Σ available + Σ locked + burned = minted, and
no agent account is overdrawn.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from syntropism.domain.economy import MAX_AMOUNT_MICROS, MAX_POSTINGS_MICROS, OperationKind
from syntropism.domain.errors import Reason

AVAILABLE, LOCKED = 0, 1  # rows of the posting arrays
MINT, BURN = -1, -2  # the system's accounts, as a "kind" in :meth:`ArrayLedger.post`


class Outcome(IntEnum):
    """Per operation: accepted (0) or why it was refused."""

    ACCEPTED = 0
    INVALID_INPUT = 1
    INVALID_AMOUNT = 2
    AMOUNT_TOO_LARGE = 3
    INSUFFICIENT_FUNDS = 4
    OVERFLOW = 5  # a posting total would pass 64 bits; reported as amount_too_large, like the real ledger

    @property
    def reason(self) -> Reason | None:
        return _REASONS[self]


_REASONS = {
    Outcome.ACCEPTED: None,
    Outcome.INVALID_INPUT: Reason.INVALID_INPUT,
    Outcome.INVALID_AMOUNT: Reason.INVALID_AMOUNT,
    Outcome.AMOUNT_TOO_LARGE: Reason.AMOUNT_TOO_LARGE,
    Outcome.INSUFFICIENT_FUNDS: Reason.INSUFFICIENT_FUNDS,
    Outcome.OVERFLOW: Reason.AMOUNT_TOO_LARGE,
}

# Per operation kind: (debited account, credited account), as AVAILABLE / LOCKED / MINT / BURN.
ROUTES: dict[OperationKind, tuple[int, int]] = {
    OperationKind.LOCK: (AVAILABLE, LOCKED),
    OperationKind.UNLOCK: (LOCKED, AVAILABLE),
    OperationKind.BURN: (LOCKED, BURN),
    OperationKind.TRANSFER: (AVAILABLE, AVAILABLE),
    OperationKind.REWARD: (MINT, AVAILABLE),
    OperationKind.GRANT: (MINT, AVAILABLE),
}


class ArrayLedger:
    """Accounts of ``agents`` agents (numbered 0…n−1) as int64 posting totals."""

    def __init__(self, agents: int) -> None:
        assert agents >= 0
        self.debits_micros = np.zeros((2, agents), dtype=np.int64)
        self.credits_micros = np.zeros((2, agents), dtype=np.int64)
        self.mint_debits_micros = 0  # the mint may go below zero: minted = −its balance
        self.burned_micros = 0

    @property
    def agents(self) -> int:
        return int(self.debits_micros.shape[1])

    @property
    def available_micros(self) -> NDArray[np.int64]:
        balance: NDArray[np.int64] = self.credits_micros[AVAILABLE] - self.debits_micros[AVAILABLE]
        return balance

    @property
    def locked_micros(self) -> NDArray[np.int64]:
        balance: NDArray[np.int64] = self.credits_micros[LOCKED] - self.debits_micros[LOCKED]
        return balance

    @property
    def minted_micros(self) -> int:
        return self.mint_debits_micros

    def post(
        self, kind: OperationKind, agents: ArrayLike, amounts_micros: ArrayLike, to_agents: ArrayLike | None = None
    ) -> NDArray[np.int8]:
        """Apply one operation per row (agent ``agents[k]``, ``amounts_micros[k]``; a transfer's recipient
        ``to_agents[k]``) as if one after another; returns each row's :class:`Outcome`."""
        who = np.asarray(agents, dtype=np.int64).ravel()
        amounts = np.asarray(amounts_micros, dtype=object if _has_big(amounts_micros) else np.int64).ravel()
        to = who if to_agents is None else np.asarray(to_agents, dtype=np.int64).ravel()
        assert len(who) == len(amounts) == len(to), "one agent, amount (and recipient) per operation"
        if len(who) and (who.min() < 0 or who.max() >= self.agents or to.min() < 0 or to.max() >= self.agents):
            raise IndexError("an operation names an agent the ledger has no accounts for")
        debit, credit = ROUTES[kind]
        transfer = kind is OperationKind.TRANSFER
        if amounts.dtype == object or not _distinct(who, to if transfer else None):
            return self._post_each(debit, credit, who, to, amounts, transfer)
        return self._post_vectorised(debit, credit, who, to, amounts, transfer)

    def _post_vectorised(
        self,
        debit: int,
        credit: int,
        who: NDArray[np.int64],
        to: NDArray[np.int64],
        amounts: NDArray[np.int64],
        transfer: bool,
    ) -> NDArray[np.int8]:
        outcome = np.zeros(len(who), dtype=np.int8)
        target = to if transfer else who
        if transfer:
            outcome[who == to] = Outcome.INVALID_INPUT
        _mark(outcome, amounts <= 0, Outcome.INVALID_AMOUNT)
        _mark(outcome, amounts > MAX_AMOUNT_MICROS, Outcome.AMOUNT_TOO_LARGE)
        if debit >= 0:
            balance = self.credits_micros[debit, who] - self.debits_micros[debit, who]
            _mark(outcome, balance < amounts, Outcome.INSUFFICIENT_FUNDS)
            _mark(outcome, amounts > MAX_POSTINGS_MICROS - self.debits_micros[debit, who], Outcome.OVERFLOW)
        if credit >= 0:
            _mark(outcome, amounts > MAX_POSTINGS_MICROS - self.credits_micros[credit, target], Outcome.OVERFLOW)
        if debit < 0 or credit < 0:  # a system account: its total is shared by every row, so decide in order
            system_total = self.mint_debits_micros if debit == MINT else self.burned_micros
            ok = np.flatnonzero(outcome == Outcome.ACCEPTED)
            if len(ok) and system_total + int(amounts[ok].sum()) > MAX_POSTINGS_MICROS:
                return self._post_each(debit, credit, who, to, amounts, transfer)
        accepted = outcome == Outcome.ACCEPTED
        moved = amounts[accepted]
        if debit >= 0:
            self.debits_micros[debit, who[accepted]] += moved
        else:
            self.mint_debits_micros += int(moved.sum())
        if credit >= 0:
            self.credits_micros[credit, target[accepted]] += moved
        else:
            self.burned_micros += int(moved.sum())
        return outcome

    def _post_each(
        self,
        debit: int,
        credit: int,
        who: NDArray[np.int64],
        to: NDArray[np.int64],
        amounts: NDArray[Any],
        transfer: bool,
    ) -> NDArray[np.int8]:
        outcome = np.zeros(len(who), dtype=np.int8)
        for k in range(len(who)):
            outcome[k] = self._post_one(debit, credit, int(who[k]), int(to[k]), int(amounts[k]), transfer)
        return outcome

    def _post_one(self, debit: int, credit: int, agent: int, to: int, amount: int, transfer: bool) -> Outcome:
        if transfer and agent == to:
            return Outcome.INVALID_INPUT
        if amount <= 0:
            return Outcome.INVALID_AMOUNT
        if amount > MAX_AMOUNT_MICROS:
            return Outcome.AMOUNT_TOO_LARGE
        target = to if transfer else agent
        if debit >= 0:
            debits = int(self.debits_micros[debit, agent])
            if int(self.credits_micros[debit, agent]) - debits < amount:
                return Outcome.INSUFFICIENT_FUNDS
            if debits + amount > MAX_POSTINGS_MICROS:
                return Outcome.OVERFLOW
        elif self.mint_debits_micros + amount > MAX_POSTINGS_MICROS:
            return Outcome.OVERFLOW
        if credit >= 0:
            if int(self.credits_micros[credit, target]) + amount > MAX_POSTINGS_MICROS:
                return Outcome.OVERFLOW
        elif self.burned_micros + amount > MAX_POSTINGS_MICROS:
            return Outcome.OVERFLOW
        if debit >= 0:
            self.debits_micros[debit, agent] += amount
        else:
            self.mint_debits_micros += amount
        if credit >= 0:
            self.credits_micros[credit, target] += amount
        else:
            self.burned_micros += amount
        return Outcome.ACCEPTED

    def invariant_holds(self) -> bool:
        """Σ available + Σ locked + burned = minted, and no agent account overdrawn."""
        available, locked = self.available_micros, self.locked_micros
        if (available < 0).any() or (locked < 0).any():
            return False
        total = int(available.sum(dtype=object)) + int(locked.sum(dtype=object)) + self.burned_micros
        return total == self.minted_micros


def _has_big(values: ArrayLike) -> bool:
    """True when some amount does not fit in int64 (a hostile or mistaken input): take the exact slow path."""
    if isinstance(values, np.ndarray) and values.dtype == np.int64:
        return False
    array = np.asarray(values, dtype=object).ravel()
    return any(not -(2**63) <= int(v) < 2**63 for v in array)


def _distinct(who: NDArray[np.int64], to: NDArray[np.int64] | None) -> bool:
    """No account is touched twice in the batch (so the rows cannot see each other's effects)."""
    touched = who if to is None else np.concatenate([who, to[who != to]])
    return len(np.unique(touched)) == len(touched)


def _mark(outcome: NDArray[np.int8], refused: NDArray[np.bool_], why: Outcome) -> None:
    """Record ``why`` for the rows it refuses that no earlier check refused (checks run in the rules' order)."""
    outcome[refused & (outcome == Outcome.ACCEPTED)] = why
