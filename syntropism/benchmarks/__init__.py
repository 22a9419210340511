"""Benchmarks: scenarios that run the real system and are judged from its event stream (DESIGN §7)."""

from syntropism.benchmarks.runner import BenchmarkRunner, ScenarioResult
from syntropism.benchmarks.scenario import LoadedScenario, Scenario, ScenarioError, load_scenario, shipped_scenarios

__all__ = [
    "BenchmarkRunner",
    "LoadedScenario",
    "Scenario",
    "ScenarioError",
    "ScenarioResult",
    "load_scenario",
    "shipped_scenarios",
]
