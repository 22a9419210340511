"""``syntropism bench``: run benchmark scenarios on the real system, show each verdict and why, and write the
results for other tools."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from syntropism.benchmarks.loader import load_scenario, shipped_scenarios
from syntropism.benchmarks.programs import REPOSITORY
from syntropism.benchmarks.report import exit_code, summary_line, write_json, write_junit
from syntropism.benchmarks.result import ScenarioResult, Verdict
from syntropism.benchmarks.runner import BenchmarkRunner
from syntropism.benchmarks.scenario import LoadedScenario, ScenarioError, scenario_json_schema
from syntropism.cli.common import console, err_console, run_async, run_user_facing, settings_for
from syntropism.config import Settings

STATUS_STYLE: dict[Verdict, str] = {
    "passed": "[green]passed[/]",
    "failed": "[red]FAILED[/]",
    "error": "[red]ERROR[/]",
    "unreadable": "[red]UNREADABLE[/]",
    "not_evaluated": "[yellow]NOT EVALUATED[/]",
    "partial": "[yellow]partial[/]",
}


def _scenario_files(paths: list[Path], domain: str | None) -> tuple[list[Path], list[ScenarioResult]]:
    """The scenario files to load, and an unreadable entry for each given path that does not exist."""
    if not paths:
        return shipped_scenarios(domain), []
    files: list[Path] = []
    missing: list[ScenarioResult] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.rglob("*.json"))
        elif path.is_file():
            files.append(path)
        else:
            missing.append(ScenarioResult.of_unreadable(path, f"{path}: no such scenario file or folder"))
    return [p for p in files if p.name != "scenario.schema.json"], missing


def _load_all(files: list[Path], domain: str | None) -> list[LoadedScenario | ScenarioResult]:
    """Each file loaded, or an unreadable entry naming the file, the field and the reason; one bad file does
    not stop the others."""
    loaded: list[LoadedScenario | ScenarioResult] = []
    for path in files:
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            loaded.append(ScenarioResult.of_unreadable(path, str(exc)))
            continue
        if domain is None or scenario.scenario.domain == domain:
            loaded.append(scenario)
    return loaded


def _bench_summary(results: list[ScenarioResult], allow_partial: bool) -> Table:
    table = Table("scenario", "name", "status", "checks", "not evaluated", "events", "seconds")
    for r in results:
        checks = f"{r.count('passed')}/{r.evaluated}"
        status = STATUS_STYLE[r.status]
        if r.status == "partial" and allow_partial:
            status = "[green]partial[/] (allowed)"
        scenario = r.scenario_id if r.seed is None else f"{r.scenario_id} (seed {r.seed})"
        table.add_row(
            scenario, r.name, status, checks, str(r.count("not_evaluated")),
            str(len(r.events)), f"{r.seconds:.1f}",
        )  # fmt: skip
    return table


def _agent_program(agent: Path) -> str:
    """The agent under test's program, found as a scenario's is (the working folder, then the repository)."""
    found = next((p for p in (agent, REPOSITORY / agent) if p.exists()), None)
    if found is None:
        err_console.print(f"--agent {agent}: no such file or folder (nor in {REPOSITORY})")
        raise typer.Exit(2)
    return str(found.resolve())


def _print_problems(result: ScenarioResult) -> None:
    if result.subject and result.subject.get("note"):
        console.print(f"[yellow]{result.scenario_id}[/]: {result.subject['note']}", soft_wrap=True)
    if result.unreadable:
        console.print(f"[red]{result.path}[/]: unreadable, not run: {result.error}", soft_wrap=True)
    elif result.error:
        console.print(f"[red]{result.scenario_id}[/]: the run broke: {result.error}", soft_wrap=True)
    if not result.checks and result.status == "not_evaluated":
        console.print(f"[yellow]{result.scenario_id} not_evaluated[/]: the scenario has no checks", soft_wrap=True)
    for check in result.checks:
        if check.status != "passed":
            colour = "red" if check.status == "failed" else "yellow"
            console.print(
                f"[{colour}]{result.scenario_id} {check.status}[/] {check.check}: {check.reason}", soft_wrap=True
            )


def bench(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(None, help="Scenario files or folders; default: every shipped scenario."),
    domain: str | None = typer.Option(None, "--domain", help="Only scenarios of this domain."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the results as JSON here."),
    junit_out: Path | None = typer.Option(None, "--junit", help="Write the results as JUnit XML here."),
    allow_partial: bool = typer.Option(
        False, "--allow-partial", help="Count a partial scenario (none failed, some not evaluated) as passed."
    ),
    repeat: int = typer.Option(
        1, "--repeat", min=1, help="Run each scenario this many times (seeds --seed, --seed + 1, …): pass@1, pass^k."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Every agent's SYNTROPISM_SEED for the first run (default 0 when repeating)."
    ),
    agent: Path | None = typer.Option(
        None, "--agent", help="The agent under test (a file or folder, any language): run as each scenario's subject."
    ),
    keep_state: bool = typer.Option(False, "--keep-state", help="Keep each run's state folder (and say where)."),
    schema: bool = typer.Option(False, "--schema", help="Print the scenario JSON Schema and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show the logs of each scenario's system."),
) -> None:
    """Run benchmark scenarios on the real system and judge them from the event stream.

    A scenario passes only if at least one check was evaluated and none failed. Nothing evaluated: "not evaluated". Some checks not evaluated, none failed: "partial", passed only with --allow-partial.

    Exit codes: 0 every scenario passed; 1 a scenario failed or its run broke; 2 a scenario file unreadable or invalid (the others still run) or nothing to run; 3 nothing failed, but something was not evaluated. The lowest that applies wins.
    """  # noqa: E501 (one line per paragraph, so that the help wraps it to the terminal)
    if schema:
        print(json.dumps(scenario_json_schema(), indent=2))
        return
    judge_settings = run_user_facing(lambda: settings_for(ctx))
    if not verbose:  # every scenario starts and stops a system: its routine logs would bury the progress bar
        logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    agent_program = _agent_program(agent) if agent is not None else None
    files, missing = _scenario_files(paths or [], domain)
    entries: list[LoadedScenario | ScenarioResult] = [*missing, *_load_all(files, domain)]
    if not entries:
        err_console.print("no scenarios to run")
        raise typer.Exit(2)
    runnable = [entry for entry in entries if isinstance(entry, LoadedScenario)]
    bench_all = functools.partial(_bench, runnable, judge_settings, keep_state, repeat, seed, agent_program)
    ran = iter(run_async(bench_all) if runnable else [])
    results = [run for entry in entries for run in ([entry] if isinstance(entry, ScenarioResult) else next(ran))]
    console.print(_bench_summary(results, allow_partial))
    for result in results:
        _print_problems(result)
    if agent_program is not None:
        used = sum(bool(r.subject and r.subject["agent_under_test"]) for r in results)
        console.print(f"agent under test {agent_program}: the subject of {used} of {len(results)} scenario run(s)")
    console.print(summary_line(results, allow_partial))
    if json_out:
        write_json(results, json_out, allow_partial)
    if junit_out:
        write_junit(results, junit_out, allow_partial)
    code = exit_code(results, allow_partial)
    if code:
        raise typer.Exit(code)


async def _bench(
    loaded: list[LoadedScenario],
    judge_settings: Settings,
    keep_state: bool,
    repeat: int,
    seed: int | None,
    agent: str | None = None,
) -> list[list[ScenarioResult]]:
    """Each scenario's runs (``repeat`` of them), in order."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("scenarios", total=len(loaded) * repeat)
        async with BenchmarkRunner(keep_state=keep_state, judge_settings=judge_settings, agent=agent) as runner:
            results = []
            for scenario in loaded:
                progress.update(task, description=f"{scenario.scenario.scenario_id}: {scenario.scenario.name}")
                runs = await runner.run_many([scenario], lambda _: progress.advance(task), repeat=repeat, seed=seed)
                results.append(runs)
            if keep_state:
                err_console.print(f"state kept in {runner.work_dir}")
    return results
