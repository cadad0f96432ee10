"""Property-based requests generated from our own OpenAPI document never get a 5xx.

Schemathesis builds a Hypothesis strategy per operation of `FUZZ_MODULES` (positive cases
that fit the schema and negative ones that break it). Each case is sent through the test
client of the `client` fixture (so it runs on SQLite and PostgreSQL) with credentials that
pass every auth class: a fresh admin token per case (a case may log out, change the admin's
password or role) and the service token. Rate limits are off so the handlers are reached.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from starlette.testclient import TestClient

from credentials import SERVICE_TOKEN
from server.context import Services
from server.security import ACCESS
from server.store import users as user_store
from server.store.users import UserRecord

FUZZ_MODULES = ("auth", "email", "users", "handoff", "dialogs", "site", "operator")
BASE_URL = "http://testserver"
EXAMPLES_PER_MODE = {GenerationMode.POSITIVE: 20, GenerationMode.NEGATIVE: 5}
REQUEST_KEYS = ("method", "url", "headers", "params", "cookies", "json", "data", "files")


@pytest.fixture
def settings_env() -> dict[str, str]:
    return {"RATE_LIMIT_ENABLED": "false"}


def admin_headers(services: Services, admin_id: int) -> dict[str, str]:
    """Credentials for every auth class, with the admin restored if a case demoted it."""
    with services.db.write() as session:
        current = user_store.get_user(session, admin_id)
        assert current is not None, "the admin was deleted (self-deletion must be refused)"
        if current.role != "admin" or current.status != "active":
            current = user_store.update_user(session, admin_id, role="admin", status="active")
            assert current is not None
    issued = services.tokens.issue(current.id, current.email, current.token_version, ACCESS)
    return {"Authorization": f"Bearer {issued.token}", "X-Service-Token": SERVICE_TOKEN}


def send(client: TestClient, case: Any, headers: dict[str, str]) -> Any:
    """Prepare the request exactly as schemathesis's requests transport would, send it here."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    prepared = requests.Request(**{k: v for k, v in kwargs.items() if k in REQUEST_KEYS}).prepare()
    outgoing = {k: v for k, v in prepared.headers.items() if k.lower() != "content-length"}
    return client.request(
        prepared.method or "GET", prepared.url or BASE_URL, headers=outgoing, content=prepared.body
    )


def fuzz_operation(
    client: TestClient, services: Services, admin: UserRecord, operation: Any
) -> list[str]:
    failures = []
    for mode, examples in EXAMPLES_PER_MODE.items():

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            response = send(client, case, admin_headers(services, admin.id))
            case.validate_response(response, checks=[not_a_server_error])

        try:
            run()
        except Unsatisfiable:
            continue  # nothing in this operation can be made invalid (no inputs)
        except (AssertionError, FailureGroup) as exc:
            failures.append(f"{operation.label} [{mode.value}]: {exc}")
    return failures


def test_generated_requests_never_get_a_server_error(
    client: TestClient, services: Services, admin: UserRecord
) -> None:
    document = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document).include(tag=list(FUZZ_MODULES))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, f"no operations tagged {FUZZ_MODULES}"
    failures = []
    for operation in operations:
        failures += fuzz_operation(client, services, admin, operation)
    assert not failures, "\n\n".join(failures)
