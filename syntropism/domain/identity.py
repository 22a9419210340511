"""Who is who: the one rule for an agent's id, and the one way idempotency keys are scoped to their caller.

An agent id becomes a folder name (``workspaces/<id>``, ``logs/<id>``), part of ledger account names
(``agent:<id>:available``) and part of idempotency keys, so it must be a *plain name*: letters, digits and
``. _ -``, starting with a letter or digit (so never ``.``, ``..`` or a hidden file), at most 128 characters, no
``/``, ``:``, whitespace or NUL. A few names are reserved for the system's own actors. Every service that turns
an id into a path or a key goes through :func:`check_agent_id`; nothing else decides.

Idempotency keys are scoped by who sent them and for what — ``agent:<id>:<action>:<key>``,
``operator:<action>:<key>``, ``system:<action>:<key>`` — and, since an agent id cannot contain ``:``, no agent's
keys can ever collide with another's, the operator's or the system's.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from syntropism.domain.errors import Reason, Refused

AGENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MAX_AGENT_ID_LENGTH = 128
# The system's own actors and the names its tools go by: an agent by one of these names could pass for them in an
# event stream, a log or a benchmark report.
RESERVED_AGENT_IDS = frozenset(
    {"admin", "operator", "system", "starter", "judge", "mint", "burn", "spawn", "human", "bench", "lab", "relay"}
)
_PLAIN_NAME = re.compile(AGENT_ID_PATTERN)
MAX_SCOPED_KEY_LENGTH = 200  # the idempotency key columns' width


class InvalidAgentId(Refused):
    def __init__(self, detail: str) -> None:
        super().__init__(Reason.INVALID_AGENT_ID, detail)


def check_agent_id(agent_id: Any) -> str:
    """``agent_id`` if it is a plain, unreserved name; else :class:`InvalidAgentId` saying why."""
    if not isinstance(agent_id, str):
        raise InvalidAgentId(f"an agent id is a string, not {type(agent_id).__name__}")
    if not _PLAIN_NAME.fullmatch(agent_id):
        shown = agent_id[:40].encode("unicode_escape").decode()
        raise InvalidAgentId(
            f"agent id {shown!r} is not a plain name: 1–{MAX_AGENT_ID_LENGTH} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if agent_id.lower() in RESERVED_AGENT_IDS:
        raise InvalidAgentId(f"agent id {agent_id!r} is reserved for the system")
    return agent_id


def scoped_key(caller: str, action: str, key: str) -> str:
    """The one way a stored idempotency key is made: ``<caller>:<action>:<key>``, where ``caller`` is
    ``agent:<id>``, ``operator`` or ``system``. Within the key columns' 200 characters; a caller's key too long for
    that is replaced by its SHA-256 (distinct keys stay distinct)."""
    prefix = f"{caller}:{action}:"
    if len(prefix) + len(key) <= MAX_SCOPED_KEY_LENGTH:
        return prefix + key
    return f"{prefix}sha256:{hashlib.sha256(key.encode()).hexdigest()[:40]}"


def agent_key(agent_id: str, action: str, key: str) -> str:
    """An agent's idempotency key for ``action`` (transfer, bid, spawn), in its own namespace."""
    return scoped_key(f"agent:{agent_id}", action, key)


def operator_key(action: str, key: str) -> str:
    """The operator's idempotency key, in a namespace no agent can reach."""
    return scoped_key("operator", action, key)


def system_key(action: str, key: str) -> str:
    """The runtime's own keys (starter grants and bids)."""
    return scoped_key("system", action, key)
