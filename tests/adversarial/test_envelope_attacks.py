"""Reaching past the envelope: CPU that was never bought, a log or a workspace that fills the host's disk, a first
call made before the runtime could record the token."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from syntropism.infra.tables import Execution
from tests.adversarial.conftest import Economy

MiB = 2**20


@pytest.fixture
def economy_overrides() -> dict[str, Any]:
    return {"max_file_bytes": MiB, "workspace_max_bytes": 4 * MiB, "workspace_max_entries": 500}


async def test_a_bundle_without_cpu_gets_no_cpu(economy: Economy) -> None:
    await economy.agent("freeloader", "x = 0\nwhile True:\n    x += 1\n")
    outcome = await economy.run("freeloader", bundle={"memory_percent": "0.1", "duration_seconds": 10})
    assert outcome.reason.value == "cpu_exceeded", outcome
    assert outcome.wall_seconds < 5, "killed on its first CPU-seconds, not at the end of its wall clock"


LOG_FLOOD = """
import sys
chunk = "y" * 65536 + "\\n"
for _ in range(64):  # 4 MiB to stdout, the log
    sys.stdout.write(chunk)
"""


async def test_the_log_stops_at_the_file_size_limit(economy: Economy) -> None:
    await economy.agent("chatterbox", LOG_FLOOD)
    outcome = await economy.run("chatterbox")
    logs = list((economy.settings.logs_dir / "chatterbox").glob("*.log"))
    assert len(logs) == 1 and logs[0].stat().st_size <= MiB, [p.stat().st_size for p in logs]
    assert outcome.reason.value in ("completed", "disk_exceeded") and (outcome.exit_code or outcome.signal), outcome


SHELL_LOG_FLOOD = "#!/bin/sh\nyes flood\n"


async def test_a_shell_agent_writing_past_the_file_limit_is_killed_as_disk_exceeded(economy: Economy) -> None:
    created = await economy.admin.post(
        "/admin/agents",
        json={
            "agent_id": "yes-man",
            "files": {"main.sh": SHELL_LOG_FLOOD},
            "entry_point": "main.sh",
            "initial_grant": "5",
        },
    )
    assert created.status_code == 201, created.text
    outcome = await economy.run("yes-man")
    assert outcome.reason.value == "disk_exceeded", outcome
    [log] = (economy.settings.logs_dir / "yes-man").glob("*.log")
    assert log.stat().st_size <= MiB


DISK_FLOOD = """
import time
for i in range(8):  # 8 files of 0.9 MiB: each under the file limit, together over the workspace's 4 MiB
    with open(f"blob{i}", "wb") as f:
        f.write(b"z" * 900_000)
time.sleep(30)
"""

INODE_FLOOD = """
import os, time
os.makedirs("many", exist_ok=True)
for i in range(2000):
    open(f"many/{i}", "w").close()
time.sleep(30)
"""


@pytest.mark.parametrize("code", [DISK_FLOOD, INODE_FLOOD], ids=["bytes", "entries"])
async def test_a_workspace_that_outgrows_its_limit_is_killed(economy: Economy, code: str) -> None:
    await economy.agent("hoarder", code)
    outcome = await economy.run(
        "hoarder", bundle={"cpu_percent": "0.5", "memory_percent": "0.1", "duration_seconds": 20}
    )
    assert outcome.reason.value == "disk_exceeded", outcome
    assert outcome.wall_seconds < 15, outcome
    refused = await economy.run("hoarder", key="again")  # over its limit, it does not start again
    assert refused.reason.value == "error" and "workspace" in (refused.detail or ""), refused


FIRST_INSTRUCTION = """
record("balance", call("GET", "/economic/balance"))
"""


async def test_the_first_instruction_of_an_agent_is_already_recognised(economy: Economy) -> None:
    await economy.agent("sprinter", FIRST_INSTRUCTION)
    for run in range(3):
        outcome = await economy.run("sprinter", key=f"sprint-{run}")
        assert outcome.reason.value == "completed", outcome
        status, body = economy.results("sprinter")["balance"]
        assert status == 200, body


LEAVE_TOKEN = """
with open("token", "w") as f:
    f.write(os.environ["SYNTROPISM_TOKEN"])
"""


async def test_a_token_dies_with_its_execution_even_while_its_end_is_not_yet_recorded(
    economy: Economy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refuses the first two records of the end: the end is retried until recorded, and meanwhile
    the token is already refused."""
    manager = economy.runtime.executions
    assert manager is not None and economy.runtime.api is not None
    record_end, attempts, answers = manager._record_end, [], []

    def flaky(outcome: Any) -> None:
        attempts.append(outcome.execution_id)
        if len(attempts) <= 2:
            token = (economy.workspace("leaker") / "token").read_text()
            with httpx.Client(base_url=economy.runtime.api.url) as client:  # from this thread: the loop is free
                answers.append(client.get("/economic/balance", headers={"Authorization": f"Bearer {token}"}))
            raise OperationalError("UPDATE executions", {}, Exception("database is locked"))
        record_end(outcome)

    monkeypatch.setattr(manager, "_record_end", flaky)
    await economy.agent("leaker", LEAVE_TOKEN)
    outcome = await economy.run("leaker")
    assert outcome.reason.value == "completed" and len(attempts) == 3
    assert [(a.status_code, a.json()["reason"]) for a in answers] == [(401, "token_expired")] * 2
    with economy.runtime.database.reader() as session:
        assert session.get_one(Execution, outcome.execution_id).status == "terminated"
