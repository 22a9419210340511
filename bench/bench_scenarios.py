"""Wall time of ``syntropism bench`` over every shipped scenario, as a user runs it (target: under 2 minutes).

It runs the command in a subprocess (interpreter start, imports, the embedded NATS server, each scenario's own
runtime and sandboxed agents, the JUnit and JSON reports) and times it end to end. Baseline: the time the
scenarios' agents themselves ran (the sum of ``wall_seconds`` over every ``execution.terminated``), which no
runner can avoid; the rest is the runner's own cost.

Run: ``python bench/bench_scenarios.py`` (after ``make test`` has set up ``.venv``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 120


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-scenarios-") as folder:
        report = Path(folder) / "results.json"
        began = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, "-m", "syntropism", "bench", "--json", str(report)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        wall = time.perf_counter() - began
        if completed.returncode != 0:
            sys.exit(f"syntropism bench failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
        results = json.loads(report.read_text())["results"]
    per_scenario = {r["scenario_id"]: r["seconds"] for r in results}
    agents = sum(r["execution_seconds"] for r in results)
    for scenario_id, seconds in per_scenario.items():
        print(f"  {scenario_id:8s} {seconds:6.2f} s")
    print(f"  {len(results)} scenarios in {wall:.1f} s (agents ran {agents:.1f} s of it); target < {TARGET_SECONDS} s")
    print(
        json.dumps(
            {
                "bench": "scenarios",
                "metric": "syntropism bench wall time, all shipped scenarios",
                "value": round(wall, 2),
                "unit": "s",
                "baseline": round(agents, 2),
                "target": TARGET_SECONDS,
            }
        )
    )


if __name__ == "__main__":
    main()
