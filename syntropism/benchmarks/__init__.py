"""Benchmarks: scenarios that run the real system and are judged from its event stream (DESIGN §7)."""

from syntropism.benchmarks.loader import load_scenario, shipped_scenarios
from syntropism.benchmarks.result import ScenarioResult
from syntropism.benchmarks.runner import BenchmarkRunner
from syntropism.benchmarks.scenario import LoadedScenario, Scenario, ScenarioError

__all__ = [
    "BenchmarkRunner",
    "LoadedScenario",
    "Scenario",
    "ScenarioError",
    "ScenarioResult",
    "load_scenario",
    "shipped_scenarios",
]
