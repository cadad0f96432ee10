"""Bad input never reaches a 5xx: every refusal is a 4xx JSON `{"detail", "code"}`.

Endpoints are taken generically from the registered ones of `BAD_INPUT_MODULES`, with the
credentials their auth class needs (an admin token and the service token), so the request
gets past authentication and the parsing itself is what is tested. Each test walks every
endpoint it applies to and reports all the endpoints that misbehave at once. Rate limits
are off here: the same client sends many requests to one endpoint.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel
from starlette.testclient import TestClient

from credentials import SERVICE_TOKEN
from server.app import all_endpoints
from server.http.routing import MAX_DB_ID, PATH_PARAM, Endpoint
from server.store.users import UserRecord

BAD_INPUT_MODULES = frozenset({"auth", "email", "users"})
SMALL_BODY_LIMIT_BYTES = 2048
NO_LIMITS = {"RATE_LIMIT_ENABLED": "false"}
WRONG_TYPE = {"wrong": ["type"]}
GARBAGE_BODIES: tuple[tuple[bytes, str], ...] = (
    (b"", "application/json"),
    (b"null", "application/json"),
    (b'"text"', "application/json"),
    (b"1e999", "application/json"),
    (b"[" * 500 + b"]" * 500, "application/json"),
    (b'{"a":' * 300 + b"1" + b"}" * 300, "application/json"),
    (b"\xff\xfe\x00{", "application/json"),
    (b'{"email": "a\\u0000b@example.com", "password": "x\\u0000", "token": "\\ud800"}',
     "application/json"),
    (b'{"step": 123456789012345678901234567890, "tip_id": 1e400, "page": -1}',
     "application/json"),
    (b"username=a&password=b", "application/json"),
    (b'{"username": "a"}', "application/x-www-form-urlencoded"),
    (b"username=%ff%fe&password=%00", "application/x-www-form-urlencoded"),
    (b"hello", "text/plain"),
)
NON_INTEGER_IDS = ("abc", "-1", "1.5", "1e3", "%201", "0x10", "%D9%A1")  # last: Arabic-Indic 1
OUT_OF_RANGE_IDS = (str(MAX_DB_ID + 1), "99999999999999999999", "9" * 400)

ENDPOINTS = [endpoint for endpoint in all_endpoints() if endpoint.module in BAD_INPUT_MODULES]
BODY_ENDPOINTS = [endpoint for endpoint in ENDPOINTS if endpoint.body is not None]
UPLOAD_ENDPOINTS = [e for e in ENDPOINTS if e.body is not None or e.form is not None]
ID_ENDPOINTS = [endpoint for endpoint in ENDPOINTS if endpoint.int_params]
QUERY_ENDPOINTS = [endpoint for endpoint in ENDPOINTS if endpoint.query is not None]


@pytest.fixture
def settings_env() -> dict[str, str]:
    return dict(NO_LIMITS)


@pytest.fixture
def credentials(
    admin: UserRecord, auth_headers: Callable[[UserRecord], dict[str, str]]
) -> dict[str, str]:
    return auth_headers(admin) | {"X-Service-Token": SERVICE_TOKEN}


# --- helpers ----------------------------------------------------------------------------------


def concrete_path(template: str, value: str = "1") -> str:
    """The path with every `{param}` replaced by `value`."""
    return PATH_PARAM.sub(value, template)


def _name(endpoint: Endpoint) -> str:
    return f"{endpoint.method} {endpoint.path}"


def _required_fields(model: type[BaseModel]) -> set[str]:
    return {name for name, field in model.model_fields.items() if field.is_required()}


def _typed(annotation: Any) -> bool:
    """False for fields that accept any JSON value (so no value can be the wrong type)."""
    if annotation is Any or annotation is dict or get_origin(annotation) is dict:
        return False
    if get_origin(annotation) in (Union, types.UnionType):
        return all(_typed(arg) for arg in get_args(annotation) if arg is not type(None))
    return not (isinstance(annotation, type) and issubclass(annotation, BaseModel))


def _typed_fields(model: type[BaseModel]) -> set[str]:
    return {name for name, field in model.model_fields.items() if _typed(field.annotation)}


def _int_fields(model: type[BaseModel]) -> list[str]:
    return [
        name
        for name, field in model.model_fields.items()
        if field.annotation is int or int in get_args(field.annotation)
    ]


def refusal(response: Any, *statuses: int) -> dict[str, Any]:
    """The JSON error body of a 4xx (one of `statuses` when given); fails on anything else."""
    assert response.status_code < 500, f"server error {response.status_code}: {response.text}"
    assert 400 <= response.status_code < 500, f"accepted {response.status_code}: {response.text}"
    if statuses:
        assert response.status_code in statuses, f"{response.status_code}: {response.text}"
    body = response.json()
    assert set(body) == {"detail", "code"}, body
    assert isinstance(body["code"], str) and body["code"], body
    return body


def for_each(endpoints: Iterable[Endpoint], check: Callable[[Endpoint], None]) -> None:
    """Run `check` on every endpoint; report every endpoint that failed, not only the first."""
    failures = []
    for endpoint in endpoints:
        try:
            check(endpoint)
        except AssertionError as exc:
            failures.append(f"{_name(endpoint)}: {exc}")
    assert not failures, "\n".join(failures)


def send(
    client: TestClient,
    endpoint: Endpoint,
    headers: dict[str, str],
    content: bytes | Iterator[bytes],
    content_type: str = "application/json",
    path: str | None = None,
) -> Any:
    return client.request(
        endpoint.method,
        path or concrete_path(endpoint.path),
        content=content,
        headers=headers | {"Content-Type": content_type},
    )


def test_there_are_endpoints_to_check() -> None:
    assert BODY_ENDPOINTS and ID_ENDPOINTS and UPLOAD_ENDPOINTS


# --- JSON bodies ------------------------------------------------------------------------------


def test_malformed_json_is_422(client: TestClient, credentials: dict[str, str]) -> None:
    def check(endpoint: Endpoint) -> None:
        body = refusal(send(client, endpoint, credentials, b'{"email": "a@b.c",'), 422)
        assert body["code"] == "invalid_json", body

    for_each(BODY_ENDPOINTS, check)


def test_json_array_instead_of_object_is_422(
    client: TestClient, credentials: dict[str, str]
) -> None:
    def check(endpoint: Endpoint) -> None:
        body = refusal(send(client, endpoint, credentials, b'[{"email": "a@b.c"}]'), 422)
        assert body["code"] == "validation_error", body

    for_each(BODY_ENDPOINTS, check)


def test_wrong_types_are_422_naming_the_fields(
    client: TestClient, credentials: dict[str, str]
) -> None:
    def check(endpoint: Endpoint) -> None:
        assert endpoint.body is not None
        payload = {name: WRONG_TYPE for name in endpoint.body.model_fields}
        response = send(client, endpoint, credentials, json.dumps(payload).encode())
        body = refusal(response, 422)
        assert body["code"] == "validation_error", body
        named = {error["loc"][1] for error in body["detail"] if len(error["loc"]) > 1}
        assert named & _typed_fields(endpoint.body), body
        assert "wrong" not in response.text, "the input was echoed back"

    for_each([e for e in BODY_ENDPOINTS if e.body and _typed_fields(e.body)], check)


def test_missing_required_fields_are_422(client: TestClient, credentials: dict[str, str]) -> None:
    def check(endpoint: Endpoint) -> None:
        model = endpoint.body or endpoint.form
        assert model is not None
        as_json = endpoint.body is not None
        content_type = "application/json" if as_json else "application/x-www-form-urlencoded"
        body = refusal(send(client, endpoint, credentials, b"{}" if as_json else b"",
                            content_type), 422)
        missing = {error["loc"][-1] for error in body["detail"] if error["type"] == "missing"}
        assert missing == _required_fields(model), body

    for_each([e for e in UPLOAD_ENDPOINTS if _required_fields(e.body or e.form)], check)  # type: ignore[arg-type]


def test_unknown_fields_on_strict_bodies_are_422(
    client: TestClient, credentials: dict[str, str]
) -> None:
    def check(endpoint: Endpoint) -> None:
        payload = json.dumps({"definitely_not_a_field": 1}).encode()
        body = refusal(send(client, endpoint, credentials, payload), 422)
        assert any(
            error["type"] == "extra_forbidden"
            and error["loc"] == ["body", "definitely_not_a_field"]
            for error in body["detail"]
        ), body

    strict = [e for e in BODY_ENDPOINTS if e.body and e.body.model_config.get("extra") == "forbid"]
    for_each(strict, check)


def test_nul_characters_in_input_are_422(client: TestClient, credentials: dict[str, str]) -> None:
    def check(endpoint: Endpoint) -> None:
        if endpoint.body is not None:
            payload = {name: "nul\x00inside" for name in endpoint.body.model_fields}
            response = send(client, endpoint, credentials, json.dumps(payload).encode())
        elif endpoint.form is not None:
            fields = "&".join(f"{name}=nul%00inside" for name in endpoint.form.model_fields)
            response = send(client, endpoint, credentials, fields.encode(),
                            "application/x-www-form-urlencoded")
        else:
            assert endpoint.query is not None
            params = {name: "nul\x00inside" for name in endpoint.query.model_fields}
            response = client.request(endpoint.method, concrete_path(endpoint.path),
                                      params=params, headers=credentials)
        assert refusal(response, 422)["code"] == "validation_error"

    inputs = [e for e in ENDPOINTS if e.body or e.form or e.query]
    for_each(inputs, check)


def test_garbage_bodies_never_cause_a_server_error(
    client: TestClient, credentials: dict[str, str]
) -> None:
    def check(endpoint: Endpoint) -> None:
        for content, content_type in GARBAGE_BODIES:
            response = send(client, endpoint, credentials, content, content_type)
            assert response.status_code < 500, f"{content[:40]!r}: {response.text}"
            if response.status_code >= 400:
                refusal(response)

    for_each(ENDPOINTS, check)


# --- body size --------------------------------------------------------------------------------

SMALL_LIMIT = NO_LIMITS | {"MAX_REQUEST_BODY_BYTES": str(SMALL_BODY_LIMIT_BYTES)}


@pytest.mark.parametrize("settings_env", [SMALL_LIMIT])
def test_oversized_body_is_413(client: TestClient, credentials: dict[str, str]) -> None:
    padding = "x" * (SMALL_BODY_LIMIT_BYTES * 2)

    def check(endpoint: Endpoint) -> None:
        if endpoint.body is not None:
            content, kind = json.dumps({"padding": padding}).encode(), "application/json"
        else:
            content, kind = f"padding={padding}".encode(), "application/x-www-form-urlencoded"
        body = refusal(send(client, endpoint, credentials, content, kind), 413)
        assert body["code"] == "payload_too_large", body

    for_each(UPLOAD_ENDPOINTS, check)


@pytest.mark.parametrize("settings_env", [SMALL_LIMIT])
def test_oversized_streamed_body_without_length_is_413(
    client: TestClient, credentials: dict[str, str]
) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(8):
            yield b"x" * 1024

    def check(endpoint: Endpoint) -> None:
        body = refusal(send(client, endpoint, credentials, chunks()), 413)
        assert body["code"] == "payload_too_large", body

    for_each(UPLOAD_ENDPOINTS, check)


# --- path ids and query strings ---------------------------------------------------------------


def test_non_integer_ids_are_422(client: TestClient, credentials: dict[str, str]) -> None:
    def check(endpoint: Endpoint) -> None:
        for raw_id in NON_INTEGER_IDS:
            path = concrete_path(endpoint.path, raw_id)
            body = refusal(send(client, endpoint, credentials, b"{}", path=path), 422)
            assert body["code"] == "validation_error", (raw_id, body)

    for_each(ID_ENDPOINTS, check)


def test_ids_beyond_the_database_range_are_404(
    client: TestClient, credentials: dict[str, str]
) -> None:
    def check(endpoint: Endpoint) -> None:
        for raw_id in OUT_OF_RANGE_IDS:
            path = concrete_path(endpoint.path, raw_id)
            body = refusal(send(client, endpoint, credentials, b"{}", path=path), 404)
            assert body["code"] == "not_found", (raw_id, body)

    for_each(ID_ENDPOINTS, check)


def test_admin_user_ids_that_are_not_numbers_or_too_big_are_4xx(
    client: TestClient, credentials: dict[str, str]
) -> None:
    huge = client.patch("/api/admin/users/99999999999999999999", json={}, headers=credentials)
    assert refusal(huge, 404)["code"] == "not_found"
    wrong = client.delete("/api/admin/users/abc", headers=credentials)
    assert refusal(wrong, 422)["code"] == "validation_error"


def test_non_integer_query_numbers_are_422(client: TestClient, credentials: dict[str, str]) -> None:
    def check(endpoint: Endpoint) -> None:
        assert endpoint.query is not None
        params = {name: "abc" for name in _int_fields(endpoint.query)}
        response = client.request(
            endpoint.method, concrete_path(endpoint.path), params=params, headers=credentials
        )
        assert refusal(response, 422)["code"] == "validation_error"

    for_each([e for e in QUERY_ENDPOINTS if e.query and _int_fields(e.query)], check)


def test_hostile_query_strings_never_cause_a_server_error(
    client: TestClient, credentials: dict[str, str]
) -> None:
    def check(endpoint: Endpoint) -> None:
        assert endpoint.query is not None
        for value in ("", "\x00", "%", "9" * 400, "-1", "1e999", "🙂" * 50, "a" * 5000):
            params = {name: value for name in endpoint.query.model_fields}
            response = client.request(
                endpoint.method, concrete_path(endpoint.path), params=params, headers=credentials
            )
            assert response.status_code < 500, (value, response.text)
            if response.status_code >= 400:
                refusal(response)

    for_each(QUERY_ENDPOINTS, check)
