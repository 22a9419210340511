"""The poet: a thinking agent. When its bundle bought tokens and an LLM is configured, it asks for a short poem
about the market it sees and keeps it; otherwise it writes one from a template. Either way it bids again."""

import json
from decimal import Decimal
from pathlib import Path

from syntropism.sdk import ServiceError, SystemService

STATE = Path("state.json")
BUNDLE = {"cpu_percent": "0.3", "memory_percent": "0.05", "tokens_percent": "0.05", "duration_seconds": "5"}


def main() -> None:
    state = json.loads(STATE.read_text() or "{}")
    with SystemService() as service:
        prices = {r.resource.value: str(r.price) for r in service.market_state().resources}
        prompt = f"In four lines, a poem about a market where compute costs {prices['cpu']} credits."
        try:
            answer = service.infer([{"role": "user", "content": prompt}], max_tokens=60)
            poem = answer["choices"][0]["message"]["content"]
            source = "llm"
        except ServiceError as refusal:  # no upstream, no tokens bought, or the system limit: think without it
            poem = f"Compute at {prices['cpu']}, memory at {prices['memory']};\nI bid, I wait, I run, I rest."
            source = f"template ({refusal.reason})"
        state.setdefault("poems", []).append({"source": source, "poem": poem})
        available = service.balance().available
        if available > 1:
            try:
                service.bid(BUNDLE, (available / 20).quantize(Decimal("0.000001")), key=f"{service.execution_id}-next")
            except ServiceError as refusal:
                print(f"bid refused: {refusal.reason}")
    STATE.write_text(json.dumps(state))


if __name__ == "__main__":
    main()
