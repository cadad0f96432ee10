"""Operations doors: health, readiness, metrics, the OpenAPI document and the docs page."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR, OPENAPI_31_VALIDATOR
from starlette.testclient import TestClient

from server.app import create_app
from server.context import Services
from server.http import system
from server.store.db import Database
from server.store.users import UserRecord

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")
CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"
CLOSED_PORT_POSTGRES = "postgresql://postgres@127.0.0.1:1/replyx"


# --- health and readiness ---------------------------------------------------------------------


def test_health_answers_ok(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_health_does_not_touch_the_database(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(_self: Database) -> None:
        raise AssertionError("health must not reach the database")

    monkeypatch.setattr(Database, "ping", refuse)
    assert client.get("/health").status_code == 200


def test_ready_reports_database_ok_and_redis_not_configured(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "not_configured"},
    }


@pytest.mark.skipif(not TEST_REDIS_URL, reason="Redis not configured: set TEST_REDIS_URL")
@pytest.mark.parametrize("settings_env", [{"REDIS_URL": TEST_REDIS_URL or ""}])
def test_ready_checks_redis_when_configured(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok"}


def test_ready_is_503_when_the_database_is_unreachable(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(_self: Database) -> None:
        raise ConnectionRefusedError("connection refused")

    monkeypatch.setattr(Database, "ping", unreachable)
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {
        "detail": {"checks": {"database": "error", "redis": "not_configured"}},
        "code": "service_unavailable",
    }


@pytest.mark.parametrize("settings_env", [{"DATABASE_URL": CLOSED_PORT_POSTGRES}])
def test_ready_is_503_when_the_database_server_refuses_connections(services: Services) -> None:
    # No lifespan: start-up itself needs the database; the probes must work without it.
    client = TestClient(create_app(services=services), raise_server_exceptions=False)
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["detail"]["checks"]["database"] in {"error", "timeout"}
    assert client.get("/health").status_code == 200


@pytest.fixture
def hung_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    release = threading.Event()

    def hang(_self: Database) -> None:
        release.wait(30)

    monkeypatch.setattr(Database, "ping", hang)
    monkeypatch.setattr(system, "READY_CHECK_TIMEOUT_SECS", 0.2)
    yield
    release.set()


def test_ready_gives_up_on_a_hung_database_with_503(
    client: TestClient, hung_database: None
) -> None:
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["detail"]["checks"]["database"] == "timeout"


@pytest.mark.parametrize("settings_env", [{"REDIS_URL": CLOSED_PORT_REDIS}])
def test_ready_is_503_when_redis_is_down(client: TestClient) -> None:
    response = client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "service_unavailable"
    assert body["detail"]["checks"]["database"] == "ok"
    assert body["detail"]["checks"]["redis"] in {"error", "timeout"}


def test_readiness_aliases_under_api_answer_too(client: TestClient) -> None:
    assert client.get("/api/healthz").json() == {"status": "ok"}
    assert client.get("/api/readyz").json()["status"] == "ready"


# --- metrics ----------------------------------------------------------------------------------


def _metric_lines(client: TestClient) -> list[str]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text.splitlines()


def test_metrics_count_requests_by_route_template_not_raw_id(
    client: TestClient,
    admin: UserRecord,
    auth_headers: Callable[[UserRecord], dict[str, str]],
) -> None:
    client.delete("/api/admin/users/424242", headers=auth_headers(admin))
    client.get("/api/me", headers=auth_headers(admin))
    lines = _metric_lines(client)
    assert any(
        line.startswith("http_requests_total{")
        and 'route="/api/admin/users/{user_id}"' in line
        and 'method="DELETE"' in line
        for line in lines
    )
    assert any('route="/api/me"' in line and 'status="200"' in line for line in lines)
    assert not any("424242" in line for line in lines)


def test_metrics_label_unmatched_paths_as_one_route(client: TestClient) -> None:
    client.get("/api/no-such-thing/987654")
    lines = _metric_lines(client)
    assert any('route="unmatched"' in line and 'status="404"' in line for line in lines)
    assert not any("987654" in line for line in lines)


def test_metrics_have_a_latency_histogram(client: TestClient) -> None:
    client.get("/health")
    lines = _metric_lines(client)
    assert any(
        re.match(r'http_request_duration_seconds_bucket\{.*route="/health"', line)
        for line in lines
    )


# --- OpenAPI ----------------------------------------------------------------------------------


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_openapi_lists_every_registered_endpoint(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    endpoints = client.app.state.endpoints  # type: ignore[attr-defined]
    for endpoint in endpoints:
        operation = document["paths"][endpoint.path][endpoint.method.lower()]
        assert operation["tags"] == [endpoint.module]
        parameters = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "path"}
        for name in endpoint.int_params:
            assert parameters[name]["schema"]["type"] == "integer"
    listed = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert listed == {(e.method, e.path) for e in endpoints}


def test_openapi_is_valid_and_every_reference_resolves(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    OPENAPI_31_VALIDATOR.validate(document)
    schemas = document["components"]["schemas"]
    assert "ErrorBody" in schemas
    for ref in _refs(document):
        assert ref.rsplit("/", 1)[1] in schemas


def test_openapi_document_is_built_once_per_app(client: TestClient) -> None:
    first = client.get("/openapi.json").json()
    cached = client.app.state.openapi_document  # type: ignore[attr-defined]
    second = client.get("/openapi.json").json()
    assert first == second
    assert client.app.state.openapi_document is cached  # type: ignore[attr-defined]


def test_docs_openapi_30_rendering_is_valid(client: TestClient) -> None:
    document = client.get("/docs/openapi-3.0.json").json()
    OPENAPI_30_VALIDATOR.validate(document)


# --- docs page --------------------------------------------------------------------------------


def test_docs_page_loads_without_any_external_url(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in response.text
    assert "http://" not in response.text and "https://" not in response.text


def test_docs_static_assets_are_served_locally(client: TestClient) -> None:
    page = client.get("/docs").text
    assets = re.findall(r'(?:src|href)="(/docs/static/[^"]+)"', page)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
    assert any(asset.endswith("swagger-ui.css") for asset in assets)
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert response.content


def test_docs_page_points_at_a_document_the_server_serves(client: TestClient) -> None:
    page = client.get("/docs").text
    url = re.search(r'url: "([^"]+)"', page)
    assert url is not None
    assert client.get(url.group(1)).status_code == 200


def test_unknown_docs_asset_is_json_404(client: TestClient) -> None:
    response = client.get("/docs/static/no-such-file.js")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
