"""The clearing function: the seeds' auction rules, DESIGN §3's worked example, and its properties."""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syntropism.domain import economy as E
from syntropism.domain.clearing import (
    CRITICAL_VALUE,
    FIRST_PRICE,
    MAX_PRICE,
    PPM,
    RESOURCES,
    BidBook,
    BidView,
    allocation_order,
    clear_market,
    published_price,
)
from syntropism.domain.models import Resource, ResourceBundle, from_micros

D = Decimal
PREVIOUS = {Resource.CPU: D(1), Resource.MEMORY: D("0.5"), Resource.TOKENS: D(1), Resource.ATTENTION: D(1)}


def bid(bid_id: str, amount: str | int, placed: int = 0, duration: int = 10, **fractions: str) -> BidView:
    bundle = ResourceBundle(duration_seconds=duration, **{f"{k}_percent": D(v) for k, v in fractions.items()})
    return BidView(bid_id, bundle, D(amount), placed)


def clear(bids: list[BidView], in_use: dict[Resource, Decimal] | None = None, mechanism=FIRST_PRICE):  # type: ignore[no-untyped-def]
    return clear_market(BidBook.from_bids(bids), in_use or {}, PREVIOUS, mechanism)


def test_design_worked_example() -> None:
    """DESIGN §3: A and C win, B does not fit; cpu 3.788, memory 1.667, idle resources halve; 55 burned."""
    bids = [
        bid("A", 30, 1, cpu="0.5", memory="0.2"),
        bid("B", 20, 2, cpu="0.6", memory="0.1"),
        bid("C", 25, 3, duration=20, cpu="0.3", memory="0.3"),
    ]
    result = clear(bids)
    assert [w.bid_id for w in result.winners] == ["A", "C"]
    assert result.exact_prices[Resource.CPU] == Fraction(25 + Fraction(50, 3), 11)  # (25 + 16.667) / 11
    assert result.prices[Resource.CPU].quantize(D("0.001")) == D("3.788")
    assert result.prices[Resource.MEMORY].quantize(D("0.001")) == D("1.667")
    assert result.prices[Resource.TOKENS] == result.prices[Resource.ATTENTION] == D("0.5")
    assert result.burned == 55
    assert result.utilization[Resource.CPU] == D("0.8") and result.utilization[Resource.MEMORY] == D("0.5")
    book = BidBook.from_bids(bids)
    assert list(result.loser_reasons(book)) == [("B", "does not fit: cpu 0.6 asked, 0.2 available")]


def test_bids_are_taken_by_total_value_then_placement() -> None:
    bids = [bid("small", 5, 0, cpu="0.1"), bid("big", 50, 3, cpu="0.1"), bid("mid-late", 20, 2, cpu="0.1")]
    bids.append(bid("mid-early", 20, 1, cpu="0.1"))
    book = BidBook.from_bids(bids)
    assert [str(book.ids[i]) for i in allocation_order(book)] == ["big", "mid-early", "mid-late", "small"]


def test_all_or_nothing_a_bundle_needs_every_fraction() -> None:
    result = clear([bid("greedy", 100, cpu="0.9", attention="0.9"), bid("focused", 10, attention="0.2")])
    # greedy wins first; focused's attention no longer fits even though cpu would
    assert [w.bid_id for w in result.winners] == ["greedy"]
    result = clear([bid("too-big", 100, cpu="0.5", memory="0.7")], in_use={Resource.MEMORY: D("0.4")})
    assert result.winners == [] and result.utilization[Resource.MEMORY] == D("0.4")


def test_capacity_in_use_is_respected_and_a_smaller_bid_can_still_fit_after_a_bigger_fails() -> None:
    result = clear([bid("wide", 90, cpu="0.6"), bid("narrow", 10, cpu="0.3")], in_use={Resource.CPU: D("0.5")})
    assert [w.bid_id for w in result.winners] == ["narrow"]
    assert result.utilization[Resource.CPU] == D("0.8")


def test_idle_prices_decay_to_the_floor() -> None:
    prices = dict(PREVIOUS)
    for _ in range(20):
        prices = clear_market(BidBook.from_bids([]), {}, prices).prices
    assert all(price == D("0.001") for price in prices.values())


def test_critical_value_payments() -> None:
    bids = [
        bid("A", 30, 1, cpu="0.5", memory="0.2"),
        bid("B", 20, 2, cpu="0.6", memory="0.1"),
        bid("C", 25, 3, duration=20, cpu="0.3", memory="0.3"),
    ]
    result = clear(bids, mechanism=CRITICAL_VALUE)
    payments = {w.bid_id: w.payment for w in result.winners}
    assert payments["A"] == 20  # it had to beat B, which would otherwise take the cpu
    assert payments["C"] == D("0.012")  # nobody could displace it: the reserve, floor × 12 capacity-seconds
    # Truthfulness at the threshold: A bidding just above its payment still wins, just below it loses.
    assert "A" in {w.bid_id for w in clear([bid("A", "20.000001", 1, cpu="0.5", memory="0.2"), *bids[1:]]).winners}
    assert "A" not in {w.bid_id for w in clear([bid("A", "19.999999", 1, cpu="0.5", memory="0.2"), *bids[1:]]).winners}


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="mechanism"):
        clear([], mechanism="vickrey")
    with pytest.raises(ValueError, match="capacity in use"):
        clear([], in_use={Resource.CPU: D("1.5")})
    with pytest.raises(ValueError, match="previous prices missing for attention"):
        clear_market(BidBook.from_bids([]), {}, {r: D(1) for r in RESOURCES[:3]})


# --- properties ---------------------------------------------------------------------------------------------

fractions = st.sampled_from([0, 0, 50_000, 100_000, 250_000, 333_333, 500_000, 700_000, 1_000_000])
bid_rows = st.lists(
    st.tuples(
        st.lists(fractions, min_size=4, max_size=4).filter(any),
        st.integers(1, 5_000_000),  # amount, micro-credits (many ties)
        st.integers(100, 60_000),  # duration, ms
        st.integers(0, 5),  # placement (many equal times)
    ),
    max_size=60,
)
in_use_st = st.lists(st.sampled_from([0, 100_000, 500_000, 900_000]), min_size=4, max_size=4)


def make_book(rows: list[tuple[list[int], int, int, int]]) -> BidBook:
    return BidBook(
        ids=np.array([f"b{i:03d}" for i in range(len(rows))], dtype=np.str_),
        amounts=np.array([r[1] for r in rows], dtype=np.int64),
        demand=np.array([r[0] for r in rows], dtype=np.int64).reshape(len(rows), 4),
        duration_ms=np.array([r[2] for r in rows], dtype=np.int64),
        placed=np.array([r[3] for r in rows], dtype=np.int64),
    )


def in_use_map(values: list[int]) -> dict[Resource, Decimal]:
    return {r: D(v) / PPM for r, v in zip(RESOURCES, values, strict=True)}


@settings(max_examples=300, derandomize=True, deadline=None)
@given(rows=bid_rows, in_use=in_use_st, mechanism=st.sampled_from([FIRST_PRICE, CRITICAL_VALUE]))
def test_clearing_properties(rows, in_use, mechanism) -> None:  # type: ignore[no-untyped-def]
    book = make_book(rows)
    result = clear_market(book, in_use_map(in_use), PREVIOUS, mechanism)
    winners = [w.index for w in result.winners]

    # Capacity is never exceeded on any resource.
    used = np.array(in_use, dtype=np.int64) + book.demand[winners].sum(axis=0)
    assert (used <= PPM).all()
    assert [result.utilization[r] for r in RESOURCES] == [D(int(u)) / PPM for u in used]

    # No winner is lower-valued than a loser that would have fitted at its turn: replay the order.
    remaining = PPM - np.array(in_use, dtype=np.int64)
    won = set(winners)
    for row in allocation_order(book):
        fits = bool((book.demand[row] <= remaining).all())
        assert fits == (row in won), "a bid that fitted at its turn must win, and only those"
        if fits:
            remaining = remaining - book.demand[row]

    # Discovered price × capacity-seconds won sums to the credits paid, exactly.
    paid = sum((Fraction(w.payment) for w in result.winners), Fraction(0))
    assert sum(result.exact_prices[r] * result.volume[r] for r in RESOURCES) == paid

    # Payments: first price pays the bid; critical value never more than the bid, never less than a micro-credit.
    for w in result.winners:
        assert w.payment == w.amount if mechanism == FIRST_PRICE else D("0.000001") <= w.payment <= w.amount


@settings(max_examples=100, derandomize=True, deadline=None)
@given(rows=bid_rows, seed=st.integers(0, 2**32 - 1))
def test_result_does_not_depend_on_input_order(rows, seed) -> None:  # type: ignore[no-untyped-def]
    book = make_book(rows)
    permutation = list(range(len(rows)))
    random.Random(seed).shuffle(permutation)
    shuffled = BidBook(
        ids=book.ids[permutation],
        amounts=book.amounts[permutation],
        demand=book.demand[permutation],
        duration_ms=book.duration_ms[permutation],
        placed=book.placed[permutation],
    )
    for mechanism in (FIRST_PRICE, CRITICAL_VALUE):
        first = clear_market(book, {}, PREVIOUS, mechanism)
        second = clear_market(shuffled, {}, PREVIOUS, mechanism)
        assert [(w.bid_id, w.payment) for w in first.winners] == [(w.bid_id, w.payment) for w in second.winners]
        assert first.exact_prices == second.exact_prices


# --- extreme books: the clearing is total and its prices bounded ------------------------------------------------

EXTREME_AMOUNTS = st.one_of(
    st.sampled_from([1, 2, 999_999, E.MAX_AMOUNT_MICROS, E.MAX_AMOUNT_MICROS - 1]), st.integers(1, E.MAX_AMOUNT_MICROS)
)
EXTREME_FRACTIONS = st.one_of(st.sampled_from([0, 0, 1, 1, 2, PPM - 1, PPM]), st.integers(0, PPM))
EXTREME_DURATIONS = st.one_of(st.sampled_from([1, 1, 2, 3_600_000]), st.integers(1, 3_600_000))  # 1 ms to the hour
EXTREME_PRICES = st.sampled_from(
    [D(0), D("1e-12"), D("0.001"), D(1), D("123456789.123456789012"), D(10**16), MAX_PRICE, D("9e999999")]
)
extreme_rows = st.lists(
    st.tuples(
        st.lists(EXTREME_FRACTIONS, min_size=4, max_size=4).filter(any),
        EXTREME_AMOUNTS,
        EXTREME_DURATIONS,
        st.integers(0, 3),
    ),
    max_size=12,
)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(
    cycles=st.lists(extreme_rows, min_size=1, max_size=3),
    previous=st.lists(EXTREME_PRICES, min_size=4, max_size=4),
    in_use=st.lists(st.sampled_from([0, 1, PPM - 1, PPM]), min_size=4, max_size=4),
    mechanism=st.sampled_from([FIRST_PRICE, CRITICAL_VALUE]),
    floor=st.sampled_from([D("0.001"), D("1e-15"), D(1)]),
)
def test_no_valid_book_makes_a_cycle_raise_and_prices_stay_bounded(  # type: ignore[no-untyped-def]
    cycles, previous, in_use, mechanism, floor
) -> None:
    """Any book the ledger accepts — amounts up to MAX_AMOUNT_MICROS, fractions down to 1 ppm, durations down to
    1 ms — clears, cycle after cycle (each starting from the prices the last one discovered), and every price
    is finite and within [floor, MAX_PRICE]. A price of 10¹⁶ or more used to make every cycle raise."""
    prices = dict(zip(RESOURCES, previous, strict=True))
    for rows in cycles:
        book = make_book(rows)
        result = clear_market(book, in_use_map(in_use), prices, mechanism, floor=floor)
        for price in result.prices.values():
            assert price.is_finite() and floor <= price <= MAX_PRICE, price
            assert price == floor or price.as_tuple().exponent == -12  # on the 10⁻¹² grid, or the floor itself
        paid = sum((Fraction(w.payment) for w in result.winners), Fraction(0))
        assert sum(result.exact_prices[r] * result.volume[r] for r in RESOURCES) == paid
        for w in result.winners:
            assert D("0.000001") <= w.payment <= w.amount <= from_micros(E.MAX_AMOUNT_MICROS)
        prices = result.prices


def test_the_most_a_valid_bid_can_discover_is_max_price_and_the_market_goes_on() -> None:
    """The whole amount limit for 1 ppm of cpu for 1 ms: a price of exactly 10²¹, then it decays."""
    book = make_book([([1, 0, 0, 0], E.MAX_AMOUNT_MICROS, 1, 0)])
    result = clear_market(book, {}, PREVIOUS)
    assert result.prices[Resource.CPU] == MAX_PRICE == D(10**21)
    assert result.exact_prices[Resource.CPU] == MAX_PRICE
    nxt = clear_market(BidBook.from_bids([]), {}, result.prices)
    assert nxt.prices[Resource.CPU] == MAX_PRICE / 2
    for mechanism in (FIRST_PRICE, CRITICAL_VALUE):  # the extreme bid again, from the extreme price
        assert clear_market(book, {}, result.prices, mechanism).prices[Resource.CPU] <= MAX_PRICE


def test_absurd_prices_and_floors_are_brought_within_bounds() -> None:
    huge = dict.fromkeys(RESOURCES, D("9e999999"))
    assert set(clear_market(BidBook.from_bids([]), {}, huge).prices.values()) == {MAX_PRICE / 2}
    # A traded price below the floor is published at the floor; exact_prices keep the exact discovery.
    cheap = clear_market(make_book([([PPM, 0, 0, 0], 1, 3_600_000, 0)]), {}, PREVIOUS)
    assert cheap.prices[Resource.CPU] == D("0.001")
    assert cheap.exact_prices[Resource.CPU] == Fraction(1, 3_600_000_000)  # 10⁻⁶ credits over 3600 s
    # A floor finer than the 10⁻¹² grid is itself the lowest price.
    fine = clear_market(BidBook.from_bids([]), {}, dict.fromkeys(RESOURCES, D(0)), floor=D("1e-15"))
    assert set(fine.prices.values()) == {D("1e-15")}
    with pytest.raises(ValueError, match="finite"):
        clear_market(BidBook.from_bids([]), {}, dict.fromkeys(RESOURCES, D("NaN")))
    assert published_price(Fraction(1, 3) * 10**22, D("0.001")) == MAX_PRICE
    assert published_price(Fraction(5, 10**13), D(0)) == D("0E-12")  # half-even: 0.5 × 10⁻¹² rounds to 0
    assert published_price(Fraction(15, 10**13), D(0)) == D("2E-12")
