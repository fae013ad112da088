"""Schemathesis against the gateway's own OpenAPI description: no input yields a 5xx from the gateway.

Cases come from schemathesis' generators for each operation, driven by hypothesis
directly (its pytest plugin is not used), and are sent to a live gateway whose
upstream is the simulated provider.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from cascadeflow.gateway.openapi import openapi_spec

OPERATIONS = [result.ok() for result in schemathesis.openapi.from_dict(openapi_spec()).get_all_operations()]


@pytest.mark.parametrize("operation", OPERATIONS, ids=[f"{op.method.upper()} {op.path}" for op in OPERATIONS])
def test_no_server_errors(operation, gateway):
    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        response = case.call(base_url=gateway.url)
        assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
        if response.status_code >= 400:
            assert "error" in response.json()

    run()


def test_the_description_is_served(gateway):
    import httpx

    served = httpx.get(gateway.url + "/openapi.json").json()
    assert served == openapi_spec() and "/v1/messages" in served["paths"]
