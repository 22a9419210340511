"""Zero-intelligence bidder (Gode & Sunder): a random bundle at a random price within its means.

Markets of such traders still find prices near equilibrium: the institution, not the trader, does the work.
Seeded by its agent id, run count and the run's SYNTROPISM_SEED (if any), so a run is reproducible.
"""

import json
import os
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
        rng = random.Random(f"{service.agent_id}-{runs}-{os.environ.get('SYNTROPISM_SEED', '')}")
        busy_work(rng)
        available = service.balance().available
        bundle = {
            "cpu_percent": f"{rng.uniform(0.4, 0.6):.2f}",  # a run costs ~0.7 CPU-s: buy about twice that
            "memory_percent": f"{rng.uniform(0.05, 0.1):.2f}",
            "duration_seconds": rng.choice([4, 5, 6]),
        }
        amount = (available * Decimal(f"{rng.uniform(0.02, 0.15):.3f}")).quantize(Decimal("0.000001"))
        if amount > 0:
            try:
                # It waits for this run's capacity to come free, so it must outlive the rest of the run.
                bid = service.bid(bundle, amount, lifetime_cycles=8, key=f"{service.execution_id}-next")
                print(f"run {runs}: bid {amount} for {bundle} ({bid.bid_id})")
            except ServiceError as refusal:
                print(f"run {runs}: bid refused: {refusal.reason}")
    STATE.write_text(json.dumps({"runs": runs + 1}))


if __name__ == "__main__":
    main()
