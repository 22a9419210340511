"""Waiting on a condition with a deadline: what tests do instead of sleeping a guessed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(condition: Callable[[], object], *, within: float = 20.0, what: str = "the condition") -> None:
    """Return as soon as ``condition()`` is true; fail the test, naming ``what``, after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {within} s")
        await asyncio.sleep(0.01)


def wait_until(condition: Callable[[], object], *, within: float = 20.0, what: str = "the condition") -> None:
    """:func:`eventually`, for tests that are not coroutines."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {within} s")
        time.sleep(0.01)
