"""Staff user management: POST /api/admin/users, GET …/detailed, PATCH …/{user_id}."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient
from tenant_data import Headers, MakeUser, add_tenant_data, audit_actions, count, stored

from credentials import DEFAULT_PASSWORD
from server.context import Services
from server.store.models import AuditLog, OpenAIToken, TelegramToken, UserBalance
from server.store.users import UserRecord

NEW_PASSWORD = "Another-pass-77"


# --- who may call -------------------------------------------------------------------------------

ADMIN_CALLS = [
    ("POST", "/api/admin/users"),
    ("GET", "/api/admin/users/detailed"),
    ("PATCH", "/api/admin/users/1"),
    ("DELETE", "/api/admin/users/1"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
def test_plain_user_gets_403(
    client: TestClient, user: UserRecord, auth_headers: Headers, method: str, path: str
) -> None:
    response = client.request(method, path, json={}, headers=auth_headers(user))
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
def test_no_token_gets_401(client: TestClient, method: str, path: str) -> None:
    assert client.request(method, path, json={}).status_code == 401


# --- POST /api/admin/users ----------------------------------------------------------------------


def _create(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    payload = {"email": "new.person@example.com", "password": NEW_PASSWORD} | body
    return client.post("/api/admin/users", json=payload, headers=headers)


def test_admin_creates_a_confirmed_active_user_with_zero_balance(
    client: TestClient, services: Services, admin: UserRecord, auth_headers: Headers
) -> None:
    response = _create(client, auth_headers(admin), first_name="Nina")
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "id": body["id"],
        "email": "new.person@example.com",
        "role": "user",
        "status": "active",
        "created_at": body["created_at"],
        "first_name": "Nina",
    }
    row = stored(services, body["id"])
    assert row is not None and row.is_email_confirmed
    assert services.hasher.verify(row.hashed_password, NEW_PASSWORD)
    assert count(services, UserBalance, user_id=body["id"]) == 1


def test_created_user_can_use_the_api(
    client: TestClient, services: Services, admin: UserRecord, auth_headers: Headers
) -> None:
    created = stored(services, _create(client, auth_headers(admin)).json()["id"])
    assert created is not None
    assert client.get("/api/me", headers=auth_headers(created)).json()["balance"] == 0


def test_create_lower_cases_the_email(
    client: TestClient, admin: UserRecord, auth_headers: Headers
) -> None:
    response = _create(client, auth_headers(admin), email="Mixed.Case@Example.COM")
    assert response.json()["email"] == "mixed.case@example.com"


def test_create_can_make_an_inactive_admin(
    client: TestClient, admin: UserRecord, auth_headers: Headers
) -> None:
    response = _create(client, auth_headers(admin), role="admin", status="inactive")
    assert (response.json()["role"], response.json()["status"]) == ("admin", "inactive")


def test_create_stores_legacy_tokens(
    client: TestClient, services: Services, admin: UserRecord, auth_headers: Headers
) -> None:
    response = _create(client, auth_headers(admin), ai_token="sk-old", telegram_token="1:tg")
    user_id = response.json()["id"]
    with services.db.read() as session:
        ai = session.execute(select(OpenAIToken.token).where(OpenAIToken.user_id == user_id))
        tg = session.execute(select(TelegramToken.token).where(TelegramToken.user_id == user_id))
        assert (ai.scalar_one(), tg.scalar_one()) == ("sk-old", "1:tg")


def test_create_refuses_a_taken_email_whatever_its_case(
    client: TestClient, make_user: MakeUser, admin: UserRecord, auth_headers: Headers
) -> None:
    make_user(email="taken@example.com")
    response = _create(client, auth_headers(admin), email="TAKEN@example.com")
    assert response.status_code == 400
    assert response.json()["code"] == "email_taken"


def test_create_refuses_an_invalid_email(
    client: TestClient, admin: UserRecord, auth_headers: Headers
) -> None:
    response = _create(client, auth_headers(admin), email="no-at-sign")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_email"


@pytest.mark.parametrize(("field", "value"), [("role", "manager"), ("status", "blocked"),
                                              ("status", "deleted")])
def test_create_refuses_an_invalid_role_or_status(
    client: TestClient, admin: UserRecord, auth_headers: Headers, field: str, value: str
) -> None:
    response = _create(client, auth_headers(admin), **{field: value})
    assert response.status_code == 400
    assert field in response.json()["detail"]


def test_create_refuses_a_weak_password(
    client: TestClient, services: Services, admin: UserRecord, auth_headers: Headers
) -> None:
    response = _create(client, auth_headers(admin), password="short1")
    assert response.status_code == 400
    assert response.json()["code"] == "weak_password"
    assert count(services, AuditLog, action="admin_create_user") == 0


def test_create_refuses_unknown_fields(
    client: TestClient, admin: UserRecord, auth_headers: Headers
) -> None:
    assert _create(client, auth_headers(admin), balance=100).status_code == 422


def test_create_refuses_a_missing_password(
    client: TestClient, admin: UserRecord, auth_headers: Headers
) -> None:
    response = client.post("/api/admin/users", json={"email": "a@example.com"},
                           headers=auth_headers(admin))
    assert response.status_code == 422


def test_create_is_audited(
    client: TestClient, services: Services, admin: UserRecord, auth_headers: Headers
) -> None:
    _create(client, auth_headers(admin))
    assert audit_actions(services, admin.id) == ["admin_create_user"]


class TestCreateRateLimit:
    @pytest.fixture
    def settings_env(self) -> dict[str, str]:
        return {"RATE_LIMITS": "admin_create_user=1/60"}

    def test_second_create_in_the_window_is_429(
        self, client: TestClient, admin: UserRecord, auth_headers: Headers
    ) -> None:
        assert _create(client, auth_headers(admin)).status_code == 200
        response = _create(client, auth_headers(admin), email="second@example.com")
        assert response.status_code == 429


# --- GET /api/admin/users/detailed --------------------------------------------------------------


def _detailed(client: TestClient, headers: dict[str, str], **params: Any) -> Any:
    return client.get("/api/admin/users/detailed", params=params, headers=headers)


def test_detailed_lists_users_with_stats(
    client: TestClient, services: Services, make_user: MakeUser, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    owner = make_user(first_name="Olga")
    add_tenant_data(services, owner.id, messages=3)
    response = _detailed(client, auth_headers(admin))
    assert response.status_code == 200
    body = response.json()
    assert body["pagination"] == {"page": 1, "limit": 50, "total": 2, "pages": 1}
    listed = {entry["id"]: entry for entry in body["users"]}
    entry = listed[owner.id]
    assert entry["email"] == owner.email
    assert entry["first_name"] == "Olga"
    assert (entry["role"], entry["status"], entry["is_email_confirmed"]) == ("user", "active", True)
    assert entry["created_at"].endswith("Z")
    stats = entry["stats"]
    assert (stats["totalDialogs"], stats["totalMessages"]) == (1, 3)
    assert (stats["totalAssistants"], stats["totalDocuments"]) == (1, 1)
    assert stats["lastActivity"].endswith("Z")
    assert listed[admin.id]["stats"]["lastActivity"] is None


def test_detailed_paginates(
    client: TestClient, make_user: MakeUser, admin: UserRecord, auth_headers: Headers
) -> None:
    for _ in range(4):
        make_user()
    first = _detailed(client, auth_headers(admin), page=1, limit=2).json()
    third = _detailed(client, auth_headers(admin), page=3, limit=2).json()
    assert first["pagination"] == {"page": 1, "limit": 2, "total": 5, "pages": 3}
    assert len(first["users"]) == 2
    assert len(third["users"]) == 1


def test_detailed_search_matches_email_or_first_name_ignoring_case(
    client: TestClient, make_user: MakeUser, admin: UserRecord, auth_headers: Headers
) -> None:
    by_email = make_user(email="needle.one@example.com")
    by_name = make_user(first_name="Big NEEDLE")
    make_user(email="hay@example.com")
    body = _detailed(client, auth_headers(admin), search="NeEdLe").json()
    assert {entry["id"] for entry in body["users"]} == {by_email.id, by_name.id}
    assert body["pagination"]["total"] == 2


def test_detailed_filters_by_status(
    client: TestClient, make_user: MakeUser, admin: UserRecord, auth_headers: Headers
) -> None:
    blocked = make_user(status="blocked")
    body = _detailed(client, auth_headers(admin), status="blocked").json()
    assert [entry["id"] for entry in body["users"]] == [blocked.id]


def test_detailed_of_an_empty_page_has_zero_pages(
    client: TestClient, admin: UserRecord, auth_headers: Headers
) -> None:
    body = _detailed(client, auth_headers(admin), status="inactive").json()
    assert body == {"users": [], "pagination": {"page": 1, "limit": 50, "total": 0, "pages": 0}}


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"page": 0}, {"page": "x"}])
def test_detailed_refuses_out_of_range_paging(
    client: TestClient, admin: UserRecord, auth_headers: Headers, params: dict[str, Any]
) -> None:
    response = _detailed(client, auth_headers(admin), **params)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


# --- PATCH /api/admin/users/{user_id} -----------------------------------------------------------


def _patch(client: TestClient, headers: dict[str, str], user_id: int, **body: Any) -> Any:
    return client.patch(f"/api/admin/users/{user_id}", json=body, headers=headers)


def test_update_changes_the_supplied_fields(
    client: TestClient, services: Services, user: UserRecord, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    response = _patch(client, auth_headers(admin), user.id, first_name="Pavel", role="admin")
    assert response.status_code == 200
    body = response.json()
    assert (body["first_name"], body["role"], body["status"]) == ("Pavel", "admin", "active")
    assert body["email"] == user.email
    assert isinstance(body["message"], str)
    row = stored(services, user.id)
    assert row is not None and (row.first_name, row.role) == ("Pavel", "admin")


def test_update_ignores_null_fields_and_an_empty_password(
    client: TestClient, services: Services, make_user: MakeUser, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    target = make_user(first_name="Kept")
    response = _patch(client, auth_headers(admin), target.id, email=None, role=None,
                      status=None, first_name=None, password="")
    assert response.status_code == 200
    row = stored(services, target.id)
    assert row == target


def test_update_of_an_unknown_user_is_404(
    client: TestClient, admin: UserRecord, auth_headers: Headers
) -> None:
    response = _patch(client, auth_headers(admin), 999_999, first_name="X")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_update_with_a_non_integer_id_is_422(
    client: TestClient, admin: UserRecord, auth_headers: Headers
) -> None:
    response = client.patch("/api/admin/users/abc", json={}, headers=auth_headers(admin))
    assert response.status_code == 422


@pytest.mark.parametrize(("field", "value"), [("role", "manager"), ("status", "deleted")])
def test_update_refuses_an_invalid_role_or_status(
    client: TestClient, user: UserRecord, admin: UserRecord, auth_headers: Headers,
    field: str, value: str,
) -> None:
    response = _patch(client, auth_headers(admin), user.id, **{field: value})
    assert response.status_code == 400


def test_update_refuses_a_taken_email(
    client: TestClient, make_user: MakeUser, user: UserRecord, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    other = make_user()
    response = _patch(client, auth_headers(admin), user.id, email=other.email.upper())
    assert response.status_code == 400
    assert response.json()["code"] == "email_taken"


def test_update_refuses_a_weak_password(
    client: TestClient, user: UserRecord, admin: UserRecord, auth_headers: Headers
) -> None:
    response = _patch(client, auth_headers(admin), user.id, password="password123")
    assert response.status_code == 400
    assert response.json()["code"] == "weak_password"


def test_update_refuses_unknown_fields(
    client: TestClient, user: UserRecord, admin: UserRecord, auth_headers: Headers
) -> None:
    assert _patch(client, auth_headers(admin), user.id, balance=5).status_code == 422


def test_password_change_rehashes_and_ends_existing_sessions(
    client: TestClient, services: Services, user: UserRecord, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    old_headers = auth_headers(user)
    assert _patch(client, auth_headers(admin), user.id, password=NEW_PASSWORD).status_code == 200
    row = stored(services, user.id)
    assert row is not None
    assert services.hasher.verify(row.hashed_password, NEW_PASSWORD)
    assert not services.hasher.verify(row.hashed_password, DEFAULT_PASSWORD)
    assert client.get("/api/me", headers=old_headers).status_code == 401
    assert client.get("/api/me", headers=auth_headers(row)).status_code == 200


def test_email_change_lower_cases_and_ends_existing_sessions(
    client: TestClient, services: Services, user: UserRecord, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    old_headers = auth_headers(user)
    response = _patch(client, auth_headers(admin), user.id, email="Renamed@Example.com")
    assert response.json()["email"] == "renamed@example.com"
    row = stored(services, user.id)
    assert row is not None and row.token_version == user.token_version + 1
    assert client.get("/api/me", headers=old_headers).status_code == 401


def test_blocking_ends_existing_sessions(
    client: TestClient, services: Services, user: UserRecord, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    old_headers = auth_headers(user)
    assert _patch(client, auth_headers(admin), user.id, status="blocked").status_code == 200
    assert client.get("/api/me", headers=old_headers).status_code == 401
    row = stored(services, user.id)
    assert row is not None and row.status == "blocked"


def test_renaming_keeps_existing_sessions(
    client: TestClient, user: UserRecord, admin: UserRecord, auth_headers: Headers
) -> None:
    old_headers = auth_headers(user)
    _patch(client, auth_headers(admin), user.id, first_name="Still In")
    assert client.get("/api/me", headers=old_headers).status_code == 200


@pytest.mark.parametrize("change", [{"role": "user"}, {"status": "blocked"},
                                    {"status": "inactive"}])
def test_admin_cannot_demote_or_lock_themselves(
    client: TestClient, services: Services, admin: UserRecord, auth_headers: Headers,
    change: dict[str, str],
) -> None:
    response = _patch(client, auth_headers(admin), admin.id, **change)
    assert response.status_code == 400
    assert response.json()["code"] == "self_action_forbidden"
    assert stored(services, admin.id) == admin


def test_admin_can_rename_themselves(
    client: TestClient, admin: UserRecord, auth_headers: Headers
) -> None:
    response = _patch(client, auth_headers(admin), admin.id, first_name="Boss", role="admin")
    assert response.status_code == 200


def test_update_is_audited_without_secrets(
    client: TestClient, services: Services, user: UserRecord, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    _patch(client, auth_headers(admin), user.id, password=NEW_PASSWORD, first_name="Z")
    with services.db.read() as session:
        details = session.execute(
            select(AuditLog.details).where(AuditLog.action == "admin_update_user")
        ).scalar_one()
    assert details == {"target_user_id": user.id, "fields": ["first_name", "password"]}
