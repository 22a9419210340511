"""LLM-as-judge: a scenario's ``judge`` criteria scored by the configured model from the run's events.

The judge asks the OpenAI-compatible upstream that the intelligence service is configured with
(``llm_base_url``, ``llm_api_key``, ``llm_default_model``). Without one, or when no verdict can be had, the
check is reported as not evaluated, with the reason: it is never passed by default.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from syntropism.benchmarks.checks import CheckResult, EventJson, brief
from syntropism.benchmarks.scenario import Scenario
from syntropism.config import Settings

MAX_EVENTS_SHOWN = 300
FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def judge_prompt(scenario: Scenario, events: Sequence[EventJson]) -> str:
    assert scenario.validation.judge is not None
    criteria = "\n".join(f"{i}. {c}" for i, c in enumerate(scenario.validation.judge.criteria, start=1))
    shown = "\n".join(brief(e) for e in events[:MAX_EVENTS_SHOWN])
    more = f"\n… and {len(events) - MAX_EVENTS_SHOWN} more events" if len(events) > MAX_EVENTS_SHOWN else ""
    return (
        f"You judge a run of the benchmark scenario {scenario.scenario_id!r}: {scenario.description}\n\n"
        f"Its events, in stream order:\n{shown}{more}\n\nScore each criterion from 0 (not met) to 1 (fully met):\n"
        f"{criteria}\n\nAnswer with JSON only: "
        '{"scores": [{"criterion": <number>, "score": <0..1>, "why": "<one sentence>"}]}'
    )


@dataclass(frozen=True)
class Score:
    criterion: int  # 1-based, as the prompt numbers them
    score: float
    rationale: str  # the model's "why", as it gave it ("" when it gave none)


def parse_judgement(text: str, criteria_count: int) -> list[Score]:
    """One score (with the model's rationale) per criterion, in criterion order, from the model's answer;
    ValueError when it is not such an answer."""
    try:
        answer = json.loads(FENCE.sub("", text.strip()))
        entries = list(answer["scores"])
        scores = [float(entry["score"]) for entry in entries]
        whys = [str(entry.get("why") or entry.get("rationale") or "") for entry in entries]
        numbers = [entry.get("criterion") for entry in entries]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"the judge's answer is not the JSON asked for: {text[:200]!r}") from exc
    if len(scores) != criteria_count or not all(0 <= s <= 1 for s in scores):
        raise ValueError(f"the judge gave {len(scores)} scores in 0..1 for {criteria_count} criteria: {scores}")
    if sorted(n for n in numbers if isinstance(n, int)) != list(range(1, criteria_count + 1)):
        numbers = list(range(1, criteria_count + 1))  # not numbered (or not numbered right): taken in order
    return sorted((Score(n, s, w) for n, s, w in zip(numbers, scores, whys, strict=True)), key=lambda x: x.criterion)


def parse_verdict(text: str, criteria_count: int) -> list[float]:
    """The scores, one per criterion, from the model's answer; ValueError when it is not such an answer."""
    return [score.score for score in parse_judgement(text, criteria_count)]


async def judge_run(scenario: Scenario, events: Sequence[EventJson], settings: Settings | None) -> CheckResult:
    """The judge's check: passed or failed by the mean score against the threshold, recording the model that
    answered and each criterion's score and rationale (``details``); not evaluated without a verdict."""
    judge = scenario.validation.judge
    assert judge is not None
    name = f"judge ({len(judge.criteria)} criteria, threshold {judge.pass_threshold})"
    if settings is None or settings.llm_base_url is None:
        return CheckResult(name, "not_evaluated", "no model configured: set SYNTROPISM_LLM_BASE_URL to judge")
    model = judge.model or settings.llm_default_model
    headers = {"Authorization": f"Bearer {settings.llm_api_key}"} if settings.llm_api_key else {}
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": judge_prompt(scenario, events)}],
        "temperature": 0,
        **({"model": model} if model else {}),
    }
    url = f"{settings.llm_base_url.rstrip('/')}/chat/completions"
    try:
        async with httpx.AsyncClient(timeout=settings.llm_timeout_seconds) as client:
            response = await client.post(url, json=body, headers=headers)
        response.raise_for_status()
        answer = response.json()
        scores = parse_judgement(answer["choices"][0]["message"]["content"], len(judge.criteria))
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        return CheckResult(name, "not_evaluated", f"no verdict from the judge at {url}: {exc}")
    answered_by = answer.get("model") if isinstance(answer.get("model"), str) else None
    mean = sum(s.score for s in scores) / len(scores)
    details = {
        "model": answered_by or model,
        "requested_model": model,
        "mean": round(mean, 6),
        "pass_threshold": judge.pass_threshold,
        "criteria": [
            {"criterion": judge.criteria[s.criterion - 1], "score": s.score, "rationale": s.rationale} for s in scores
        ],
    }
    by = f" by {details['model']}" if details["model"] else ""
    verdict = f"mean score {mean:.2f} (scores {', '.join(f'{s.score:.2f}' for s in scores)}){by}"
    if mean >= judge.pass_threshold:
        return CheckResult(name, "passed", verdict, details=details)
    return CheckResult(name, "failed", f"{verdict} is below the threshold {judge.pass_threshold}", details=details)
