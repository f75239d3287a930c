"""Property-based fuzzing of every HTTP operation in the gateway's OpenAPI schema with schemathesis (positive and
negative examples), against a real gateway process on a real Redis: no input may produce a 5xx.

Bounded (a fixed number of examples per operation) so it stays well under 30 s on 2 cores.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from runcast.gateway.app import create_app
from tests.support.processes import GatewayProcess, WorkerProcess

EXAMPLES_PER_OPERATION = 25

schema = schemathesis.openapi.from_dict(create_app().openapi())
schema.config.generation.update(max_examples=EXAMPLES_PER_OPERATION)


@pytest.fixture(scope="module")
def deployment(gateway_proc: GatewayProcess, worker_proc: WorkerProcess) -> str:
    return gateway_proc.url


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here is reproducible, never flaky
    suppress_health_check=list(HealthCheck),
)
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case, deployment: str) -> None:
    response = case.call(base_url=deployment, timeout=10)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}\n"
        f"reproduce: {case.as_curl_command()}"
    )
