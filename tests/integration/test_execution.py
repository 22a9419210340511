"""The Execution Manager with real processes under real limits: cgroups, rlimits, bubblewrap, wall clock.

Each test that depends on a sandbox layer checks that the layer was applied (it is named in the execution
record) and skips, saying which layer this host lacks, only where the host cannot offer it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from syntropism.config import Settings
from syntropism.core.allocation import AllocationScheduler
from syntropism.core.execution import ExecutionManager, Outcome, hash_token
from syntropism.core.market import MarketManager
from syntropism.domain import economy as E
from syntropism.domain.events import TerminationReason, parse_event
from syntropism.domain.models import time_ordered_id
from syntropism.infra.agents import register_agent
from syntropism.infra.database import Database
from syntropism.infra.ledger import Ledger
from syntropism.infra.sandbox import Sandbox
from syntropism.infra.tables import Agent, Execution, OutboxEvent
from tests.support.waiting import eventually

MiB = 2**20
CAPACITY_MEMORY = 1024 * MiB
PPM = 1_000_000


@pytest.fixture(scope="module")
def full_sandbox() -> Sandbox:
    return Sandbox.detect()


@pytest.fixture(scope="module")
def bare_sandbox() -> Sandbox:
    """rlimits only: what a host without cgroups or namespaces gives."""
    return Sandbox.detect(disable=["cgroups", "bubblewrap"])


def needs(sandbox: Sandbox, *layers: str) -> None:
    missing = {layer: sandbox.unavailable[layer] for layer in layers if layer in sandbox.unavailable}
    if missing:
        pytest.skip(f"this host cannot apply sandbox layers {missing}")


class World:
    """A database with agents, and a manager that runs their executions."""

    def __init__(self, state_dir: Path, sandbox: Sandbox, **settings: object) -> None:
        self.settings = Settings(
            state_dir=state_dir, cpu_cores=1, memory_bytes=CAPACITY_MEMORY, execution_poll_seconds=0.02, **settings
        )
        self.database = Database(self.settings.effective_database_url)
        self.database.migrate()
        self.manager = ExecutionManager(self.database, self.settings, sandbox)

    def agent(self, agent_id: str, program: str, *, entry_point: str = "main.py") -> Path:
        with self.database.transaction() as session:
            if session.get(Agent, agent_id) is None:
                register_agent(session, agent_id, entry_point=entry_point)
        workspace = self.manager.workspace_of(agent_id)
        (workspace / entry_point).write_text(textwrap.dedent(program))
        return workspace

    def allocate(self, agent_id: str, *, cpu: str = "0.5", memory: int = 256 * MiB, seconds: float = 10) -> str:
        """An allocated execution, as a market cycle leaves it (no bid: the operator's allocation)."""
        execution_id = time_ordered_id()
        with self.database.transaction() as session:
            session.add(
                Execution(
                    id=execution_id,
                    agent_id=agent_id,
                    cycle=0,
                    cpu_ppm=int(Decimal(cpu) * PPM),
                    memory_ppm=memory * PPM // CAPACITY_MEMORY,
                    tokens_ppm=0,
                    attention_ppm=0,
                    duration_ms=int(seconds * 1000),
                )
            )
        return execution_id

    async def run(self, agent_id: str, **bundle: object) -> Outcome:
        execution_id = self.allocate(agent_id, **bundle)  # type: ignore[arg-type]
        assert execution_id in await self.manager.start_allocated()
        async with asyncio.timeout(60):
            return await self.manager.wait(execution_id)

    def record(self, execution_id: str) -> Execution:
        with self.database.reader() as session:
            return session.get_one(Execution, execution_id)

    def events(self, event_type: str) -> list[dict]:  # type: ignore[type-arg]
        with self.database.reader() as session:
            payloads = session.scalars(
                select(OutboxEvent.payload).where(OutboxEvent.event_type == event_type).order_by(OutboxEvent.id)
            ).all()
        return [parse_event(p).model_dump(mode="json") for p in payloads]


@pytest.fixture
async def world(state_dir: Path, full_sandbox: Sandbox) -> AsyncIterator[World]:
    built = World(state_dir, full_sandbox)
    yield built
    await built.manager.stop()
    built.database.dispose()


@pytest.fixture
async def bare_world(tmp_path: Path, bare_sandbox: Sandbox) -> AsyncIterator[World]:
    built = World(tmp_path / "bare-state", bare_sandbox)
    yield built
    await built.manager.stop()
    built.database.dispose()


def memory_hog(chunk_mib: int) -> str:
    """An agent that touches ever more memory, ``chunk_mib`` at a time, until something stops it."""
    return f"""
        chunks = []
        while True:
            chunk = bytearray({chunk_mib} * 2**20)
            for i in range(0, len(chunk), 4096):
                chunk[i] = 1
            chunks.append(chunk)
        """


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry.name}/cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def test_a_well_behaved_agent_completes_with_its_usage_recorded(world: World) -> None:
    workspace = world.agent(
        "worker",
        """
        import json, os, time
        begin = time.process_time()
        while time.process_time() - begin < 0.2:  # some real CPU work
            pass
        block = bytearray(30 * 2**20)  # and some real memory, touched
        for i in range(0, len(block), 4096):
            block[i] = 1
        state = json.load(open("state.json"))
        state["runs"] = state.get("runs", 0) + 1
        json.dump(state, open("state.json", "w"))
        names = [n for n in os.environ if n.startswith(("SYNTROPISM_", "SYSTEM_SERVICE"))]
        json.dump({n: os.environ[n] for n in names}, open("env.json", "w"))
        """,
    )
    outcome = await world.run("worker")
    assert outcome.reason is TerminationReason.COMPLETED, outcome
    assert outcome.exit_code == 0 and outcome.signal is None
    assert outcome.cpu_seconds >= 0.2
    assert outcome.peak_memory_bytes >= 30 * MiB
    record = world.record(outcome.execution_id)
    assert (record.status, record.reason, record.exit_code) == ("terminated", "completed", 0)
    assert record.cpu_seconds == pytest.approx(outcome.cpu_seconds) and record.peak_memory_bytes >= 30 * MiB
    assert record.started_at is not None and record.ended_at is not None and record.pid
    assert json.loads((workspace / "state.json").read_text()) == {"runs": 1}
    env = json.loads((workspace / "env.json").read_text())
    assert env["SYNTROPISM_AGENT_ID"] == "worker"
    assert env["SYNTROPISM_EXECUTION_ID"] == outcome.execution_id
    assert env["SYNTROPISM_CORRELATION_ID"] and len(env["SYNTROPISM_TOKEN"]) >= 32
    assert env["SYSTEM_SERVICE_URL"].startswith("http://")
    assert json.loads(env["SYNTROPISM_ENVELOPE"])["memory_bytes"] == 256 * MiB
    [started] = world.events("execution.started")
    [terminated] = world.events("execution.terminated")
    assert started["data"]["execution_id"] == terminated["data"]["execution_id"] == outcome.execution_id
    assert started["data"]["sandbox_layers"] == json.loads(record.sandbox_layers)["applied"]
    assert terminated["data"]["reason"] == "completed" and terminated["data"]["cpu_seconds"] >= 0.2
    # A second run finds the workspace as the first left it.
    outcome = await world.run("worker")
    assert json.loads((workspace / "state.json").read_text()) == {"runs": 2}


async def test_the_token_is_known_to_the_database_only_by_its_hash_while_running(world: World) -> None:
    workspace = world.agent(
        "holder",
        """
        import os, time
        open("token", "w").write(os.environ["SYNTROPISM_TOKEN"])
        time.sleep(30)
        """,
    )
    execution_id = world.allocate("holder", seconds=30)
    await world.manager.start_allocated()
    token_file = workspace / "token"
    await eventually(lambda: token_file.exists() and token_file.read_text(), what="the agent writing its token")
    assert world.record(execution_id).token_hash == hash_token(token_file.read_text())
    assert await world.manager.kill(execution_id)
    outcome = await world.manager.wait(execution_id)
    assert outcome.reason is TerminationReason.KILLED
    assert world.record(execution_id).status == "terminated"  # the API refuses tokens of ended executions


async def test_a_memory_hog_is_killed_by_the_kernel_as_memory_exceeded(world: World) -> None:
    needs(world.manager.sandbox, "cgroup-memory")
    world.agent("hog", memory_hog(chunk_mib=16))
    outcome = await world.run("hog", memory=64 * MiB)
    assert outcome.reason is TerminationReason.MEMORY_EXCEEDED, outcome
    assert outcome.signal == 9  # SIGKILL, from the OOM killer
    assert outcome.peak_memory_bytes <= 64 * MiB + MiB
    assert outcome.wall_seconds < 10, "killed at the limit, not at the end of its duration"
    assert "cgroup-memory" in outcome.layers["applied"]  # type: ignore[operator]


async def test_a_cpu_spinner_gets_no_more_than_its_share(world: World) -> None:
    needs(world.manager.sandbox, "cgroup-cpu")
    world.agent(
        "spinner",
        """
        import threading
        def spin():
            while True:
                pass
        for _ in range(3):  # more threads than its share, more than the host's cores
            threading.Thread(target=spin, daemon=True).start()
        spin()
        """,
    )
    outcome = await world.run("spinner", cpu="0.2", seconds=1.5)
    assert outcome.reason is TerminationReason.TIMEOUT, outcome
    share = 0.2 * outcome.wall_seconds  # 20 % of one core over the time it ran
    assert outcome.cpu_seconds <= share * 1.15 + 0.05, f"{outcome.cpu_seconds:.3f} CPU-s against a share of {share:.3f}"
    assert outcome.cpu_seconds >= share * 0.5, "it did run, at about its share"


async def test_without_a_cpu_quota_the_cpu_budget_kills_as_cpu_exceeded(bare_world: World) -> None:
    assert "cgroup-cpu" in bare_world.manager.sandbox.unavailable
    bare_world.agent(
        "spinner",
        """
        while True:
            pass
        """,
    )
    outcome = await bare_world.run("spinner", cpu="0.25", seconds=4)  # a budget of 1 CPU-s
    assert outcome.reason is TerminationReason.CPU_EXCEEDED, outcome
    assert 1.0 <= outcome.cpu_seconds < 1.5
    assert outcome.wall_seconds < 3, "killed when the budget ran out, not at the end of its duration"
    assert "budget" in (outcome.detail or "")


async def test_a_sleeper_past_its_duration_is_killed_as_timeout(world: World) -> None:
    world.agent(
        "sleeper",
        """
        import time
        time.sleep(60)
        """,
    )
    outcome = await world.run("sleeper", seconds=0.5)
    assert outcome.reason is TerminationReason.TIMEOUT, outcome
    assert 0.5 <= outcome.wall_seconds < 3
    assert outcome.signal == 9


async def test_a_fork_bomb_is_stopped_by_the_pids_limit_and_the_host_survives(
    state_dir: Path, full_sandbox: Sandbox
) -> None:
    needs(full_sandbox, "cgroup-pids")
    world = World(state_dir, full_sandbox, pids_max=24)
    try:
        workspace = world.agent(
            "bomb",
            """
            import os, time
            refused = 0
            while True:
                try:
                    os.fork()  # parent and child both go on forking
                except OSError:
                    refused += 1
                    if refused == 1:
                        open(f"refused-{os.getpid()}", "w").close()
                    time.sleep(0.01)
            """,
        )
        outcome = await world.run("bomb", seconds=2)
    finally:
        await world.manager.stop()
        world.database.dispose()
    assert outcome.reason is TerminationReason.TIMEOUT, outcome
    assert list(workspace.glob("refused-*")), "forks past the limit were refused"
    assert not processes_with(str(workspace)), "no process of the bomb survived teardown"
    # The host still starts processes.
    probe = await asyncio.create_subprocess_exec("true")
    assert await probe.wait() == 0


async def test_children_die_with_the_agent_and_nothing_survives_teardown(world: World) -> None:
    marker = f"orphan-{time_ordered_id()}"
    world.agent(
        "parent",
        f"""
        import os, subprocess
        # A daemon: double fork and a new session, as a process escaping its parent would.
        subprocess.Popen(["/bin/sh", "-c", "sleep 300 # {marker}"], start_new_session=True)
        subprocess.Popen(["/bin/sh", "-c", "sleep 301 # {marker}"])
        """,
    )
    outcome = await world.run("parent")
    assert outcome.reason is TerminationReason.COMPLETED, outcome
    assert not processes_with(marker), "the agent's children outlived it"


async def test_an_agent_sees_only_its_workspace_and_reaches_only_the_system_service(
    state_dir: Path, full_sandbox: Sandbox, tmp_path: Path
) -> None:
    needs(full_sandbox, "filesystem", "pid-namespace", "network")
    secret = tmp_path / "host-secret.txt"
    secret.write_text("the host's secret")
    service_dir = tmp_path / "service"
    service_dir.mkdir()
    service_socket = service_dir / "api.sock"
    with (
        _unix_echo_server(service_socket) as unix_hits,
        _tcp_server() as tcp_port,
    ):
        world = World(state_dir, full_sandbox)
        world.manager.service_socket = service_socket
        try:
            other = world.agent("other", "print('other')\n")
            (other / "diary.txt").write_text("the other agent's secret")
            workspace = world.agent(
                "probe",
                f"""
                import json, os, socket
                result = {{}}
                def attempt(name, action):
                    try:
                        result[name] = ("ok", action())
                    except Exception as exc:
                        result[name] = ("refused", type(exc).__name__)
                attempt("host secret", lambda: open({str(secret)!r}).read())
                attempt("other workspace", lambda: open({str(other / "diary.txt")!r}).read())
                attempt("own workspace", lambda: open("state.json").read())
                attempt("host root listing", lambda: sorted(os.listdir("/")))
                attempt("host processes", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
                def tcp():
                    with socket.create_connection(("127.0.0.1", {tcp_port}), timeout=2) as s:
                        return s.recv(10).decode()
                attempt("host loopback tcp", tcp)
                attempt("internet", lambda: socket.create_connection(("1.1.1.1", 53), timeout=2).close())
                def service():
                    with socket.socket(socket.AF_UNIX) as s:
                        s.settimeout(5)
                        s.connect(os.environ["SYSTEM_SERVICE_SOCKET"])
                        s.sendall(b"ping")
                        return s.recv(10).decode()
                attempt("system service", service)
                json.dump(result, open("isolation.json", "w"))
                """,
            )
            outcome = await world.run("probe")
        finally:
            await world.manager.stop()
            world.database.dispose()
    assert outcome.reason is TerminationReason.COMPLETED, outcome
    result = json.loads((workspace / "isolation.json").read_text())
    verified = {"filesystem", "pid-namespace", "network"} & set(outcome.layers["applied"])  # type: ignore[arg-type]
    assert verified == {"filesystem", "pid-namespace", "network"}
    assert result["host secret"][0] == "refused"
    assert result["other workspace"][0] == "refused"
    assert result["own workspace"] == ["ok", "{}\n"]
    assert "home" not in result["host root listing"][1] and "workspace" in result["host root listing"][1]
    assert max(result["host processes"][1]) < 10, "it sees only its own processes"
    assert result["host loopback tcp"][0] == "refused"
    assert result["internet"][0] == "refused"
    assert result["system service"] == ["ok", "pong"]
    assert unix_hits == [b"ping"]


async def test_an_entry_point_that_is_not_there_ends_as_error(world: World) -> None:
    with world.database.transaction() as session:
        register_agent(session, "ghost", entry_point="missing.py")
    outcome = await world.run("ghost")
    assert outcome.reason is TerminationReason.ERROR
    assert "missing.py" in (outcome.detail or "")
    [terminated] = world.events("execution.terminated")
    assert terminated["data"]["reason"] == "error"
    assert world.record(outcome.execution_id).status == "terminated"


async def test_executions_run_concurrently(world: World) -> None:
    for name in ("one", "two", "three"):
        world.agent(name, "import time\ntime.sleep(1)\n")
    ids = [world.allocate(name) for name in ("one", "two", "three")]
    began = time.monotonic()
    assert sorted(await world.manager.start_allocated()) == sorted(ids)
    assert time.monotonic() - began < 1, "starting does not wait for the agents"
    async with asyncio.timeout(30):
        outcomes = await asyncio.gather(*(world.manager.wait(i) for i in ids))
    assert all(o.reason is TerminationReason.COMPLETED for o in outcomes)
    assert time.monotonic() - began < 2.5, "three 1 s agents ran side by side"


async def test_executions_left_running_by_a_dead_runtime_are_recovered(world: World) -> None:
    with world.database.transaction() as session:
        register_agent(session, "nobody-home")
    execution_id = world.allocate("nobody-home")
    with world.database.transaction() as session:
        session.get_one(Execution, execution_id).status = "running"
    assert await world.manager.recover() == [execution_id]
    record = world.record(execution_id)
    assert (record.status, record.reason) == ("terminated", "killed")
    [terminated] = world.events("execution.terminated")
    assert terminated["data"]["execution_id"] == execution_id


async def test_an_agent_goes_dormant_when_nothing_will_run_it_and_a_bid_for_it_wakes_it(world: World) -> None:
    world.agent("sleepy", "print('ran')\n")
    with world.database.transaction() as session:
        register_agent(session, "friend")
    ledger = Ledger(world.database)
    for agent_id in ("sleepy", "friend"):
        ledger.execute(E.grant(agent_id, 100, idempotency_key=f"grant-{agent_id}"))
    market = MarketManager(world.database, world.settings)
    scheduler = AllocationScheduler(world.database, world.settings, market, mechanism="first_price")
    bundle = {"cpu_percent": "0.1", "memory_percent": "0.1", "duration_seconds": 5}

    market.place_bid("sleepy", bundle, 5, idempotency_key="own-bid")
    scheduler.run_allocation_cycle()
    [first] = await world.manager.start_allocated()
    assert (await world.manager.wait(first)).reason is TerminationReason.COMPLETED
    [awake] = world.events("agent.awake")
    assert awake["data"]["execution_id"] == first and awake["data"]["woken_by"] is None
    [dormant] = world.events("agent.dormant")
    assert dormant["agent_id"] == "sleepy" and dormant["data"]["last_execution_id"] == first

    market.place_bid("friend", bundle, 5, idempotency_key="wake-bid", on_behalf_of="sleepy")
    scheduler.run_allocation_cycle()
    [second] = await world.manager.start_allocated()
    woken = world.events("agent.awake")[-1]
    assert woken["data"]["execution_id"] == second and woken["data"]["woken_by"] == "friend"
    await world.manager.wait(second)
    assert len(world.events("agent.dormant")) == 2


async def test_a_pending_bid_keeps_the_agent_from_going_dormant(world: World) -> None:
    world.agent("planner", "print('ran')\n")
    Ledger(world.database).execute(E.grant("planner", 100, idempotency_key="grant"))
    market = MarketManager(world.database, world.settings)
    execution_id = world.allocate("planner")
    with world.database.transaction() as session:
        session.get_one(Agent, "planner").status = "active"
    market.place_bid("planner", {"cpu_percent": "0.1", "duration_seconds": 5}, 5, idempotency_key="next-run")
    await world.manager.start_allocated()
    await world.manager.wait(execution_id)
    assert world.events("agent.dormant") == []


# --- small servers standing in for the System Service and for the host's network ------------------------------


class _unix_echo_server:
    """A Unix socket server answering "pong"; yields the list of what it received."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[bytes] = []

    def __enter__(self) -> list[bytes]:
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(str(self.path))
        self.server.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return self.received

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                self.received.append(connection.recv(10))
                connection.sendall(b"pong")

    def __exit__(self, *exc: object) -> None:
        self.server.close()


class _tcp_server:
    def __enter__(self) -> int:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return self.server.getsockname()[1]

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                connection.sendall(b"hello")

    def __exit__(self, *exc: object) -> None:
        self.server.close()


async def test_without_a_memory_cgroup_resident_memory_is_watched(bare_world: World) -> None:
    assert "cgroup-memory" in bare_world.manager.sandbox.unavailable
    bare_world.agent("hog", memory_hog(chunk_mib=8))
    outcome = await bare_world.run("hog", memory=64 * MiB)  # caught by the watcher or by the address-space cap
    assert outcome.reason is TerminationReason.MEMORY_EXCEEDED, outcome
    assert outcome.peak_memory_bytes >= 64 * MiB
    assert outcome.wall_seconds < 5
