"""The one shape of a refusal, shared by every service: the API answers each with its reason's status."""

from __future__ import annotations


class Refused(ValueError):
    """A request the economy's rules refuse. ``reason`` is a stable code (``insufficient_funds``,
    ``already_scored``, …) that the API maps to a status; ``detail`` says why, in words."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
