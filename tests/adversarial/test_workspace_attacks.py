"""Workspace escapes: agent ids that name folders of the host, entry points and sources that climb out, links the
host would follow. Each attacker is a real agent in the real sandbox, talking to the System Service over its
socket; each attempt must be refused with a reason and leave every file outside its own workspace as it was."""

from __future__ import annotations

from tests.adversarial.conftest import Economy

ESCAPING_IDS = [".", "..", "...", ".hidden", "a/b", "a\x00b", "admin", "Operator", "system", "starter", " x", "x:y"]


async def test_the_operator_cannot_create_agents_with_ids_that_name_host_folders(economy: Economy) -> None:
    before = economy.fingerprint()
    for agent_id in ESCAPING_IDS:
        created = await economy.admin.post("/admin/agents", json={"agent_id": agent_id, "initial_grant": "0"})
        assert created.status_code == 422, (agent_id, created.text)
        assert created.json()["reason"] in ("invalid_agent_id", "invalid_input"), created.text
    assert economy.fingerprint() == before
    agents = (await economy.admin.get("/admin/agents")).json()
    assert agents == [], "no agent was registered"


SPAWN_ATTACKS = """
attempts = {
    "child ..": {"agent_id": "..", "source": "main.py"},
    "child .": {"agent_id": ".", "source": "main.py"},
    "child admin": {"agent_id": "admin", "source": "main.py"},
    "entry into the victim": {"agent_id": "c1", "source": "main.py", "entry_point": "../victim/main.py"},
    "entry onto the operator token": {"agent_id": "c2", "source": "main.py", "entry_point": "../../operator_token"},
    "entry onto the database": {"agent_id": "c3", "source": "main.py", "entry_point": "../../syntropism.db"},
    "absolute entry": {"agent_id": "c4", "source": "main.py", "entry_point": "/tmp/owned.py"},
    "folder with absolute entry": {"agent_id": "c5", "source": ".", "entry_point": "/etc/passwd"},
    "source outside": {"agent_id": "c6", "source": "../victim"},
    "source absolute": {"agent_id": "c7", "source": "/etc"},
    "source through a link": {"agent_id": "c8", "source": "elsewhere/main.py"},
    "NUL in the id": {"agent_id": "c\\u0000", "source": "main.py"},
}
os.symlink("../victim", "elsewhere")
for name, body in attempts.items():
    record(name, call("POST", "/social/spawn", key=name, json=body))
"""


async def test_spawn_refuses_every_escape_and_changes_nothing_outside(economy: Economy) -> None:
    await economy.agent("victim", files={"secret.txt": "victim's secret"})
    await economy.agent("attacker", SPAWN_ATTACKS)
    before = economy.fingerprint(except_agents=("attacker",))
    outcome = await economy.run("attacker")
    assert outcome.reason.value == "completed", outcome
    results = economy.results("attacker")
    assert len(results) == 12, results
    for name, (status, body) in results.items():
        assert status in (409, 422), (name, status, body)
        assert body["reason"] in ("invalid_agent_id", "invalid_input", "invalid_spawn", "agent_exists"), (name, body)
        assert body["detail"], name
    assert economy.fingerprint(except_agents=("attacker",)) == before
    assert not (economy.state_dir / "workspaces" / "c1").exists()
    agents = {a["agent_id"] for a in (await economy.admin.get("/admin/agents")).json()}
    assert agents == {"victim", "attacker"}
    await economy.assert_market_clears()


LINK_FARM = """
os.makedirs("code", exist_ok=True)
with open("code/main.py", "w") as f:
    f.write("print('child')\\n")
os.symlink("../../victim/main.py", "code/state.json")       # spawn used to write {} through it
os.symlink("../../victim/secret.txt", "code/stolen.txt")    # and copy what it points at
os.symlink("/", "code/root")
os.mkfifo("code/pipe")                                       # a FIFO would hang a naive copy
record("spawn", call("POST", "/social/spawn", key="s", json={"agent_id": "child", "source": "code"}))
os.remove("state.json")
os.symlink("../victim/created-by-host", "state.json")        # dangling: the next start must not create it
os.symlink("../victim/secret.txt", "leak.txt")
record("attach a link", call("POST", "/attention/prompt", key="p", json={"text": "look", "attachments": ["leak.txt"]}))
"""


async def test_the_host_never_follows_a_link_an_agent_planted(economy: Economy) -> None:
    await economy.agent("victim", files={"secret.txt": "victim's secret"})
    await economy.agent("attacker", LINK_FARM)
    before = economy.fingerprint(except_agents=("attacker", "child"))
    outcome = await economy.run("attacker")
    assert outcome.reason.value == "completed", outcome
    results = economy.results("attacker")
    status, body = results["spawn"]
    assert status == 200, body
    child = economy.workspace("child")
    copied = sorted(str(p.relative_to(child)) for p in child.rglob("*"))
    assert copied == ["main.py", "state.json"], "links and the FIFO stay behind; the child gets its own state"
    assert (child / "state.json").read_text() == "{}\n" and not (child / "state.json").is_symlink()
    status, body = results["attach a link"]
    assert (status, body["reason"]) == (422, "invalid_attachment"), body

    again = await economy.run("attacker", key="second-run")  # the dangling state.json link is left alone
    assert again.reason.value in ("completed", "error"), again
    assert not (economy.workspace("victim") / "created-by-host").exists()
    assert economy.fingerprint(except_agents=("attacker", "child")) == before
    await economy.assert_market_clears()


PROC_SNOOP = """
with open("/proc/1/cmdline", "rb") as f:
    pid1 = f.read().decode(errors="replace")
record("pid1", pid1)
"""


async def test_the_sandbox_init_shows_no_host_paths(economy: Economy) -> None:
    if "filesystem" not in economy.runtime.executions.sandbox.layers:  # type: ignore[union-attr]
        return  # without bubblewrap the agent is the host's process anyway (the README says so loudly)
    await economy.agent("snoop", PROC_SNOOP)
    outcome = await economy.run("snoop")
    assert outcome.reason.value == "completed", outcome
    pid1 = economy.results("snoop")["pid1"]
    assert "bwrap" in pid1 or "python" in pid1, pid1
    assert str(economy.state_dir.resolve()) not in pid1, pid1
