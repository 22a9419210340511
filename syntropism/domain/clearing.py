"""Market clearing: a pure function from pending bids to winners, payments and discovered prices.

It refuses (ValueError, saying which bid or price) what it cannot price: a bid that asks for no resource, two
bids with one id, an amount or duration that is not positive, a fraction outside 0–1, a negative or
non-finite price.

``clear_market`` does no I/O and touches no database, so mechanism-design work can call it directly. Bids are
held as columns (:class:`BidBook`): capacity fractions in parts per million and amounts in micro-credits, so
every capacity check is exact integer arithmetic, and a million bids clear in well under a second.

Allocation (DESIGN §3, seeds ``000_…`` task 2): bids are taken by total credit value, highest first (ties:
earlier placement, then bid id); a bid wins only if **every** fraction it asks for still fits in what is
available; otherwise it is not allocated this cycle, and it can never fit later in the same cycle, because
what is available only shrinks. One forward pass therefore decides every bid.

Mechanisms (what a winner pays; both allocate as above):

* ``FIRST_PRICE`` — a winner pays its bid. Simple and revenue-maximal for given bids, but not truthful:
  a bidder gains by shading its bid toward what it expects the others to bid.
* ``CRITICAL_VALUE`` — a winner pays its critical value: the least it could have bid and still won (the bid
  of the first rival that would otherwise take the capacity it needs, one micro-credit more if that rival
  would win the tie), and at least the reserve (the floor price for the capacity-seconds it takes) unless it
  bid less than that. Greedy allocation is monotone, so
  with critical payments bidding one's true value is a dominant strategy for single-minded bidders
  (Lehmann, O'Callaghan and Shoham, 2002). A winner never pays more than it bid; losers pay nothing.

Price discovery (DESIGN §3.6): each winner's payment is split across its resources in proportion to its
capacity-seconds weighted by the previous prices, so its parts add up to the payment exactly; a resource's
new price is its credits over its capacity-seconds won. A resource nobody won decays toward the floor. The
arithmetic is exact (fractions): Σ price × capacity-seconds won = Σ payments, to the last micro-credit.

Prices are total and bounded: the published price (``ClearingResult.prices``) is the exact one rounded
half-even to 10⁻¹² — computed from the fraction itself, never in a decimal context that could overflow — and
held within [``floor``, :data:`MAX_PRICE`]. ``MAX_PRICE`` (10²¹ credits per 100 %-capacity-second) is the
highest price any bid the ledger accepts can discover: the largest amount, ``MAX_AMOUNT_MICROS`` (10¹²
credits), for the least capacity-seconds, one part per million for one millisecond (10⁻⁹). So no valid book
can make a cycle raise, and a price the operator configured absurdly high is brought down to it.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from syntropism.domain.economy import MAX_AMOUNT_MICROS
from syntropism.domain.models import (
    MICROS_PER_CREDIT,
    MS_PER_SECOND,
    Resource,
    ResourceBundle,
    bundle_to_ppm,
    fraction_to_ppm,
    from_micros,
    ppm_to_fraction,
    seconds_to_ms,
    to_micros,
)
from syntropism.domain.models import PPM as PPM  # shared with those who clear or read bids

RESOURCES: tuple[Resource, ...] = tuple(Resource)
CAPACITY_PPM = np.full(len(RESOURCES), PPM, dtype=np.int64)  # every resource's supply is 1.0 (100 %)
PRICE_PLACES = Decimal("1e-12")
PRICE_SCALE = 10**12  # published prices are whole multiples of 10⁻¹²
MAX_PRICE_EXACT = Fraction(MAX_AMOUNT_MICROS, MICROS_PER_CREDIT) / (Fraction(1, PPM) * Fraction(1, MS_PER_SECOND))
MAX_PRICE = Decimal(MAX_PRICE_EXACT.numerator)  # 10²¹: the amount limit over 1 ppm × 1 ms (see the module doc)
assert MAX_PRICE_EXACT.denominator == 1
Mechanism = Literal["first_price", "critical_value"]
FIRST_PRICE: Mechanism = "first_price"
CRITICAL_VALUE: Mechanism = "critical_value"


@dataclass(frozen=True)
class BidView:
    """One pending bid, as a researcher writes it; :meth:`BidBook.from_bids` turns many into columns."""

    bid_id: str
    bundle: ResourceBundle
    amount: Decimal
    placed: int = 0  # placement order (earlier wins ties)


@dataclass(frozen=True)
class BidBook:
    """Pending bids as columns, one row per bid."""

    ids: NDArray[np.str_]
    amounts: NDArray[np.int64]  # micro-credits
    demand: NDArray[np.int64]  # (n, 4) parts per million of cpu, memory, tokens, attention
    duration_ms: NDArray[np.int64]
    placed: NDArray[np.int64]

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.demand.shape != (n, len(RESOURCES)) or not (
            len(self.amounts) == len(self.duration_ms) == len(self.placed) == n
        ):
            raise ValueError("BidBook columns must all have one row per bid")
        if n and ((self.demand < 0).any() or (self.demand > PPM).any()):
            raise ValueError("a bid's fractions must lie within 0–1")
        if n and ((self.amounts <= 0).any() or (self.duration_ms <= 0).any()):
            raise ValueError("a bid's amount and duration must be positive")
        if n and (self.amounts > MAX_AMOUNT_MICROS).any():
            raise ValueError(f"a bid's amount must be at most {MAX_AMOUNT_MICROS} micro-credits")
        empty = np.flatnonzero(~self.demand.any(axis=1))
        if empty.size:
            raise ValueError(f"bid {self.ids[empty[0]]} asks for no resource: every bid needs a fraction above 0")
        ids = self.ids.tolist()
        if len(set(ids)) != n:
            twice = next(bid_id for bid_id, count in Counter(ids).items() if count > 1)
            raise ValueError(f"bid id {twice} appears more than once: every bid needs its own id")

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_bids(cls, bids: Iterable[BidView]) -> BidBook:
        bids = list(bids)
        return cls(
            ids=np.array([b.bid_id for b in bids], dtype=np.str_),
            amounts=np.array([to_micros(b.amount) for b in bids], dtype=np.int64),
            demand=np.array([list(bundle_to_ppm(b.bundle).values()) for b in bids], dtype=np.int64).reshape(
                len(bids), len(RESOURCES)
            ),
            duration_ms=np.array([seconds_to_ms(b.bundle.duration_seconds) for b in bids], dtype=np.int64),
            placed=np.array([b.placed for b in bids], dtype=np.int64),
        )


@dataclass(frozen=True)
class Winner:
    bid_id: str
    amount: Decimal  # what it bid
    payment: Decimal  # what it pays (and burns)
    index: int  # row in the BidBook


@dataclass(frozen=True)
class ClearingResult:
    mechanism: Mechanism
    winners: list[Winner]  # in allocation order
    loser_rows: NDArray[np.int64]  # rows in the BidBook, in the order they were considered
    loser_blocked_by: NDArray[np.int8]  # per loser: the first resource that lacked capacity at its turn
    loser_available_ppm: NDArray[np.int64]  # per loser: what that resource had left at its turn
    utilization: dict[Resource, Decimal]  # after the cycle: in use before + won now
    prices: dict[Resource, Decimal]  # discovered prices, credits per 100 %-capacity-second
    exact_prices: dict[Resource, Fraction]
    volume: dict[Resource, Fraction]  # capacity-seconds won this cycle
    previous_prices: dict[Resource, Decimal] = field(default_factory=dict)

    @property
    def burned(self) -> Decimal:
        return sum((w.payment for w in self.winners), Decimal(0))

    def loser_reasons(self, book: BidBook) -> Iterable[tuple[str, str]]:
        """(bid id, why it was not allocated), for each loser, in the order they were considered."""
        asked = book.demand[self.loser_rows, self.loser_blocked_by.astype(np.intp)].tolist()
        for bid_id, resource, asks, available in zip(
            book.ids[self.loser_rows].tolist(),
            self.loser_blocked_by.tolist(),
            asked,
            self.loser_available_ppm.tolist(),
            strict=True,
        ):
            name = RESOURCES[resource].value
            yield bid_id, f"does not fit: {name} {_fraction_text(asks)} asked, {_fraction_text(available)} available"


@functools.lru_cache(maxsize=4096)
def _fraction_text(ppm: int) -> str:
    return str(ppm_to_fraction(ppm))


def _shares_in_ppm(values: Mapping[Resource, Decimal]) -> NDArray[np.int64]:
    """Per resource (in :data:`RESOURCES` order) its share in parts per million; a missing one is 0."""
    return np.array([fraction_to_ppm(Decimal(values.get(r, 0))) for r in RESOURCES], dtype=np.int64)


@dataclass(frozen=True)
class _Ordered:
    """The book's columns in allocation order, as the critical-value search reads them."""

    demand: NDArray[np.int64]
    amounts: NDArray[np.int64]
    placed: NDArray[np.int64]
    ids: NDArray[np.str_]

    def tie_rank(self, position: int) -> tuple[int, str]:
        """What decides between equal amounts: earlier placement, then the lower id."""
        return int(self.placed[position]), str(self.ids[position])


def allocation_order(book: BidBook) -> NDArray[np.intp]:
    """Rows by total credit value, highest first; ties by placement, then bid id (input order never matters)."""
    return np.lexsort((book.ids, book.placed, -book.amounts))


def _next_fit(
    demand: NDArray[np.int64],
    position: int,
    remaining: NDArray[np.int64],
    losers: tuple[NDArray[np.int8], NDArray[np.int64]] | None = None,
) -> int | None:
    """The first position from ``position`` on whose every fraction fits in ``remaining``; optionally records,
    for each bid skipped, the resource that blocked it and what that resource had left. Scans in growing
    chunks, so a long run of losers costs a few vectorised comparisons."""
    n, chunk = len(demand), 64
    while position < n:
        end = min(position + chunk, n)
        over = demand[position:end] > remaining
        hits = np.flatnonzero(~over.any(axis=1))
        stop = int(hits[0]) if hits.size else end - position
        if losers is not None and stop:
            first_over = over[:stop].argmax(axis=1)
            losers[0][position : position + stop] = first_over
            losers[1][position : position + stop] = remaining[first_over]
        if hits.size:
            return position + stop
        position, chunk = end, min(chunk * 4, 1 << 16)
    return None


def _greedy(
    demand: NDArray[np.int64], remaining: NDArray[np.int64]
) -> tuple[list[int], NDArray[np.int8], NDArray[np.int64], NDArray[np.int64]]:
    """One forward pass over ``demand`` (in allocation order): the winners' positions, per bid the resource
    that blocked it and what that resource had left, and the capacity remaining at the end."""
    blocked = np.full(len(demand), -1, dtype=np.int8)
    available = np.zeros(len(demand), dtype=np.int64)
    remaining = remaining.copy()
    winners: list[int] = []
    start = 0
    while (position := _next_fit(demand, start, remaining, (blocked, available))) is not None:
        winners.append(position)
        remaining -= demand[position]
        start = position + 1
    return winners, blocked, available, remaining


def _critical_payment(book: _Ordered, winner: int, remaining_at_turn: NDArray[np.int64], reserve: int) -> int:
    """The least ``winner`` (a position in allocation order) could have bid and still won, at least ``reserve``.

    Bidding less moves it back in the order past rivals that, allocated in its absence, leave it less and less;
    it wins as long as it stays ahead of the first rival that leaves too little. At that rival's amount it stays
    ahead only if it would win the tie (earlier placement, then lower id); otherwise it needs one micro-credit
    more. Greedy allocation is monotone, so that threshold is exactly the least winning bid."""
    demand, amounts = book.demand, book.amounts
    needs, remaining = demand[winner], remaining_at_turn.copy()
    start = winner + 1
    while (position := _next_fit(demand, start, remaining)) is not None:
        remaining -= demand[position]
        if (needs > remaining).any():
            rival_wins_tie = book.tie_rank(position) < book.tie_rank(winner)
            threshold = int(amounts[position]) + (1 if rival_wins_tie else 0)
            return min(int(amounts[winner]), max(reserve, threshold))
        start = position + 1
    return min(reserve, int(amounts[winner]))


def _reserve_micros(row_demand: NDArray[np.int64], duration_ms: int, floor: Fraction) -> int:
    capacity_seconds = Fraction(int(row_demand.sum()), PPM) * Fraction(duration_ms, MS_PER_SECOND)
    return max(1, int(capacity_seconds * floor * MICROS_PER_CREDIT))


def _bounded(price: Decimal, what: str) -> Decimal:
    """A given price (or floor) held within [0, MAX_PRICE]; compared as a Decimal, so that even ``9e999999``
    costs nothing to bring down. A negative one is refused: no price the market discovers is below zero."""
    price = Decimal(price)
    if not price.is_finite():
        raise ValueError(f"{what} must be a finite number, got {price}")
    if price < 0:
        raise ValueError(f"{what} must not be negative, got {price}")
    return min(price, MAX_PRICE)


def published_price(exact: Fraction, floor: Decimal) -> Decimal:
    """``exact`` held within [floor, MAX_PRICE] and rounded half-even to 10⁻¹², exactly (no decimal context,
    so nothing to overflow); ``floor`` itself where rounding would take it below (a floor finer than 10⁻¹²)."""
    bounded = min(max(exact, Fraction(floor)), MAX_PRICE_EXACT)
    price = Decimal(f"{round(bounded * PRICE_SCALE)}e-12")
    return price if price >= floor else floor


def discover_prices(
    book: BidBook,
    winners: Sequence[Winner],
    previous_prices: Mapping[Resource, Decimal],
    *,
    decay: Decimal,
    floor: Decimal,
) -> tuple[dict[Resource, Fraction], dict[Resource, Fraction]]:
    """New exact prices per resource, and the capacity-seconds won (DESIGN §3.6)."""
    credits = dict.fromkeys(RESOURCES, Fraction(0))
    volume = dict.fromkeys(RESOURCES, Fraction(0))
    previous = {r: Fraction(_bounded(previous_prices[r], f"previous price of {r.value}")) for r in RESOURCES}
    lowest = Fraction(_bounded(floor, "price floor"))
    for winner in winners:
        seconds = Fraction(int(book.duration_ms[winner.index]), MS_PER_SECOND)
        capacity_seconds = {
            r: Fraction(int(book.demand[winner.index, i]), PPM) * seconds for i, r in enumerate(RESOURCES)
        }
        weights = {r: capacity_seconds[r] * previous[r] for r in RESOURCES}
        total = sum(weights.values(), Fraction(0))
        if total == 0:  # every resource it took was priced at zero: split by capacity-seconds alone
            weights, total = capacity_seconds, sum(capacity_seconds.values(), Fraction(0))
        payment = Fraction(winner.payment)
        for r in RESOURCES:
            if capacity_seconds[r]:
                credits[r] += payment * weights[r] / total
                volume[r] += capacity_seconds[r]
    prices = {}
    for r in RESOURCES:
        if volume[r]:
            prices[r] = credits[r] / volume[r]
        else:
            prices[r] = max(lowest, previous[r] * Fraction(decay))
    return prices, volume


def clear_market(
    bids: BidBook,
    capacity_in_use: Mapping[Resource, Decimal],
    previous_prices: Mapping[Resource, Decimal],
    mechanism: Mechanism = FIRST_PRICE,
    *,
    decay: Decimal = Decimal("0.5"),
    floor: Decimal = Decimal("0.001"),
) -> ClearingResult:
    """Clear one cycle: who wins, what each pays, and the prices that emerge. Pure: no I/O, no database."""
    if mechanism not in (FIRST_PRICE, CRITICAL_VALUE):
        raise ValueError(f"unknown mechanism {mechanism!r}; use {FIRST_PRICE!r} or {CRITICAL_VALUE!r}")
    in_use = _shares_in_ppm(capacity_in_use)
    if (in_use < 0).any() or (in_use > CAPACITY_PPM).any():
        raise ValueError("capacity in use must lie within 0–1 for every resource")
    missing = [r.value for r in RESOURCES if r not in previous_prices]
    if missing:
        raise ValueError(f"previous prices missing for {', '.join(missing)}")
    for r in RESOURCES:
        _bounded(previous_prices[r], f"previous price of {r.value}")
    lowest = _bounded(floor, "price floor")
    reserve_price = Fraction(lowest)

    order = allocation_order(bids)
    demand = bids.demand[order]
    amounts = bids.amounts[order]
    start = CAPACITY_PPM - in_use
    positions, blocked, available, remaining = _greedy(demand, start)
    ordered = _Ordered(demand, amounts, bids.placed[order], bids.ids[order]) if mechanism == CRITICAL_VALUE else None

    winners = []
    taken = np.zeros_like(start)
    for position in positions:
        row = int(order[position])
        payment = int(amounts[position])
        if ordered is not None:
            reserve = _reserve_micros(demand[position], int(bids.duration_ms[row]), reserve_price)
            payment = _critical_payment(ordered, position, start - taken, reserve)
        taken += demand[position]
        winners.append(Winner(str(bids.ids[row]), from_micros(int(amounts[position])), from_micros(payment), row))

    lost = np.ones(len(order), dtype=bool)
    lost[positions] = False
    exact, volume = discover_prices(bids, winners, previous_prices, decay=decay, floor=floor)
    used = CAPACITY_PPM - remaining
    return ClearingResult(
        mechanism=mechanism,
        winners=winners,
        loser_rows=order[lost].astype(np.int64),
        loser_blocked_by=blocked[lost],
        loser_available_ppm=available[lost],
        utilization={r: ppm_to_fraction(int(used[i])) for i, r in enumerate(RESOURCES)},
        prices={r: published_price(p, lowest) for r, p in exact.items()},
        exact_prices=exact,
        volume=volume,
        previous_prices=dict(previous_prices),
    )
