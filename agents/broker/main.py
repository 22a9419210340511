"""The broker: a cheap watcher that wakes an expensive worker (the thinker) only when CPU is cheap.

Each short run it reads the market; when the CPU price is below its running average it bids, on the thinker's
behalf, for a large bundle and sends it a task. Then it bids for its own next small run. The thinker's id is in
``team.json`` (``{"thinker": "<agent id>"}``).
"""

import json
from decimal import Decimal
from pathlib import Path

from syntropism.sdk import ServiceError, SystemService

STATE = Path("state.json")
OWN_BUNDLE = {"cpu_percent": "0.2", "memory_percent": "0.05", "duration_seconds": "8"}  # thin but long enough to run
THINKER_BUNDLE = {"cpu_percent": "0.5", "memory_percent": "0.1", "duration_seconds": "5"}


def main() -> None:
    state = json.loads(STATE.read_text() or "{}")
    thinker = json.loads(Path("team.json").read_text())["thinker"]
    with SystemService() as service:
        for message in service.inbox():
            state.setdefault("reports", []).append(message.body)
        cpu = next(r.price for r in service.market_state().resources if r.resource.value == "cpu")
        average = Decimal(state.get("cpu_average", str(cpu)))
        state["cpu_average"] = str((average * 3 + cpu) / 4)
        available = service.balance().available
        runs = state.get("runs", 0)
        if cpu <= average and available > 10:
            offer = (available / 5).quantize(Decimal("0.000001"))
            try:
                service.bid(THINKER_BUNDLE, offer, on_behalf_of=thinker, key=f"{service.execution_id}-wake")
                service.send(
                    thinker,
                    json.dumps({"task": "primes", "below": 20_000 + 1000 * runs}),
                    key=f"{service.execution_id}-task",
                )
                state["woken"] = state.get("woken", 0) + 1
            except ServiceError as refusal:
                print(f"could not wake {thinker}: {refusal.reason}")
        try:
            service.bid(
                OWN_BUNDLE,
                (available / 50).quantize(Decimal("0.000001")),
                lifetime_cycles=5,
                key=f"{service.execution_id}-next",
            )
        except ServiceError as refusal:
            print(f"own bid refused: {refusal.reason}")
        state["runs"] = runs + 1
    STATE.write_text(json.dumps(state))


if __name__ == "__main__":
    main()
