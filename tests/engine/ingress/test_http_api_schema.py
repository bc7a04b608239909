"""The OpenAPI document of API v1 validates, and the live API keeps to it under schemathesis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import hypothesis
import pytest
import schemathesis
from openapi_spec_validator import validate

from engine.ingress.api_models import openapi
from tests.engine.daemon_harness import daemon_settings, running_daemon

pytestmark = pytest.mark.anyio

KEY = {"Authorization": "Bearer demo"}
# Examples per operation: the whole run stays well under a minute on a loaded machine.
EXAMPLES = 40


def test_the_generated_document_is_valid_openapi_3_1() -> None:
    document = openapi(1000)
    validate(document)  # raises on any breach of the OpenAPI 3.1 schema
    assert document["openapi"] == "3.1.0"
    schemas = document["components"]["schemas"]
    # The request body is the NDJSON line's own Struct: one definition, not two.
    assert set(schemas["Submission"]["properties"]) >= {"to", "text", "from", "schedule_at"}
    assert schemas["Problem"]["required"] == ["type", "title", "status", "detail"]


def run_schemathesis(document: dict[str, Any], base_url: str) -> list[str]:
    """Every operation with generated requests (positive and negative); the failures."""
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        strategy = operation.as_strategy() | operation.as_strategy(
            schemathesis.GenerationMode.NEGATIVE
        )

        @hypothesis.settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        @hypothesis.given(case=strategy)
        def check(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(base_url=base_url, headers=KEY, timeout=10)

        try:
            check()
        except Exception as error:  # a failed check: name the operation and the breach
            failures.append(f"{operation.label}: {error}")
    return failures


@pytest.mark.slow
async def test_schemathesis_finds_no_server_error_and_no_breach_of_the_schema(
    tmp_path: Path,
) -> None:
    async with running_daemon(daemon_settings(tmp_path)) as daemon:
        async with httpx.AsyncClient(base_url=daemon.api_url) as client:
            document = (await client.get("/v1/openapi.json")).json()
        # schemathesis calls with a blocking client: from a worker thread, so the daemon
        # on this event loop keeps answering.
        failures = await anyio.to_thread.run_sync(run_schemathesis, document, daemon.api_url)
    assert failures == []
