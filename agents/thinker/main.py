"""The thinker: the expensive worker. It does not bid for itself; its broker wakes it when compute is cheap.
It works through the tasks in its inbox and reports each result back by message."""

import json
from pathlib import Path

from syntropism.sdk import SystemService

STATE = Path("state.json")


def primes_below(n: int) -> int:
    sieve = bytearray([1]) * n
    sieve[:2] = b"\0\0"
    for i in range(2, int(n**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, n, i)))
    return sum(sieve)


def main() -> None:
    state = json.loads(STATE.read_text() or "{}")
    with SystemService() as service:
        for message in service.inbox():
            task = json.loads(message.body)
            result = primes_below(int(task["below"]))
            state.setdefault("results", []).append(result)
            service.send(message.from_agent, f"{result} primes below {task['below']}", key=f"{message.message_id}-done")
    STATE.write_text(json.dumps(state))


if __name__ == "__main__":
    main()
