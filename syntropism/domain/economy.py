"""The Economic Engine's rules: accounts, operations and how an operation posts to a double-entry journal.

No I/O here. Money is integer micro-credits. Every operation is one journal entry moving ``amount`` from a
debit account to a credit account (TigerBeetle style: an account's postings only grow, its balance is
credits − debits, and an agent's accounts may never be debited past their credits). So every entry balances
by construction and the invariant Σ available + Σ locked + burned = minted holds after any sequence of posts.

| operation | debit → credit | when |
|---|---|---|
| lock | agent available → agent locked | a bid is placed |
| unlock | agent locked → agent available | a bid is outbid, expires or is withdrawn |
| burn | agent locked → system:burn | a bid wins: the credits leave the economy |
| transfer | agent available → other agent available | agents pay each other |
| reward | system:mint → agent available | the human scores a prompt: I·W_i + U·W_u + Un·W_un |
| grant | system:mint → agent available | the operator funds an agent (initial grant) |
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from typing import Any

from syntropism.domain.errors import Reason, Refused
from syntropism.domain.events import (
    CreditsBurned,
    CreditsGranted,
    CreditsLocked,
    CreditsTransferred,
    CreditsUnlocked,
    Event,
    RewardIssued,
    UnlockReason,
)
from syntropism.domain.models import (
    MAX_CREDITS_TEXT,
    MICROS_PER_CREDIT,
    AmountTooLarge,
    from_micros,
    micros_of_digits,
    to_micros,
)

SYSTEM_BURN = "system:burn"
SYSTEM_MINT = "system:mint"
MAX_AMOUNT_MICROS = 10**12 * MICROS_PER_CREDIT  # one trillion credits in a single operation
MAX_POSTINGS_MICROS = 2**63 - 1  # an account's posting totals are 64-bit
MAX_JOURNAL_SEQ = 2**63 - 1  # journal entries are numbered by a 64-bit sequence
MAX_KEY_LENGTH = 200
MAX_SCORE = 10


def available_account(agent_id: str) -> str:
    return f"agent:{agent_id}:available"


def locked_account(agent_id: str) -> str:
    return f"agent:{agent_id}:locked"


class OperationKind(StrEnum):
    LOCK = "lock"
    UNLOCK = "unlock"
    BURN = "burn"
    TRANSFER = "transfer"
    REWARD = "reward"
    GRANT = "grant"


class LedgerError(Refused):
    """A refused ledger operation; its ``reason`` is also its ``code``."""

    @property
    def code(self) -> Reason:
        return self.reason


_DECIMAL_TEXT = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?")
_NOT_FINITE = frozenset({"nan", "snan", "inf", "infinity"})


def _shown(value: Any) -> str:
    """``value`` for an error message, cut short: a refusal must not echo a huge number back."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"(an integer of {value.bit_length()} bits)"
    text = str(value)
    return text if len(text) <= 40 else f"{text[:24]}…{text[-8:]} ({len(text)} characters)"


def parse_amount(value: Any, what: str = "amount") -> int:
    """A positive credit amount as integer micro-credits, computed exactly; anything else is refused, never rounded.

    Accepts an int, a Decimal or a plain decimal string of at most MAX_CREDITS_TEXT ASCII characters (``"12.5"``,
    ``"1e3"``); refuses binary floats, booleans, NaN and infinities, zero and negatives, anything that is not a
    whole number of micro-credits however many digits it has (``"0.99999999999999999999999999999"`` is not 1),
    and anything above MAX_AMOUNT_MICROS however large its exponent (``"9e999999"``).
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        kind = type(value).__name__
        raise LedgerError(Reason.INVALID_AMOUNT, f"{what} must be a Decimal, an int or a decimal string, not {kind}")
    try:
        if isinstance(value, str):
            micros = _text_micros(value, what)
        elif isinstance(value, int):
            micros = to_micros(value, limit=MAX_AMOUNT_MICROS) if value > 0 else 0
        else:
            if not value.is_finite():
                raise LedgerError(Reason.INVALID_AMOUNT, f"{what} must be finite, got {value}")
            micros = to_micros(value, limit=MAX_AMOUNT_MICROS) if value > 0 else 0
    except LedgerError:
        raise
    except AmountTooLarge:
        raise LedgerError(
            Reason.AMOUNT_TOO_LARGE, f"{what} {_shown(value)} exceeds the limit of {from_micros(MAX_AMOUNT_MICROS)}"
        ) from None
    except ValueError:
        raise LedgerError(Reason.INVALID_AMOUNT, f"{what} {_shown(value)} has more than 6 decimal places") from None
    if micros <= 0:
        raise LedgerError(Reason.INVALID_AMOUNT, f"{what} must be positive, got {_shown(value)}")
    return micros


def _text_micros(text: str, what: str) -> int:
    """A decimal string's micro-credits (ValueError/AmountTooLarge as :func:`to_micros`); 0 if not positive."""
    if len(text) > MAX_CREDITS_TEXT:
        raise LedgerError(
            Reason.INVALID_AMOUNT, f"{what} must be at most {MAX_CREDITS_TEXT} characters, got {len(text)}"
        )
    match = _DECIMAL_TEXT.fullmatch(text)
    if match is None or not (match[2] or match[3]):
        if text.strip().lstrip("+-").lower() in _NOT_FINITE:
            raise LedgerError(Reason.INVALID_AMOUNT, f"{what} must be finite, got {text}")
        raise LedgerError(Reason.INVALID_AMOUNT, f"{what} {_shown(text)!r} is not a number (write it like 12.5 or 1e3)")
    sign, whole, fraction, exponent = match[1], match[2], match[3] or "", match[4] or "0"
    if sign == "-":
        return 0
    return micros_of_digits(False, whole + fraction, int(exponent) - len(fraction), limit=MAX_AMOUNT_MICROS)


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 128 or ":" in value:
        raise LedgerError(
            Reason.INVALID_INPUT, f"{what} must be a non-empty string of at most 128 characters without ':'"
        )
    return value


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise LedgerError(
            Reason.INVALID_INPUT, f"idempotency key must be a non-empty string of ≤ {MAX_KEY_LENGTH} chars"
        )
    return key


def reward_credits(
    interesting: int, useful: int, understandable: int, weights: tuple[Decimal, Decimal, Decimal]
) -> Decimal:
    """credits = I·W_i + U·W_u + Un·W_un, rounded half-even to the micro-credit."""
    for name, score in (("interesting", interesting), ("useful", useful), ("understandable", understandable)):
        if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= MAX_SCORE:
            raise LedgerError(Reason.INVALID_SCORE, f"{name} must be an integer from 0 to {MAX_SCORE}, got {score!r}")
    w_i, w_u, w_un = weights
    total = interesting * w_i + useful * w_u + understandable * w_un
    return total.quantize(Decimal(1) / MICROS_PER_CREDIT, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Operation:
    """One requested movement of credits, validated; :func:`post` decides whether the balances allow it."""

    kind: OperationKind
    idempotency_key: str
    debit_account: str
    credit_account: str
    amount_micros: int
    agent_id: str  # whose event it is
    reference: str | None = None  # the bid, prompt or execution it belongs to
    memo: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # unlock reason, scores, counter-party

    def same_request_as(self, kind: str, debit: str, credit: str, amount_micros: int) -> bool:
        return (self.kind, self.debit_account, self.credit_account, self.amount_micros) == (
            kind,
            debit,
            credit,
            amount_micros,
        )


def lock(agent_id: str, amount: Any, *, idempotency_key: str, bid_id: str | None = None) -> Operation:
    agent_id = _check_id(agent_id, "agent id")
    return Operation(
        OperationKind.LOCK,
        _check_key(idempotency_key),
        available_account(agent_id),
        locked_account(agent_id),
        parse_amount(amount),
        agent_id,
        reference=bid_id,
    )


def unlock(
    agent_id: str, amount: Any, *, idempotency_key: str, reason: UnlockReason | str, bid_id: str | None = None
) -> Operation:
    agent_id = _check_id(agent_id, "agent id")
    try:
        reason = UnlockReason(reason)
    except ValueError:
        choices = ", ".join(r.value for r in UnlockReason)
        raise LedgerError(Reason.INVALID_INPUT, f"unlock reason must be one of {choices}, got {reason!r}") from None
    return Operation(
        OperationKind.UNLOCK,
        _check_key(idempotency_key),
        locked_account(agent_id),
        available_account(agent_id),
        parse_amount(amount),
        agent_id,
        reference=bid_id,
        details={"reason": reason},
    )


def burn(
    agent_id: str, amount: Any, *, idempotency_key: str, bid_id: str | None = None, execution_id: str | None = None
) -> Operation:
    agent_id = _check_id(agent_id, "agent id")
    return Operation(
        OperationKind.BURN,
        _check_key(idempotency_key),
        locked_account(agent_id),
        SYSTEM_BURN,
        parse_amount(amount),
        agent_id,
        reference=bid_id,
        details={"execution_id": execution_id},
    )


def transfer(
    from_agent: str, to_agent: str, amount: Any, *, idempotency_key: str, purpose: str | None = None
) -> Operation:
    from_agent, to_agent = _check_id(from_agent, "sender"), _check_id(to_agent, "recipient")
    if from_agent == to_agent:
        raise LedgerError(Reason.INVALID_INPUT, f"cannot transfer from {from_agent} to itself")
    if purpose is not None and (not isinstance(purpose, str) or len(purpose) > 500):
        raise LedgerError(Reason.INVALID_INPUT, "purpose must be a string of at most 500 characters")
    return Operation(
        OperationKind.TRANSFER,
        _check_key(idempotency_key),
        available_account(from_agent),
        available_account(to_agent),
        parse_amount(amount),
        from_agent,
        memo=purpose,
        details={"to_agent": to_agent},
    )


def reward(
    agent_id: str,
    *,
    interesting: int,
    useful: int,
    understandable: int,
    weights: tuple[Decimal, Decimal, Decimal],
    idempotency_key: str,
    prompt_id: str | None = None,
) -> Operation:
    agent_id = _check_id(agent_id, "agent id")
    credits = reward_credits(interesting, useful, understandable, weights)
    if credits <= 0:
        raise LedgerError(Reason.INVALID_AMOUNT, "these scores earn no credits; a zero reward moves nothing")
    return Operation(
        OperationKind.REWARD,
        _check_key(idempotency_key),
        SYSTEM_MINT,
        available_account(agent_id),
        parse_amount(credits, "reward"),
        agent_id,
        reference=prompt_id,
        details={"interesting": interesting, "useful": useful, "understandable": understandable},
    )


def grant(agent_id: str, amount: Any, *, idempotency_key: str, reason: str = "initial grant") -> Operation:
    agent_id = _check_id(agent_id, "agent id")
    return Operation(
        OperationKind.GRANT,
        _check_key(idempotency_key),
        SYSTEM_MINT,
        available_account(agent_id),
        parse_amount(amount),
        agent_id,
        memo=reason[:500],
    )


@dataclass
class AccountState:
    """An account's posting totals, as the journal has them."""

    id: str
    debits_micros: int = 0
    credits_micros: int = 0
    debits_must_not_exceed_credits: bool = True

    @property
    def balance_micros(self) -> int:
        return self.credits_micros - self.debits_micros


@dataclass(frozen=True)
class Posting:
    """What an operation did: the journal entry and both accounts' balances after it."""

    operation: Operation
    debit_balance_after: int
    credit_balance_after: int


def post(operation: Operation, accounts: dict[str, AccountState]) -> Posting:
    """Apply ``operation`` to ``accounts`` in place, or raise LedgerError and change nothing."""
    debit = accounts.get(operation.debit_account)
    credit = accounts.get(operation.credit_account)
    for account_id, account in ((operation.debit_account, debit), (operation.credit_account, credit)):
        if account is None:
            owner = account_id.split(":")[1] if account_id.startswith("agent:") else account_id
            raise LedgerError(Reason.UNKNOWN_AGENT, f"no such agent: {owner}")
    assert debit is not None and credit is not None
    amount = operation.amount_micros
    if debit.debits_must_not_exceed_credits and debit.balance_micros < amount:
        raise LedgerError(
            Reason.INSUFFICIENT_FUNDS,
            f"{operation.debit_account} holds {from_micros(debit.balance_micros)}, "
            f"{operation.kind.value} needs {from_micros(amount)}",
        )
    if debit.debits_micros + amount > MAX_POSTINGS_MICROS or credit.credits_micros + amount > MAX_POSTINGS_MICROS:
        raise LedgerError(Reason.AMOUNT_TOO_LARGE, "this operation would overflow an account's 64-bit totals")
    debit.debits_micros += amount
    credit.credits_micros += amount
    return Posting(operation, debit.balance_micros, credit.balance_micros)


def _balances(available: int, locked: int) -> dict[str, Any]:
    return {"available_after": from_micros(available), "locked_after": from_micros(locked)}


# Per kind: the event class, and the payload fields beyond transfer_id and amount.
_EVENTS: dict[OperationKind, tuple[type[Event], Callable[[Posting], dict[str, Any]]]] = {
    OperationKind.LOCK: (
        CreditsLocked,
        lambda p: {"bid_id": p.operation.reference, **_balances(p.debit_balance_after, p.credit_balance_after)},
    ),
    OperationKind.UNLOCK: (
        CreditsUnlocked,
        lambda p: {
            "bid_id": p.operation.reference,
            "reason": p.operation.details["reason"],
            **_balances(p.credit_balance_after, p.debit_balance_after),
        },
    ),
    OperationKind.BURN: (
        CreditsBurned,
        lambda p: {
            "bid_id": p.operation.reference,
            "execution_id": p.operation.details.get("execution_id"),
            "burned_total": from_micros(p.credit_balance_after),
        },
    ),
    OperationKind.TRANSFER: (
        CreditsTransferred,
        lambda p: {
            "from_agent": p.operation.agent_id,
            "to_agent": p.operation.details["to_agent"],
            "purpose": p.operation.memo,
        },
    ),
    OperationKind.REWARD: (
        RewardIssued,
        lambda p: {
            "prompt_id": p.operation.reference,
            "minted_total": from_micros(-p.debit_balance_after),
            **p.operation.details,
        },
    ),
    OperationKind.GRANT: (
        CreditsGranted,
        lambda p: {
            "reason": p.operation.memo or "grant",
            "minted_total": from_micros(-p.debit_balance_after),
            "available_after": from_micros(p.credit_balance_after),
        },
    ),
}


def event_for(posting: Posting, transfer_id: str) -> Event:
    """The economy.* event that records ``posting``."""
    event_class, payload_fields = _EVENTS[posting.operation.kind]
    data_model = event_class.model_fields["data"].annotation
    assert data_model is not None
    data = data_model(
        transfer_id=transfer_id, amount=from_micros(posting.operation.amount_micros), **payload_fields(posting)
    )
    event_type = event_class.model_fields["type"].default  # what the subclass pins, said so for the type checker
    return event_class(type=event_type, agent_id=posting.operation.agent_id, data=data)


@dataclass(frozen=True)
class InvariantReport:
    """Σ available + Σ locked + burned = minted, and where it fails."""

    available: int
    locked: int
    burned: int
    minted: int
    problems: tuple[str, ...] = ()

    @property
    def holds(self) -> bool:
        return not self.problems and self.available + self.locked + self.burned == self.minted


def check_invariant(accounts: list[AccountState]) -> InvariantReport:
    """Sum the accounts and list every one that breaks a rule (negative where forbidden, unknown kind)."""
    available = locked = burned = minted = 0
    problems = []
    for account in accounts:
        if account.debits_must_not_exceed_credits and account.balance_micros < 0:
            problems.append(f"account {account.id} is overdrawn: balance {from_micros(account.balance_micros)}")
        if account.id == SYSTEM_BURN:
            burned += account.balance_micros
        elif account.id == SYSTEM_MINT:
            minted -= account.balance_micros
        elif account.id.endswith(":available"):
            available += account.balance_micros
        elif account.id.endswith(":locked"):
            locked += account.balance_micros
        else:
            problems.append(f"account {account.id} is of no known kind")
    total = available + locked + burned
    if total != minted:
        problems.append(
            f"Σ available {from_micros(available)} + Σ locked {from_micros(locked)} + burned {from_micros(burned)} "
            f"= {from_micros(total)} ≠ minted {from_micros(minted)}"
        )
    return InvariantReport(available, locked, burned, minted, tuple(problems))
