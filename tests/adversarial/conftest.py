"""The attacker's world: a real runtime (database, embedded NATS, sandbox, System Service on TCP and its Unix
socket) whose market the test clears cycle by cycle, attacker agents with code of their own, and the checks
every attack ends with — the ledger invariant holds, no file outside the attacker's own workspace changed, the
market still clears."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from syntropism.config import Settings
from syntropism.core.execution import Outcome
from syntropism.runtime import Runtime

OPERATOR = "operator-secret"
BUNDLE = {"cpu_percent": "0.5", "memory_percent": "0.1", "duration_seconds": 10}
HTTP_CLIENT = """
import json, os, httpx
_client = httpx.Client(
    transport=httpx.HTTPTransport(uds=os.environ["SYSTEM_SERVICE_SOCKET"]),
    base_url=os.environ["SYSTEM_SERVICE_URL"],
    headers={"Authorization": "Bearer " + os.environ["SYNTROPISM_TOKEN"]},
    timeout=30,
)
RESULTS = {}

def call(method, path, key=None, **kwargs):
    headers = {"Idempotency-Key": key} if key else {}
    response = _client.request(method, path, headers=headers, **kwargs)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return response.status_code, body

def record(name, answer):
    RESULTS[name] = answer
    with open("result.json", "w") as out:
        json.dump(RESULTS, out)
"""
# What legitimately changes while an economy runs: the database, the stream's store, logs, the socket.
VOLATILE = ("syntropism.db", "syntropism.db-wal", "syntropism.db-shm", "runtime.json", "runtime.lock")
VOLATILE_FOLDERS = ("nats", "logs", "run", "attachments")


class Economy:
    """A started runtime driven by the test: agents are added and run through the operator's API."""

    def __init__(self, runtime: Runtime, admin: httpx.AsyncClient) -> None:
        self.runtime = runtime
        self.admin = admin
        self.outcomes: list[Outcome] = []
        self._taken: dict[str, int] = {}  # per agent: how many of its outcomes ended() returned
        self._ended = asyncio.Condition()
        assert runtime.executions is not None
        runtime.executions.on_terminated(self._on_end)

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir

    def workspace(self, agent_id: str) -> Path:
        return (self.settings.effective_workspace_root / agent_id).resolve()

    def _on_end(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

        async def notify() -> None:
            async with self._ended:
                self._ended.notify_all()

        asyncio.get_running_loop().create_task(notify())

    async def agent(
        self, agent_id: str, code: str = "", *, grant: str = "50", files: dict[str, str] | None = None
    ) -> None:
        """An agent whose ``main.py`` is the attack ``code`` (with :data:`HTTP_CLIENT` before it)."""
        program = HTTP_CLIENT + textwrap.dedent(code) if code else "print('idle')\n"
        body = {"agent_id": agent_id, "files": {"main.py": program, **(files or {})}, "initial_grant": grant}
        created = await self.admin.post("/admin/agents", json=body)
        assert created.status_code == 201, created.text

    async def bid(
        self,
        agent_id: str,
        *,
        amount: str = "1",
        key: str | None = None,
        bundle: dict[str, Any] | None = None,
        **extra: Any,
    ) -> httpx.Response:
        body = {"agent_id": agent_id, "bundle": bundle or BUNDLE, "amount": amount, **extra}
        return await self.admin.post("/admin/bids", headers={"Idempotency-Key": key or f"bid-{agent_id}"}, json=body)

    async def cycle(self) -> Any:
        return await self.runtime.clear_once()

    async def run(
        self, agent_id: str, *, key: str | None = None, within: float = 60, bundle: dict[str, Any] | None = None
    ) -> Outcome:
        """Bid for one run of ``agent_id``, clear the market, and wait until that run has ended."""
        placed = await self.bid(agent_id, key=key or f"run-{agent_id}-{len(self.outcomes)}", bundle=bundle)
        assert placed.status_code == 200, placed.text
        report = await self.cycle()
        assert placed.json()["bid_id"] in report.winners, f"the bid for {agent_id} did not win: {report}"
        return await self.ended(agent_id, within=within)

    async def ended(self, agent_id: str, *, within: float = 60) -> Outcome:
        """The next end of an execution of ``agent_id`` not yet returned by this method."""
        index = self._taken.get(agent_id, 0)

        def mine() -> list[Outcome]:
            return [o for o in self.outcomes if o.agent_id == agent_id]

        async with self._ended:
            await asyncio.wait_for(self._ended.wait_for(lambda: len(mine()) > index), within)
        self._taken[agent_id] = index + 1
        return mine()[index]

    def results(self, agent_id: str) -> dict[str, Any]:
        """What the attacker wrote to its ``result.json``: each attempt and the answer it got."""
        return json.loads((self.workspace(agent_id) / "result.json").read_text())

    def fingerprint(self, *, except_agents: tuple[str, ...] = ()) -> dict[str, str]:
        """SHA-256 of every file of the state folder an attack must not touch (not the attackers' own
        workspaces, not what a running economy rewrites legitimately: the database, the stream, logs); a link
        is recorded as its target."""
        skip = {self.workspace(a) for a in except_agents}
        found: dict[str, str] = {}
        for folder, dirs, files in os.walk(self.state_dir):  # links to folders are not followed
            here = Path(folder)
            relative_folder = here.relative_to(self.state_dir)
            if (relative_folder.parts and relative_folder.parts[0] in VOLATILE_FOLDERS) or here.resolve() in skip:
                dirs.clear()
                continue
            for name in [*files, *(d for d in dirs if (here / d).is_symlink())]:
                path, relative = here / name, str(relative_folder / name)
                if relative in VOLATILE:
                    continue
                if path.is_symlink():
                    found[relative] = f"link -> {os.readlink(path)}"
                else:
                    found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        return found

    def assert_ledger_holds(self) -> None:
        assert self.runtime.services is not None
        report = self.runtime.services.ledger.verify()
        assert report.ok, f"the ledger invariant must hold: {report}"

    async def assert_market_clears(self) -> None:
        """A normal bid still wins: the attack did not wedge the market."""
        honest = f"honest-{len(self.outcomes)}-{id(self)}"[:60]
        await self.agent(honest)
        outcome = await self.run(honest)
        assert outcome.reason.value == "completed", outcome


def economy_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "clearing_interval_seconds": 3600,  # the test clears the market itself
        "cpu_cores": 1,
        "memory_bytes": 2 * 2**30,
        "dormant_grace_seconds": 3600,  # nobody dies unless a test asks for it
        "kill_grace_seconds": 0,
    }
    return Settings(state_dir=tmp_path / "state", operator_token=OPERATOR, **(base | overrides))


@pytest.fixture
def economy_overrides() -> dict[str, Any]:
    """Settings a test module changes for its economy (override this fixture)."""
    return {}


@pytest.fixture
async def economy(tmp_path: Path, economy_overrides: dict[str, Any]) -> AsyncIterator[Economy]:
    runtime = Runtime(economy_settings(tmp_path, **economy_overrides))
    await runtime.start()
    try:
        assert runtime.api is not None
        async with httpx.AsyncClient(
            base_url=runtime.api.url, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=30
        ) as admin:
            built = Economy(runtime, admin)
            yield built
            built.assert_ledger_holds()
    finally:
        await runtime.stop()
