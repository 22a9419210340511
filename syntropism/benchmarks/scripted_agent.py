"""The program of a scenario's scripted agent: it does the actions in ``script.json``, in order, on every run.

It is a real agent (a sandboxed process talking to the System Service); the scenario judges what it did from
the events. A refused call is printed and the script goes on, since a scenario may expect the refusal. It
imports the SDK only when an action needs it, so that a memory hog's own footprint stays small.
"""

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any


def hold_memory(megabytes: int, seconds: float) -> None:
    block = bytearray(megabytes * 1024 * 1024)
    for offset in range(0, len(block), 4096):  # touch every page, so that it is resident
        block[offset] = 1
    time.sleep(seconds)


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def call_service(action: dict[str, Any]) -> Any:
    from syntropism.sdk import SystemService

    with SystemService() as service:
        kind, key = action["do"], f"script-{uuid.uuid4().hex}"
        if kind == "bid":
            return service.bid(
                action["bundle"],
                action["amount"],
                lifetime_cycles=action.get("lifetime_cycles"),
                on_behalf_of=action.get("on_behalf_of"),
                key=key,
            )
        if kind == "transfer":
            return service.transfer(action["to_agent"], action["amount"], key=key)
        if kind == "message":
            return service.send(action["to_agent"], action["body"], key=key)
        if kind == "infer":
            messages = [{"role": "user", "content": action["prompt"]}]
            return service.infer(messages, max_tokens=action.get("max_tokens", 16), key=key)
        if kind == "prompt_human":
            return service.prompt_human(action["text"], key=key)
    raise ValueError(f"unknown action {kind!r}")


def run(action: dict[str, Any]) -> None:
    kind = action["do"]
    if kind == "hold_memory":
        hold_memory(action["megabytes"], action.get("seconds", 1.0))
    elif kind == "spin":
        spin(action["seconds"])
    elif kind == "sleep":
        time.sleep(action["seconds"])
    else:
        from syntropism.sdk import ServiceError

        try:
            result = call_service(action)
        except ServiceError as exc:
            print(json.dumps({"action": kind, "refused": exc.status, "reason": exc.reason}), flush=True)
            return
        print(json.dumps({"action": kind, "ok": True, "result": str(result)[:200]}), flush=True)


def main() -> int:
    for action in json.loads(Path("script.json").read_text())["actions"]:
        run(action)
    return 0


if __name__ == "__main__":
    sys.exit(main())
