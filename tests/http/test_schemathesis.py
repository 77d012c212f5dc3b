"""Property-based API testing with schemathesis against our own OpenAPI, authenticated.

Every generated request (bodies from the operation union, path parameters, channels...) must
get no 5xx and a response that matches the documented schema, status codes and content type.
The operations are driven with hypothesis directly (schemathesis' pytest plugin does not load
on pytest 9). Failed-login rate limiting is off here (tested in test_api.py): schemathesis
probes bad credentials on purpose and expects 401, not 429.
"""

from __future__ import annotations

import base64

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from adapters.server.bootstrap import build
from adapters.server.settings import load_settings

AUTH = {"Authorization": "Basic " + base64.b64encode(b"alice:alice-pw").decode()}


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> schemathesis.BaseSchema:
    server = build(
        load_settings(
            data_dir=tmp_path_factory.mktemp("schemathesis"),
            smtp_listen_port=0,
            login_max_failures=1_000_000,
        ),
        demo_passwords={"alice": "alice-pw", "bob": "bob-pw"},
    )
    return schemathesis.openapi.from_asgi("/openapi.json", server.app)


def test_every_operation_conforms(api_schema: schemathesis.BaseSchema) -> None:
    checked = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=30,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def conforms(case: schemathesis.Case) -> None:
            # Schema-valid bodies may still break business rules (an address email-validator
            # refuses, an unknown queue): a 400 is right for those, so that check is off.
            case.call_and_validate(
                headers=AUTH, excluded_checks=[schemathesis.checks.positive_data_acceptance]
            )

        conforms()
        checked.append(operation.label)
    assert len(checked) >= 10, checked
