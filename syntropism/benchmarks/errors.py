"""How a scenario's run says it could not go on."""

from __future__ import annotations


class StepFailed(RuntimeError):
    """A step could not be carried out (a timeout, a refused set-up); the message says which and why."""
