"""GET/PATCH /api/me and POST /api/update-activity (spec §4.2)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from sqlalchemy import delete, select, update
from starlette.testclient import TestClient

from server.context import Services
from server.store import users as user_store
from server.store.models import UserBalance
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]


def _stored(services: Services, user_id: int) -> UserRecord:
    with services.db.read() as session:
        found = user_store.get_user(session, user_id)
    assert found is not None
    return found


# --- GET /api/me ------------------------------------------------------------------------------


def test_me_returns_profile_and_balance(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    with services.db.write() as session:
        session.execute(
            update(UserBalance)
            .where(UserBalance.user_id == user.id)
            .values(balance=Decimal("12.50"))
        )
    response = client.get("/api/me", headers=auth_headers(user))
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "id": user.id,
        "email": user.email,
        "role": "user",
        "status": "active",
        "created_at": body["created_at"],
        "first_name": "",
        "is_employee": False,
        "balance": 12.5,
    }
    assert body["created_at"].endswith("Z")


def test_me_shows_first_name_when_set(
    client: TestClient, make_user: Callable[..., UserRecord], auth_headers: Headers
) -> None:
    named = make_user(first_name="Анна")
    response = client.get("/api/me", headers=auth_headers(named))
    assert response.json()["first_name"] == "Анна"


def test_me_creates_missing_balance_row(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    with services.db.write() as session:
        session.execute(delete(UserBalance).where(UserBalance.user_id == user.id))
    response = client.get("/api/me", headers=auth_headers(user))
    assert response.status_code == 200
    assert response.json()["balance"] == 0
    with services.db.read() as session:
        rows = session.execute(select(UserBalance).where(UserBalance.user_id == user.id)).all()
    assert len(rows) == 1


def test_me_needs_a_token(client: TestClient) -> None:
    response = client.get("/api/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


# --- PATCH /api/me ----------------------------------------------------------------------------


def test_patch_me_sets_first_name_in_any_script(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    response = client.patch(
        "/api/me", json={"first_name": "Анна-Мария 2.0_x"}, headers=auth_headers(user)
    )
    assert response.status_code == 200
    assert response.json() == {
        "id": user.id,
        "email": user.email,
        "role": "user",
        "status": "active",
        "created_at": response.json()["created_at"],
        "first_name": "Анна-Мария 2.0_x",
    }
    assert _stored(services, user.id).first_name == "Анна-Мария 2.0_x"


def test_patch_me_ignores_a_valid_email_and_other_keys(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    response = client.patch(
        "/api/me",
        json={"email": "other@example.com", "role": "admin", "status": "blocked", "x": 1},
        headers=auth_headers(user),
    )
    assert response.status_code == 200
    stored = _stored(services, user.id)
    assert (stored.email, stored.role, stored.status) == (user.email, "user", "active")


def test_patch_me_rejects_a_malformed_email(
    client: TestClient, user: UserRecord, auth_headers: Headers
) -> None:
    response = client.patch(
        "/api/me", json={"first_name": "Ann", "email": "not-an-address"},
        headers=auth_headers(user),
    )
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == "email"


def test_patch_me_rejects_forbidden_characters_in_first_name(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    response = client.patch(
        "/api/me", json={"first_name": "<script>"}, headers=auth_headers(user)
    )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert body["detail"]["error"] == "validation_error"
    assert body["detail"]["field"] == "first_name"
    assert isinstance(body["detail"]["message"], str)
    assert _stored(services, user.id).first_name is None


def test_patch_me_rejects_an_empty_first_name(
    client: TestClient, user: UserRecord, auth_headers: Headers
) -> None:
    response = client.patch("/api/me", json={"first_name": "  "}, headers=auth_headers(user))
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == "first_name"


def test_patch_me_rejects_a_first_name_over_100_chars(
    client: TestClient, user: UserRecord, auth_headers: Headers
) -> None:
    response = client.patch("/api/me", json={"first_name": "a" * 101}, headers=auth_headers(user))
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == "first_name"


def test_patch_me_accepts_exactly_100_chars(
    client: TestClient, user: UserRecord, auth_headers: Headers
) -> None:
    response = client.patch("/api/me", json={"first_name": "a" * 100}, headers=auth_headers(user))
    assert response.status_code == 200


def test_patch_me_rejects_a_non_string_first_name(
    client: TestClient, user: UserRecord, auth_headers: Headers
) -> None:
    response = client.patch("/api/me", json={"first_name": 42}, headers=auth_headers(user))
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == "first_name"


def test_patch_me_rejects_a_non_object_body(
    client: TestClient, user: UserRecord, auth_headers: Headers
) -> None:
    response = client.patch("/api/me", json=["first_name"], headers=auth_headers(user))
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_patch_me_rejects_malformed_json(
    client: TestClient, user: UserRecord, auth_headers: Headers
) -> None:
    headers = auth_headers(user) | {"content-type": "application/json"}
    response = client.patch("/api/me", content=b"{nope", headers=headers)
    assert response.status_code == 422


def test_patch_me_without_first_name_changes_nothing(
    client: TestClient, make_user: Callable[..., UserRecord], auth_headers: Headers
) -> None:
    named = make_user(first_name="Kept")
    response = client.patch("/api/me", json={}, headers=auth_headers(named))
    assert response.status_code == 200
    assert response.json()["first_name"] == "Kept"


def test_patch_me_needs_a_token(client: TestClient) -> None:
    assert client.patch("/api/me", json={"first_name": "Ann"}).status_code == 401


# --- POST /api/update-activity ------------------------------------------------------------------


def test_update_activity_stamps_last_activity(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    assert _stored(services, user.id).last_activity is None
    response = client.post("/api/update-activity", headers=auth_headers(user))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["timestamp"].endswith("Z")
    stamped = _stored(services, user.id).last_activity
    assert stamped is not None
    assert stamped.isoformat().replace("+00:00", "Z")[:19] == body["timestamp"][:19]


def test_update_activity_needs_a_token(client: TestClient) -> None:
    assert client.post("/api/update-activity").status_code == 401
