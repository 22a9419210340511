"""The live terminal view of a running economy (Rich): what ``make run`` shows.

Prices and utilization per resource with a short history, the last cycle's winners and losers, every agent's
status and credits, the executions running now, the latest events and the prompts waiting for the human.
It reads the database (never the runtime's internals, except which executions are running) a few times a
second, from Rich's refresh thread.
"""

from __future__ import annotations

import time
from collections import deque
from decimal import Decimal

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from syntropism.core.allocation import CycleReport
from syntropism.domain.models import Resource, credits_text
from syntropism.domain.status import AgentStatus
from syntropism.infra import read_models
from syntropism.runtime import Runtime

SPARKS = "▁▂▃▄▅▆▇█"
HISTORY = 30
EVENTS_SHOWN = 8
PROMPTS_SHOWN = 3
ROUTINE_EVENTS = ("market.price_discovered", "scheduler.cycle_completed")  # every cycle has them: noise here
STATUS_STYLE = {AgentStatus.ACTIVE: "green", AgentStatus.DORMANT: "yellow", AgentStatus.DIED: "red"}


def sparkline(values: list[Decimal]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    return "".join(SPARKS[0 if span == 0 else int((v - low) / span * (len(SPARKS) - 1))] for v in values)


class LiveView:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.prices: dict[Resource, deque[Decimal]] = {r: deque(maxlen=HISTORY) for r in Resource}
        self.utilization: dict[Resource, Decimal] = {}
        self.last: CycleReport | None = None
        self.losers: int = 0

    def on_cycle(self, report: CycleReport) -> None:
        self.last = report
        for resource, price in report.prices.items():
            self.prices[resource].append(price)
        self.utilization = dict(report.utilization)

    def __rich__(self) -> Group:
        return Group(self._header(), self._market(), self._agents(), self._activity())

    def _header(self) -> Text:
        api = self.runtime.api.url if self.runtime.api else "—"
        cycle = self.last.cycle if self.last else 0
        return Text.from_markup(
            f"[bold green]Syntropism[/] — cycle [bold]{cycle}[/] · every "
            f"{self.runtime.settings.clearing_interval_seconds:g}s · System Service {api} · Ctrl-C stops"
        )

    def _market(self) -> Table:
        table = Table("resource", "price", "utilization", f"price, last {HISTORY} cycles", title="market", expand=True)
        for resource in Resource:
            history = list(self.prices[resource])
            price = f"{history[-1]:.4f}" if history else "—"
            used = self.utilization.get(resource)
            table.add_row(resource.value, price, f"{used:.0%}" if used is not None else "—", sparkline(history))
        if self.last:
            winners = ", ".join(sorted(set(self.last.winning_agents))) or "nobody"
            table.caption = (
                f"last cycle: {self.last.bids_considered} bids · won by {winners} · {self.last.carried} carried · "
                f"{self.last.outbid} outbid · {self.last.burned} credits burned"
            )
        return table

    def _agents(self) -> Table:
        executions = self.runtime.executions
        running = {r.claim.agent_id: r for r in (executions.running.values() if executions else [])}
        table = Table("agent", "status", "available", "locked", "running now", title="agents", expand=True)
        agents = read_models.agents(self.runtime.database)
        now = time.monotonic()
        for agent in agents:
            execution = running.get(agent.agent_id)
            doing = ""
            if execution is not None:
                envelope = execution.envelope
                doing = f"{now - execution.started:.1f}s of {envelope.wall_seconds:g}s, {envelope.cpu_cores:.2f} cores"
            table.add_row(
                agent.agent_id,
                Text(agent.status, style=STATUS_STYLE.get(agent.status, "")),
                credits_text(agent.available),
                credits_text(agent.locked),
                doing,
            )
        return table

    def _activity(self) -> Panel:
        database = self.runtime.database
        events = read_models.recent_events(database, limit=EVENTS_SHOWN, excluding=ROUTINE_EVENTS)
        prompts = read_models.waiting_prompts(database)
        lines = [f"{e.created_at:%H:%M:%S}  {e.event_type:28s} {e.agent_id or ''}" for e in events]
        body = Text("\n".join(lines) or "no events yet")
        if prompts:
            body.append(f"\n\n{len(prompts)} prompts wait for you (syntropism inbox):", style="bold magenta")
            for prompt in prompts[:PROMPTS_SHOWN]:
                body.append(f"\n  {prompt.agent_id}: {prompt.text[:80]}")
        return Panel(body, title="recent events")
