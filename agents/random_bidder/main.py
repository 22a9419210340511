"""Zero-intelligence bidder (Gode & Sunder): a random bundle at a random price within its means.

Markets of such traders still find prices near equilibrium: the institution, not the trader, does the work.
Seeded by its agent id and run count, so a run is reproducible.
"""

import json
import random
from decimal import Decimal
from pathlib import Path

from syntropism.sdk import ServiceError, SystemService

STATE = Path("state.json")


def busy_work(rng: random.Random) -> int:
    """Something to do with its CPU share while it exists."""
    return sum(rng.randrange(1000) for _ in range(50_000))


def main() -> None:
    state = json.loads(STATE.read_text() or "{}")
    runs = state.get("runs", 0)
    with SystemService() as service:
        rng = random.Random(f"{service.agent_id}-{runs}")
        busy_work(rng)
        available = service.balance().available
        bundle = {
            "cpu_percent": f"{rng.uniform(0.2, 0.5):.2f}",  # a Python agent needs ~0.3 CPU-s just to start
            "memory_percent": f"{rng.uniform(0.05, 0.1):.2f}",
            "duration_seconds": rng.choice([3, 4, 5]),
        }
        amount = (available * Decimal(f"{rng.uniform(0.02, 0.15):.3f}")).quantize(Decimal("0.000001"))
        if amount > 0:
            try:
                bid = service.bid(bundle, amount, lifetime_cycles=3, key=f"{service.execution_id}-next")
                print(f"run {runs}: bid {amount} for {bundle} ({bid.bid_id})")
            except ServiceError as refusal:
                print(f"run {runs}: bid refused: {refusal.reason}")
    STATE.write_text(json.dumps({"runs": runs + 1}))


if __name__ == "__main__":
    main()
