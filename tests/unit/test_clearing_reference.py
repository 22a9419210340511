"""``clear_market`` against a brute-force reference written from DESIGN §3 alone, on small books.

The reference shares no code with the clearing: plain tuples, Python sorting, and for a critical-value winner
the least amount at which it still wins found by re-running the whole auction at every amount where its place
in the order can change (a rival's amount, or one micro-credit above it). Greedy allocation is monotone, so the
least winning amount is one of those.
"""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syntropism.domain.clearing import CRITICAL_VALUE, FIRST_PRICE, PPM, RESOURCES, BidBook, Mechanism, clear_market
from syntropism.domain.models import MICROS_PER_CREDIT, Resource

D = Decimal
FLOOR = D("0.001")
DECAY = D("0.5")


class Bid(NamedTuple):
    id: str
    demand: tuple[int, int, int, int]  # ppm of cpu, memory, tokens, attention
    amount: int  # micro-credits
    duration_ms: int
    placed: int


def reference_winners(bids: list[Bid], in_use: tuple[int, ...]) -> list[str]:
    """DESIGN §3: highest amount first (ties: earlier placement, then id); a bid wins if all of it fits."""
    remaining = [PPM - used for used in in_use]
    won = []
    for bid in sorted(bids, key=lambda b: (-b.amount, b.placed, b.id)):
        if all(d <= r for d, r in zip(bid.demand, remaining, strict=True)):
            remaining = [r - d for d, r in zip(bid.demand, remaining, strict=True)]
            won.append(bid.id)
    return won


def least_winning_amount(bids: list[Bid], winner: Bid, in_use: tuple[int, ...]) -> int:
    candidates = {1} | {b.amount for b in bids} | {b.amount + 1 for b in bids}
    for amount in sorted(c for c in candidates if c <= winner.amount):
        trial = [b._replace(amount=amount) if b.id == winner.id else b for b in bids]
        if winner.id in reference_winners(trial, in_use):
            return amount
    raise AssertionError("a winner wins at its own amount")


def reference_payment(bids: list[Bid], winner: Bid, in_use: tuple[int, ...], mechanism: Mechanism) -> int:
    if mechanism == FIRST_PRICE:
        return winner.amount
    capacity_seconds = Fraction(sum(winner.demand), PPM) * Fraction(winner.duration_ms, 1000)
    reserve = max(1, int(capacity_seconds * Fraction(FLOOR) * MICROS_PER_CREDIT))
    return min(winner.amount, max(reserve, least_winning_amount(bids, winner, in_use)))


def reference_prices(
    bids: list[Bid], payments: dict[str, int], previous: dict[Resource, Decimal]
) -> dict[Resource, Fraction]:
    """DESIGN §3.6: each payment split over its resources by capacity-seconds × previous price; price = credits
    over capacity-seconds won; a resource nobody won decays toward the floor."""
    credits = dict.fromkeys(RESOURCES, Fraction(0))
    volume = dict.fromkeys(RESOURCES, Fraction(0))
    for bid in bids:
        if bid.id not in payments:
            continue
        seconds = Fraction(bid.duration_ms, 1000)
        held = {r: Fraction(d, PPM) * seconds for r, d in zip(RESOURCES, bid.demand, strict=True)}
        weights = {r: held[r] * Fraction(previous[r]) for r in RESOURCES}
        if not sum(weights.values()):
            weights = held
        for r in RESOURCES:
            if held[r]:
                credits[r] += Fraction(payments[bid.id], MICROS_PER_CREDIT) * weights[r] / sum(weights.values())
                volume[r] += held[r]
    return {
        r: credits[r] / volume[r] if volume[r] else max(Fraction(FLOOR), Fraction(previous[r]) * Fraction(DECAY))
        for r in RESOURCES
    }


def book_of(bids: list[Bid]) -> BidBook:
    return BidBook(
        ids=np.array([b.id for b in bids], dtype=np.str_),
        amounts=np.array([b.amount for b in bids], dtype=np.int64),
        demand=np.array([b.demand for b in bids], dtype=np.int64).reshape(len(bids), 4),
        duration_ms=np.array([b.duration_ms for b in bids], dtype=np.int64),
        placed=np.array([b.placed for b in bids], dtype=np.int64),
    )


def mismatches(
    bids: list[Bid], in_use: tuple[int, ...], previous: dict[Resource, Decimal], mechanism: Mechanism
) -> list[str]:
    """Every way ``clear_market`` differs from the reference on this book (empty when they agree)."""
    result = clear_market(
        book_of(bids), dict(zip(RESOURCES, (D(u) / PPM for u in in_use), strict=True)), previous, mechanism,
        decay=DECAY, floor=FLOOR,
    )  # fmt: skip
    winners = reference_winners(bids, in_use)
    by_id = {b.id: b for b in bids}
    payments = {w: reference_payment(bids, by_id[w], in_use, mechanism) for w in winners}
    found = []
    if [w.bid_id for w in result.winners] != winners:
        found.append(f"winners {[w.bid_id for w in result.winners]} ≠ {winners}")
    for w in result.winners:
        if w.bid_id in payments and int(w.payment * MICROS_PER_CREDIT) != payments[w.bid_id]:
            found.append(f"{w.bid_id} pays {int(w.payment * MICROS_PER_CREDIT)} µ, least winning {payments[w.bid_id]}")
    if not found and result.exact_prices != reference_prices(bids, payments, previous):
        found.append(f"prices {result.exact_prices} ≠ {reference_prices(bids, payments, previous)}")
    return found


FRACTIONS = [0, 0, 100_000, 250_000, 400_000, 500_000, 600_000, 1_000_000]
PREVIOUS = {Resource.CPU: D(1), Resource.MEMORY: D("0.5"), Resource.TOKENS: D(0), Resource.ATTENTION: D(2)}


def random_book(rng: random.Random) -> list[Bid]:
    ids = rng.sample([f"{letter}{n}" for letter in "pqrs" for n in range(4)], rng.randint(0, 8))
    bids = []
    for bid_id in ids:
        demand = tuple(rng.choice(FRACTIONS) for _ in RESOURCES)
        if not any(demand):
            demand = (rng.choice(FRACTIONS[2:]), *demand[1:])
        bids.append(Bid(bid_id, demand, rng.randint(1, 40), rng.choice([1, 500, 10_000, 60_000]), rng.randint(0, 3)))  # type: ignore[arg-type]
    return bids


@pytest.mark.parametrize("mechanism", [FIRST_PRICE, CRITICAL_VALUE])
def test_two_thousand_seeded_books_agree_with_the_reference(mechanism: Mechanism) -> None:
    """The independent check the lab issue describes: 2,000 seeded books, many ties in amount and placement."""
    rng = random.Random(20261204)
    disagreements = []
    for number in range(2000):
        bids = random_book(rng)
        in_use = tuple(rng.choice([0, 0, 200_000, 500_000]) for _ in RESOURCES)
        disagreements += [f"book {number}: {problem}" for problem in mismatches(bids, in_use, PREVIOUS, mechanism)]
    assert not disagreements, f"{len(disagreements)} disagreements, first: {disagreements[:3]}"


bid_st = st.tuples(
    st.tuples(*[st.sampled_from(FRACTIONS)] * 4).filter(any),
    st.integers(1, 12),  # amounts in micro-credits: ties everywhere
    st.sampled_from([1, 999, 10_000]),
    st.integers(0, 2),
)
books = st.lists(bid_st, max_size=7).flatmap(
    lambda rows: st.permutations([f"x{i}" for i in range(len(rows))]).map(
        lambda ids: [Bid(i, *row) for i, row in zip(ids, rows, strict=True)]
    )
)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(
    bids=books,
    in_use=st.tuples(*[st.sampled_from([0, 0, 500_000, 900_000])] * 4),
    mechanism=st.sampled_from([FIRST_PRICE, CRITICAL_VALUE]),
)
def test_clearing_agrees_with_the_brute_force_reference(
    bids: list[Bid], in_use: tuple[int, ...], mechanism: Mechanism
) -> None:
    assert mismatches(bids, in_use, PREVIOUS, mechanism) == []


def test_the_tie_a_rival_wins_costs_one_micro_credit_more() -> None:
    """B is placed before A; A bid more and wins, but at B's amount B would take the tie: A pays B's + 1 µ."""
    bids = [Bid("A", (600_000, 0, 0, 0), 30, 1, placed=2), Bid("B", (600_000, 0, 0, 0), 20, 1, placed=1)]
    (winner,) = clear_market(book_of(bids), {}, PREVIOUS, CRITICAL_VALUE).winners
    assert (winner.bid_id, winner.payment) == ("A", D("0.000021"))
    later = [bids[0], bids[1]._replace(placed=3)]  # now A would take the tie at B's amount
    assert clear_market(book_of(later), {}, PREVIOUS, CRITICAL_VALUE).winners[0].payment == D("0.000020")


def test_what_cannot_be_priced_is_refused_with_the_reason() -> None:
    empty = [Bid("nothing", (0, 0, 0, 0), 5, 1000, 0)]
    with pytest.raises(ValueError, match="bid nothing asks for no resource"):
        book_of(empty)
    twice = [Bid("same", (1, 0, 0, 0), 5, 1000, 0), Bid("same", (0, 1, 0, 0), 6, 1000, 1)]
    with pytest.raises(ValueError, match="bid id same appears more than once"):
        book_of(twice)
    book = book_of([Bid("a", (1, 0, 0, 0), 5, 1000, 0)])
    with pytest.raises(ValueError, match="previous price of memory must not be negative"):
        clear_market(book, {}, {**PREVIOUS, Resource.MEMORY: D("-0.1")})
    with pytest.raises(ValueError, match="price floor must not be negative"):
        clear_market(book, {}, PREVIOUS, floor=D("-1"))
