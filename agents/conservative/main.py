"""A price-aware, conservative bidder: it values its bundle at the last discovered prices and pays a little
over, never more than a tenth of what it holds; when the market is too dear it bids low and waits longer."""

import json
from decimal import Decimal
from pathlib import Path

from syntropism.sdk import ServiceError, SystemService

STATE = Path("state.json")
BUNDLE = {"cpu_percent": Decimal("0.3"), "memory_percent": Decimal("0.05"), "duration_seconds": Decimal(5)}
MARKUP = Decimal("1.2")
BUDGET_SHARE = Decimal("0.1")


def estimate(prices: dict[str, Decimal]) -> Decimal:
    """What the bundle costs at current prices: Σ price × fraction × seconds."""
    seconds = BUNDLE["duration_seconds"]
    return sum(prices[r] * BUNDLE[f"{r}_percent"] * seconds for r in ("cpu", "memory"))  # type: ignore[return-value]


def main() -> None:
    state = json.loads(STATE.read_text() or "{}")
    with SystemService() as service:
        market = service.market_state()
        prices = {r.resource.value: r.price for r in market.resources}
        available = service.balance().available
        fair = estimate(prices) * MARKUP
        budget = available * BUDGET_SHARE
        # The bid competes with the capacity this run still holds, so even a fair one waits out the run's end.
        amount, lifetime = (fair, 6) if fair <= budget else (budget / 2, 12)  # too dear: bid low, wait longer
        amount = amount.quantize(Decimal("0.000001"))
        if amount > 0:
            try:
                service.bid(
                    {k: str(v) for k, v in BUNDLE.items()},
                    amount,
                    lifetime_cycles=lifetime,
                    key=f"{service.execution_id}-next",
                )
            except ServiceError as refusal:
                print(f"bid refused: {refusal.reason}")
        state["runs"] = state.get("runs", 0) + 1
        state["last_prices"] = {k: str(v) for k, v in prices.items()}
        print(f"run {state['runs']}: fair {fair:.6f}, budget {budget:.6f}, bid {amount}")
    STATE.write_text(json.dumps(state))


if __name__ == "__main__":
    main()
