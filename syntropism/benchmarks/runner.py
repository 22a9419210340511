"""The BenchmarkRunner: runs scenarios on the real system, each in isolation, and judges each from its event
stream alone.

The runner owns what the runs share — a working folder and one embedded NATS server — and hands each run
(:class:`~syntropism.benchmarks.run.ScenarioRun`) its own state folder and correlation id within them, so that
runs on one server never see each other's events.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from syntropism.benchmarks.checks import CheckResult
from syntropism.benchmarks.result import ScenarioResult
from syntropism.benchmarks.run import ScenarioRun
from syntropism.benchmarks.scenario import LoadedScenario
from syntropism.config import Settings
from syntropism.infra.embedded_nats import EmbeddedNatsServer


class BenchmarkRunner:
    """Runs scenarios, each isolated; ``async with BenchmarkRunner() as runner: await runner.run(loaded)``."""

    def __init__(
        self,
        *,
        nats_url: str | None = None,
        work_dir: Path | None = None,
        keep_state: bool = False,
        judge_settings: Settings | None = None,
        agent: str | None = None,
    ) -> None:
        self.nats_url = nats_url
        self.work_dir = work_dir
        self.keep_state = keep_state
        self.judge_settings = judge_settings
        self.agent = agent  # the agent under test (``--agent``): run as each scenario's subject
        self._own_work_dir = False
        self._nats: EmbeddedNatsServer | None = None

    async def __aenter__(self) -> BenchmarkRunner:
        if self.work_dir is None:
            self.work_dir, self._own_work_dir = Path(tempfile.mkdtemp(prefix="syntropism-bench-")), True
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if self.nats_url is None:
            self._nats = EmbeddedNatsServer(self.work_dir / "nats")
            self.nats_url = await self._nats.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._nats is not None:
            self._nats.stop()
            self._nats = None
        if self._own_work_dir and not self.keep_state and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    async def run(self, loaded: LoadedScenario, *, seed: int | None = None, attempt: int = 1) -> ScenarioResult:
        """One isolated run of ``loaded``; ``seed`` becomes every agent's SYNTROPISM_SEED."""
        scenario = loaded.scenario
        run_id = f"bench-{scenario.scenario_id}-{uuid.uuid4().hex[:10]}"
        result = ScenarioResult(
            scenario.scenario_id,
            scenario.name,
            scenario.domain,
            str(loaded.path) if loaded.path else None,
            run_id,
            seed=seed,
            attempt=attempt,
        )
        result.checks += [
            CheckResult(f"older form: {part}", "not_evaluated", "cannot be mapped onto the current format")
            for part in loaded.not_evaluated
        ]
        began = time.perf_counter()
        assert self.work_dir is not None and self.nats_url is not None, "use the runner in `async with`"
        state_dir = self.work_dir / run_id
        try:
            run = ScenarioRun(
                loaded,
                result,
                state_dir=state_dir,
                nats_url=self.nats_url,
                agent=self.agent,
                judge_settings=self.judge_settings,
            )
            await run.execute()
        finally:
            result.seconds = time.perf_counter() - began
            if not self.keep_state:
                shutil.rmtree(state_dir, ignore_errors=True)
        return result

    async def run_many(
        self,
        scenarios: Sequence[LoadedScenario],
        on_result: Callable[[ScenarioResult], None] | None = None,
        *,
        repeat: int = 1,
        seed: int | None = None,
    ) -> list[ScenarioResult]:
        """Each scenario ``repeat`` times, with seeds ``seed``, ``seed + 1``, … (none when ``seed`` is None and
        there is one run; from 0 when repeating without one), scenario by scenario."""
        if repeat < 1:
            raise ValueError(f"repeat must be at least 1, got {repeat}")
        first = seed if seed is not None or repeat == 1 else 0
        results = []
        for loaded in scenarios:
            for attempt in range(1, repeat + 1):
                run_seed = None if first is None else first + attempt - 1
                result = await self.run(loaded, seed=run_seed, attempt=attempt)
                results.append(result)
                if on_result is not None:
                    on_result(result)
        return results
