"""The ledger's rules without a database: amounts, operations, posting and the invariant."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# --- hostile amounts: exact, never rounded, bounded work ------------------------------------------------------

TWENTY_NINE_NINES = "0." + "9" * 29  # rounds to exactly 1 in Decimal's default 28-digit context


@pytest.mark.parametrize(
    ("value", "micros"),
    [
        ("0.000001", 1),  # the smallest amount
        ("1e-6", 1),
        ("1E-6", 1),
        ("0.1e-5", 1),
        ("100e-8", 1),
        ("0.0000010", 1),  # trailing zeros past the 6th place are still exact
        ("0.000001" + "0" * 56, 1),  # 64 characters: the longest text accepted
        (Decimal("1E-6"), 1),
        (Decimal("0.000001000000000000000000000000000000000"), 1),
        (10**12, E.MAX_AMOUNT_MICROS),  # the largest amount, every way it can be written
        ("1000000000000", E.MAX_AMOUNT_MICROS),
        ("1e12", E.MAX_AMOUNT_MICROS),
        ("1E+12", E.MAX_AMOUNT_MICROS),
        ("0.000000000001e24", E.MAX_AMOUNT_MICROS),
        ("1000000000000.000000", E.MAX_AMOUNT_MICROS),
        (Decimal("1E+12"), E.MAX_AMOUNT_MICROS),
        ("999999999999.999999", E.MAX_AMOUNT_MICROS - 1),
        ("+5", 5_000_000),
        ("5.", 5_000_000),
        (".5", 500_000),
        ("1e0", 1_000_000),
        ("0012.500", 12_500_000),
    ],
)
def test_every_exact_way_of_writing_an_amount_within_the_limits_is_accepted(value: object, micros: int) -> None:
    assert E.parse_amount(value) == micros


@pytest.mark.parametrize(
    ("value", "code", "why"),
    [
        ("0.0000001", "invalid_amount", "6 decimal places"),  # a tenth of a micro-credit
        ("1e-7", "invalid_amount", "6 decimal places"),
        ("0.0000015", "invalid_amount", "6 decimal places"),
        (Decimal("0.0000001"), "invalid_amount", "6 decimal places"),
        # 29 significant digits: the 28-digit context rounded these to whole micro-credits; they are not.
        (TWENTY_NINE_NINES, "invalid_amount", "6 decimal places"),
        ("1." + "0" * 27 + "1", "invalid_amount", "6 decimal places"),
        ("12345678901.2345670000000000000001", "invalid_amount", "6 decimal places"),
        (Decimal(TWENTY_NINE_NINES), "invalid_amount", "6 decimal places"),
        ("1e-1000000000", "invalid_amount", "6 decimal places"),  # underflowed to 0 micro-credits, then a 500
        (Decimal("1e-1000000000"), "invalid_amount", "6 decimal places"),
        ("1e-" + "9" * 60, "invalid_amount", "6 decimal places"),
        ("1000000000000.000001", "amount_too_large", "exceeds the limit"),  # a micro-credit over
        (10**12 + 1, "amount_too_large", "exceeds the limit"),
        ("1.000000000001e12", "amount_too_large", "exceeds the limit"),
        ("1e13", "amount_too_large", "exceeds the limit"),
        ("9e999999", "amount_too_large", "exceeds the limit"),  # overflowed the multiplication, then a 500
        (Decimal("9e999999"), "amount_too_large", "exceeds the limit"),
        ("1e" + "9" * 62, "amount_too_large", "exceeds the limit"),
        ("1" * 64, "amount_too_large", "exceeds the limit"),
        (10**4000, "amount_too_large", "exceeds the limit"),
        ("0e999999999", "invalid_amount", "positive"),
        ("-0", "invalid_amount", "positive"),
        ("-1e-1000000000", "invalid_amount", "positive"),
        ("-9e999999", "invalid_amount", "positive"),
        (Decimal("-0"), "invalid_amount", "positive"),
        ("sNaN", "invalid_amount", "finite"),
        (Decimal("sNaN"), "invalid_amount", "finite"),
        ("1" * 65, "invalid_amount", "at most 64 characters"),
        ("9" * 1_000_000, "invalid_amount", "at most 64 characters"),
        ("1_000", "invalid_amount", "not a number"),  # Decimal() would take these; a decimal string is plainer
        (" 1", "invalid_amount", "not a number"),
        ("1\n", "invalid_amount", "not a number"),
        ("\u0661", "invalid_amount", "not a number"),  # ARABIC-INDIC DIGIT ONE
        ("0x10", "invalid_amount", "not a number"),
        ("", "invalid_amount", "not a number"),
        (".", "invalid_amount", "not a number"),
        ("1e", "invalid_amount", "not a number"),
        ("e5", "invalid_amount", "not a number"),
        ("1e5.5", "invalid_amount", "not a number"),
        ("--1", "invalid_amount", "not a number"),
        (b"1", "invalid_amount", "not bytes"),
    ],
)
def test_hostile_amounts_are_refused_exactly_without_rounding(value: object, code: str, why: str) -> None:
    with pytest.raises(LedgerError, match=why) as caught:
        E.parse_amount(value)
    assert caught.value.code == code
    assert len(caught.value.detail) < 200, "a refusal names the amount, cut short"


def test_refusing_an_absurd_exponent_costs_nothing() -> None:
    """Neither 10^(10^9) nor a billion-digit coefficient is ever built: the work is bounded by the text."""
    started = time.perf_counter()
    for value in ("1e-999999999999999999", "1e999999999999999999", Decimal("1e-999999999"), Decimal("9e999999999")):
        with pytest.raises(LedgerError):
            E.parse_amount(value)
    assert time.perf_counter() - started < 0.5


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    micros=st.integers(1, E.MAX_AMOUNT_MICROS),
    lead=st.integers(0, 5),
    zeros=st.integers(0, 30),
    below=st.integers(1, 9),
)
def test_any_exact_spelling_of_a_valid_amount_parses_to_it_and_a_hair_more_is_refused(
    micros: int, lead: int, zeros: int, below: int
) -> None:
    spellings = [
        f"{'0' * lead}{micros}{'0' * zeros}e{-6 - zeros}",  # micros × 10^zeros × 10^-(6 + zeros)
        f"{from_micros(micros)}{'0' * zeros}",  # fixed point, padded past the 6th place
    ]
    for text in spellings:
        assert E.parse_amount(Decimal(text)) == micros
        if len(text) <= E.MAX_CREDITS_TEXT:
            assert E.parse_amount(text) == micros
    # The same amount plus a sliver far below a micro-credit (past the 28th digit): refused, not rounded away.
    sliver = f"{micros}{'0' * (20 + zeros)}{below}e-{6 + 21 + zeros}"
    with pytest.raises(LedgerError, match="6 decimal places"):
        E.parse_amount(Decimal(sliver))
    if len(sliver) <= E.MAX_CREDITS_TEXT:
        with pytest.raises(LedgerError, match="6 decimal places"):
            E.parse_amount(sliver)


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
