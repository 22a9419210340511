"""Schema-driven fuzzing of the System Service (schemathesis against the served OpenAPI): whatever an agent or
the operator sends, the service answers without a server error, and the ledger invariant holds after each call."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from syntropism.api.app import create_app
from tests.support.api import OPERATOR, Api, running_api
from tests.support.fake_llm import fake_llm

EXAMPLES_PER_OPERATION = 12


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with (
        fake_llm() as (llm_url, _calls),
        running_api(tmp_path_factory.mktemp("fuzz") / "state", llm_base_url=llm_url) as built,
    ):
        workspace = built.services.social.workspace_of("alice")
        workspace.mkdir(parents=True, exist_ok=True)
        (workspace / "main.py").write_text("print('code to spawn from')\n")  # something to spawn from
        yield built


# The schema the service publishes; requests then go over real HTTP to the server the fixture runs.
OPENAPI = create_app(None).openapi()  # type: ignore[arg-type] # the schema needs no services
schema = schemathesis.openapi.from_dict(OPENAPI)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,  # deterministic: the same examples on every run
    suppress_health_check=list(HealthCheck),
)
def test_no_request_makes_the_service_fail_or_breaks_the_ledger(case: schemathesis.Case, fuzzed: Api) -> None:
    token = (
        OPERATOR
        if case.path.startswith("/admin")
        else fuzzed.tokens.setdefault("alice", fuzzed.start_execution("alice"))
    )
    response = case.call(base_url=fuzzed.url, headers={"Authorization": f"Bearer {token}"})
    failure = f"{case.method} {case.formatted_path} → {response.status_code}: {response.text}"
    assert response.status_code < 500, failure
    if response.status_code >= 400:
        body = response.json()
        assert {"error", "reason", "detail"} <= set(body), body
    report = fuzzed.services.ledger.verify()
    assert report.ok, report


def test_the_fuzzed_schema_is_the_served_one(fuzzed: Api) -> None:
    assert fuzzed.http.get("/openapi.json").json() == OPENAPI
    operations = {f"{op.method.upper()} {op.path}" for op in (r.ok() for r in schema.get_all_operations())}
    assert {"POST /economic/transfer", "POST /market/bid", "POST /social/spawn", "POST /admin/agents"} <= operations
