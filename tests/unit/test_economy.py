"""The ledger's rules without a database: amounts, operations, posting and the invariant."""

from __future__ import annotations

from decimal import Decimal

import pytest

from syntropism.domain import economy as E
from syntropism.domain.economy import AccountState, LedgerError
from syntropism.domain.models import from_micros

WEIGHTS = (Decimal(1), Decimal("2.5"), Decimal("0.333333"))


@pytest.mark.parametrize(
    ("value", "micros"),
    [(1, 1_000_000), ("0.000001", 1), (Decimal("30.5"), 30_500_000), ("1e3", 1_000_000_000)],
)
def test_amounts_are_exact_micro_credits(value: object, micros: int) -> None:
    assert E.parse_amount(value) == micros


@pytest.mark.parametrize(
    ("value", "code", "why"),
    [
        (0, "invalid_amount", "positive"),
        (-5, "invalid_amount", "positive"),
        ("NaN", "invalid_amount", "finite"),
        ("Infinity", "invalid_amount", "finite"),
        ("-Infinity", "invalid_amount", "finite"),
        (1.5, "invalid_amount", "not float"),
        (True, "invalid_amount", "not bool"),
        (None, "invalid_amount", "not NoneType"),
        ("abc", "invalid_amount", "not a number"),
        ("0.0000001", "invalid_amount", "6 decimal places"),
        (10**13, "amount_too_large", "exceeds the limit"),
    ],
)
def test_bad_amounts_are_refused_with_a_reason(value: object, code: str, why: str) -> None:
    with pytest.raises(LedgerError, match=why) as caught:
        E.parse_amount(value)
    assert caught.value.code == code


def test_reward_is_the_weighted_score_sum() -> None:
    assert E.reward_credits(7, 8, 6, (Decimal(1), Decimal(1), Decimal(1))) == Decimal(21)
    # 7·1 + 8·2.5 + 6·0.333333 = 28.999998
    assert E.reward_credits(7, 8, 6, WEIGHTS) == Decimal("28.999998")
    operation = E.reward("a", interesting=7, useful=8, understandable=6, weights=WEIGHTS, idempotency_key="r")
    assert operation.amount_micros == 28_999_998
    assert (operation.debit_account, operation.credit_account) == (E.SYSTEM_MINT, "agent:a:available")


@pytest.mark.parametrize("scores", [(11, 0, 0), (-1, 0, 0), (5, 5.5, 5), (5, True, 5)])
def test_scores_must_be_integers_from_0_to_10(scores: tuple[object, object, object]) -> None:
    with pytest.raises(LedgerError, match="integer from 0 to 10") as caught:
        E.reward_credits(*scores, WEIGHTS)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_score"


def test_zero_reward_moves_nothing_and_says_so() -> None:
    with pytest.raises(LedgerError, match="no credits"):
        E.reward("a", interesting=0, useful=0, understandable=0, weights=WEIGHTS, idempotency_key="r")


@pytest.mark.parametrize(
    ("build", "why"),
    [
        (lambda: E.transfer("a", "a", 1, idempotency_key="k"), "to itself"),
        (lambda: E.lock("", 1, idempotency_key="k"), "agent id"),
        (lambda: E.lock("a:b", 1, idempotency_key="k"), "agent id"),
        (lambda: E.lock("a", 1, idempotency_key=""), "idempotency key"),
        (lambda: E.unlock("a", 1, idempotency_key="k", reason="bored"), "unlock reason"),
        (lambda: E.transfer("a", "b", 1, idempotency_key="k", purpose="x" * 501), "purpose"),
    ],
)
def test_operations_validate_their_input(build, why: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LedgerError, match=why):
        build()


def _accounts(available: int = 100_000_000) -> dict[str, AccountState]:
    accounts = {
        account.id: account
        for account in (
            AccountState(E.SYSTEM_MINT, debits_must_not_exceed_credits=False),
            AccountState(E.SYSTEM_BURN),
            AccountState(E.available_account("a")),
            AccountState(E.locked_account("a")),
            AccountState(E.available_account("b")),
            AccountState(E.locked_account("b")),
        )
    }
    E.post(E.grant("a", from_micros(available), idempotency_key="g"), accounts)
    return accounts


def test_lock_burn_unlock_and_transfer_move_credits_between_the_right_accounts() -> None:
    accounts = _accounts()
    E.post(E.lock("a", 30, idempotency_key="l"), accounts)
    E.post(E.burn("a", 20, idempotency_key="b"), accounts)
    E.post(E.unlock("a", 10, idempotency_key="u", reason="outbid"), accounts)
    E.post(E.transfer("a", "b", 5, idempotency_key="t"), accounts)
    balances = {account_id: account.balance_micros // 1_000_000 for account_id, account in accounts.items()}
    assert balances == {
        E.SYSTEM_MINT: -100,
        E.SYSTEM_BURN: 20,
        "agent:a:available": 75,
        "agent:a:locked": 0,
        "agent:b:available": 5,
        "agent:b:locked": 0,
    }
    assert E.check_invariant(list(accounts.values())).holds


def test_a_refused_post_changes_nothing() -> None:
    accounts = _accounts()
    before = {k: (v.debits_micros, v.credits_micros) for k, v in accounts.items()}
    with pytest.raises(LedgerError, match=r"holds 100\.000000, lock needs 100\.000001") as caught:
        E.post(E.lock("a", "100.000001", idempotency_key="l"), accounts)
    assert caught.value.code == "insufficient_funds"
    with pytest.raises(LedgerError, match="no such agent: ghost"):
        E.post(E.transfer("a", "ghost", 1, idempotency_key="t"), accounts)
    assert {k: (v.debits_micros, v.credits_micros) for k, v in accounts.items()} == before


def test_invariant_check_names_what_is_wrong() -> None:
    accounts = list(_accounts().values())
    accounts[2].credits_micros += 1  # a credit appeared from nowhere
    report = E.check_invariant(accounts)
    assert not report.holds
    assert any("≠ minted" in problem for problem in report.problems)
    overdrawn = [AccountState("agent:x:available", debits_micros=2, credits_micros=1)]
    assert any("overdrawn" in problem for problem in E.check_invariant(overdrawn).problems)
