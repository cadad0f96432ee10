"""Admin balance top-up and the legacy per-user OpenAI key, through the app."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]


def test_topup_adds_exact_decimals(client: TestClient, admin: UserRecord, user: UserRecord,
                                   auth_headers: Headers) -> None:
    url = f"/api/admin/users/{user.id}/balance/topup"
    first = client.post(url, json={"amount": 10.1}, headers=auth_headers(admin))
    second = client.post(url, json={"amount": "0.2", "description": "bonus"},
                         headers=auth_headers(admin))
    assert first.status_code == 200, first.text
    assert second.json()["old_balance"] == 10.1
    assert second.json()["new_balance"] == 10.3
    me = client.get("/api/me", headers=auth_headers(user))
    if me.status_code == 200:  # the users module may report it too
        assert me.json()["balance"] == 10.3


def test_topup_refuses_a_negative_result_and_bad_amounts(
    client: TestClient, admin: UserRecord, user: UserRecord, auth_headers: Headers
) -> None:
    url = f"/api/admin/users/{user.id}/balance/topup"
    assert client.post(url, json={"amount": -1}, headers=auth_headers(admin)).status_code == 400
    for bad in (0, "abc", True, 0.001, None, 1e12):
        response = client.post(url, json={"amount": bad}, headers=auth_headers(admin))
        assert response.status_code == 422, (bad, response.text)
    assert client.post(url, json={}, headers=auth_headers(admin)).status_code == 422


def test_topup_unknown_user_is_404_and_plain_user_is_403(
    client: TestClient, admin: UserRecord, user: UserRecord, auth_headers: Headers
) -> None:
    missing = client.post("/api/admin/users/999999/balance/topup", json={"amount": 5},
                          headers=auth_headers(admin))
    assert missing.status_code == 404
    forbidden = client.post(f"/api/admin/users/{user.id}/balance/topup", json={"amount": 5},
                            headers=auth_headers(user))
    assert forbidden.status_code == 403


def test_legacy_openai_token_upsert_and_read(client: TestClient, admin: UserRecord,
                                             user: UserRecord, auth_headers: Headers) -> None:
    url = f"/api/admin/openai-token/{user.id}"
    assert client.get(url, headers=auth_headers(admin)).status_code == 404
    created = client.post(url, json={"token": "sk-one"}, headers=auth_headers(admin))
    updated = client.post(url, json={"token": "sk-two"}, headers=auth_headers(admin))
    assert created.status_code == 200 and updated.json()["id"] == created.json()["id"]
    read = client.get(url, headers=auth_headers(admin)).json()
    assert read["token"] == "sk-two" and read["user_id"] == user.id
    assert read["created_at"].endswith("Z")
    assert client.post("/api/admin/openai-token/999999", json={"token": "x"},
                       headers=auth_headers(admin)).status_code == 404
