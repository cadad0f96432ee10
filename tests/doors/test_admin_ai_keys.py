"""Admin AI key pool doors: keys are never returned, limits and usage are real."""

from __future__ import annotations

from collections.abc import Callable

import anyio
from starlette.testclient import TestClient

from fakes.fixtures import fake_openai  # noqa: F401
from fakes.openai_server import FakeOpenAI, reply
from server.ai.llm import LlmGateway
from server.context import Services
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]
SECRET = "sk-admin-secret-0001"


def _add(client: TestClient, headers: dict[str, str], **fields: object) -> dict:
    body = {"name": "main", "token": SECRET, **fields}
    response = client.post("/api/admin/ai-tokens", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_added_key_is_listed_without_its_secret(client: TestClient, admin: UserRecord,
                                                auth_headers: Headers) -> None:
    created = _add(client, auth_headers(admin), model_access="gpt-4o-mini, gpt-4o", priority=2)
    assert created["model_access"] == "gpt-4o-mini,gpt-4o"
    listing = client.get("/api/admin/ai-tokens", headers=auth_headers(admin))
    assert SECRET not in listing.text and SECRET not in str(created)
    [key] = listing.json()
    assert key["models"] == ["gpt-4o-mini", "gpt-4o"]
    assert (key["daily_usage"], key["daily_usage_percent"], key["priority"]) == (0, 0.0, 2)


def test_duplicate_key_is_409(client: TestClient, admin: UserRecord, auth_headers: Headers) -> None:
    _add(client, auth_headers(admin))
    again = client.post("/api/admin/ai-tokens", json={"name": "copy", "token": SECRET},
                        headers=auth_headers(admin))
    assert again.status_code == 409 and again.json()["code"] == "conflict"


def test_update_and_delete_change_the_key_and_unknown_ids_are_404(
    client: TestClient, admin: UserRecord, auth_headers: Headers
) -> None:
    key_id = _add(client, auth_headers(admin))["id"]
    updated = client.put(f"/api/admin/ai-tokens/{key_id}",
                         json={"daily_limit": 5, "is_active": False, "name": "renamed"},
                         headers=auth_headers(admin))
    assert updated.status_code == 200
    [key] = client.get("/api/admin/ai-tokens", headers=auth_headers(admin)).json()
    assert (key["daily_limit"], key["is_active"], key["name"]) == (5, False, "renamed")
    assert client.delete(f"/api/admin/ai-tokens/{key_id}",
                         headers=auth_headers(admin)).status_code == 200
    for method in ("PUT", "DELETE"):
        missing = client.request(method, "/api/admin/ai-tokens/9999", json={"name": "x"},
                                 headers=auth_headers(admin))
        assert missing.status_code == 404


def test_bad_key_bodies_are_422(client: TestClient, admin: UserRecord, auth_headers: Headers) -> None:
    for body in ({"name": "x", "token": "short"}, {"name": "x", "token": SECRET, "priority": 0},
                 {"name": "x", "token": SECRET, "model_access": "gpt 4o;drop"},
                 {"name": "x", "token": SECRET, "surprise": 1},
                 {"name": "x", "token": SECRET, "base_url": "ftp://example"}):
        response = client.post("/api/admin/ai-tokens", json=body, headers=auth_headers(admin))
        assert response.status_code == 422, body


def test_plain_users_cannot_touch_the_pool(client: TestClient, user: UserRecord,
                                           auth_headers: Headers) -> None:
    assert client.get("/api/admin/ai-tokens", headers=auth_headers(user)).status_code == 403
    assert client.post("/api/admin/ai-tokens", json={"name": "x", "token": SECRET},
                       headers=auth_headers(user)).status_code == 403


def test_usage_shows_calls_made_with_the_key(
    client: TestClient, services: Services, admin: UserRecord, auth_headers: Headers,
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    key_id = _add(client, auth_headers(admin), base_url=fake_openai.base_url)["id"]
    fake_openai.enqueue(reply("pong"))

    async def call_model() -> str:
        async with LlmGateway(services.settings, services.db) as gateway:
            return await gateway.complete_chat([{"role": "user", "content": "ping"}],
                                               model="gpt-4o-mini")

    assert anyio.run(call_model) == "pong"
    usage = client.get(f"/api/admin/ai-tokens/{key_id}/usage", headers=auth_headers(admin)).json()
    assert len(usage) == 1
    assert (usage[0]["requests"], usage[0]["successful_requests"]) == (1, 1)
    [key] = client.get("/api/admin/ai-tokens", headers=auth_headers(admin)).json()
    assert key["daily_usage"] == 1
    assert client.get("/api/admin/ai-tokens/9999/usage",
                      headers=auth_headers(admin)).json() == []
