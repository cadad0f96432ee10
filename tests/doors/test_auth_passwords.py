"""Doors of `auth` that set passwords: change-password, forgot/validate/reset (spec §4.1)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import httpx
import pytest
from fakes.outbox import latest_mail, mails, reset_token
from sqlalchemy import select
from starlette.testclient import TestClient

from credentials import DEFAULT_PASSWORD
from server.context import Services
from server.security import sha256_hex
from server.store import users as user_store
from server.store.models import AuditLog
from server.store.types import utcnow
from server.store.users import UserRecord

MakeUser = Callable[..., UserRecord]
NEW_PASSWORD = "Fresh-secret-77"


def login(client: TestClient, email: str, password: str = DEFAULT_PASSWORD) -> httpx.Response:
    return client.post("/api/login", data={"username": email, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def works(client: TestClient, access_token: str) -> bool:
    return client.post("/api/validate-token", headers=bearer(access_token)).status_code == 200


def refresh_works(client: TestClient, refresh_token: str) -> bool:
    response = client.post("/api/refresh-token", json={"refresh_token": refresh_token})
    return response.status_code == 200


def stored(services: Services, user_id: int) -> UserRecord:
    with services.db.read() as session:
        found = user_store.get_user(session, user_id)
    assert found is not None
    return found


def audited(services: Services, action: str) -> list[int | None]:
    with services.db.read() as session:
        rows = session.execute(
            select(AuditLog.user_id).where(AuditLog.action == action, AuditLog.success)
        )
        return [user_id for (user_id,) in rows]


# --- change-password ----------------------------------------------------------------------------


def change(client: TestClient, access_token: str, current: str = DEFAULT_PASSWORD,
           new: str = NEW_PASSWORD) -> httpx.Response:
    return client.post("/api/auth/change-password", headers=bearer(access_token),
                       json={"current_password": current, "new_password": new})


def test_change_password_returns_a_fresh_pair(client: TestClient, user: UserRecord) -> None:
    tokens = login(client, user.email).json()
    response = change(client, tokens["access_token"])
    assert response.status_code == 200
    body = response.json()
    assert body["message"] and body["token_type"] == "bearer"
    assert works(client, body["access_token"])
    assert refresh_works(client, body["refresh_token"])


def test_change_password_kills_old_access_and_refresh_tokens(
    client: TestClient, user: UserRecord
) -> None:
    other_session = login(client, user.email).json()
    tokens = login(client, user.email).json()
    change(client, tokens["access_token"])
    for old in (tokens, other_session):
        assert not works(client, old["access_token"])
        assert not refresh_works(client, old["refresh_token"])


def test_change_password_swaps_which_password_logs_in(client: TestClient, user: UserRecord) -> None:
    change(client, login(client, user.email).json()["access_token"])
    assert login(client, user.email).status_code == 401
    assert login(client, user.email, NEW_PASSWORD).status_code == 200


def test_change_password_with_a_wrong_current_password_is_400(
    client: TestClient, user: UserRecord
) -> None:
    tokens = login(client, user.email).json()
    response = change(client, tokens["access_token"], current="Not-mine-123")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_credentials"
    assert works(client, tokens["access_token"])


def test_change_password_to_a_weak_one_is_400(client: TestClient, user: UserRecord) -> None:
    tokens = login(client, user.email).json()
    response = change(client, tokens["access_token"], new="weak")
    assert response.status_code == 400
    assert response.json()["code"] == "weak_password"


def test_change_password_to_the_same_one_is_400(client: TestClient, user: UserRecord) -> None:
    tokens = login(client, user.email).json()
    response = change(client, tokens["access_token"], new=DEFAULT_PASSWORD)
    assert response.status_code == 400
    assert response.json()["code"] == "same_password"


def test_change_password_needs_a_token(client: TestClient) -> None:
    response = client.post("/api/auth/change-password",
                           json={"current_password": "a", "new_password": "b"})
    assert response.status_code == 401


def test_change_password_needs_both_fields(client: TestClient, user: UserRecord) -> None:
    tokens = login(client, user.email).json()
    response = client.post("/api/auth/change-password", headers=bearer(tokens["access_token"]),
                           json={"new_password": NEW_PASSWORD})
    assert response.status_code == 422


def test_change_password_is_audited(client: TestClient, services: Services,
                                    user: UserRecord) -> None:
    change(client, login(client, user.email).json()["access_token"])
    assert audited(services, "change_password") == [user.id]


# --- forgot-password ----------------------------------------------------------------------------


def forgot(client: TestClient, email: str, path: str = "/api/forgot-password") -> httpx.Response:
    return client.post(path, json={"email": email})


def test_forgot_password_answers_the_same_whether_or_not_the_account_exists(
    client: TestClient, user: UserRecord
) -> None:
    existing = forgot(client, user.email)
    unknown = forgot(client, "nobody@example.com")
    malformed = forgot(client, "not an address")
    assert existing.status_code == unknown.status_code == malformed.status_code == 200
    assert existing.json() == unknown.json() == malformed.json()
    assert set(existing.json()) == {"message"}


def test_forgot_password_mails_a_link_and_stores_only_its_hash(
    client: TestClient, services: Services, user: UserRecord
) -> None:
    before = utcnow()
    forgot(client, user.email.upper())
    mail = latest_mail(services, user.email, "password_reset")
    token = reset_token(services, user.email)
    assert f"{services.settings.frontend_url}/reset-password?token={token}" in mail.body_text
    record = stored(services, user.id)
    assert record.password_reset_hash == sha256_hex(token)
    ttl = dt.timedelta(seconds=services.settings.password_reset_ttl_secs)
    assert record.password_reset_expires is not None
    assert before + ttl <= record.password_reset_expires <= utcnow() + ttl


def test_forgot_password_for_an_unknown_email_mails_nothing(
    client: TestClient, services: Services
) -> None:
    forgot(client, "nobody@example.com")
    assert mails(services) == []


def test_forgot_password_alias_path(client: TestClient, services: Services,
                                    user: UserRecord) -> None:
    assert forgot(client, user.email, "/api/auth/forgot-password").status_code == 200
    assert reset_token(services, user.email)


@pytest.mark.parametrize("settings_env", [{"RATE_LIMITS": "password_reset_account=2/900"}])
def test_forgot_password_is_limited_per_ip_and_email(client: TestClient, user: UserRecord) -> None:
    forgot(client, user.email)
    forgot(client, user.email)
    response = forgot(client, user.email)
    assert response.status_code == 429
    assert "Retry-After" in response.headers
    assert forgot(client, "someone.else@example.com").status_code == 200


# --- validate-reset-token -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/validate-reset-token", "/api/auth/validate-reset-token"])
def test_validate_reset_token_accepts_a_live_token(
    client: TestClient, services: Services, user: UserRecord, path: str
) -> None:
    forgot(client, user.email)
    response = client.post(path, json={"token": reset_token(services, user.email)})
    assert response.status_code == 200
    assert response.json()["valid"] is True
    assert response.json()["message"]


def test_validate_reset_token_does_not_use_the_token(
    client: TestClient, services: Services, user: UserRecord
) -> None:
    forgot(client, user.email)
    token = reset_token(services, user.email)
    client.post("/api/validate-reset-token", json={"token": token})
    assert client.post("/api/validate-reset-token", json={"token": token}).status_code == 200


@pytest.mark.parametrize("body", [{"token": "made-up"}, {"token": ""}, {}])
def test_validate_reset_token_refuses_a_bad_or_missing_token(
    client: TestClient, body: dict[str, str]
) -> None:
    response = client.post("/api/validate-reset-token", json=body)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_reset_token"


# --- reset-password -----------------------------------------------------------------------------


def reset(client: TestClient, token: str, password: str = NEW_PASSWORD,
          path: str = "/api/reset-password") -> httpx.Response:
    return client.post(path, json={"token": token, "new_password": password})


@pytest.mark.parametrize("path", ["/api/reset-password", "/api/auth/reset-password"])
def test_reset_password_sets_the_new_password(
    client: TestClient, services: Services, user: UserRecord, path: str
) -> None:
    forgot(client, user.email)
    response = reset(client, reset_token(services, user.email), path=path)
    assert response.status_code == 200
    assert "message" in response.json()
    assert login(client, user.email).status_code == 401
    assert login(client, user.email, NEW_PASSWORD).status_code == 200


def test_reset_password_kills_old_access_and_refresh_tokens(
    client: TestClient, services: Services, user: UserRecord
) -> None:
    tokens = login(client, user.email).json()
    forgot(client, user.email)
    reset(client, reset_token(services, user.email))
    assert not works(client, tokens["access_token"])
    assert not refresh_works(client, tokens["refresh_token"])


def test_reset_token_works_once(client: TestClient, services: Services, user: UserRecord) -> None:
    forgot(client, user.email)
    token = reset_token(services, user.email)
    assert reset(client, token).status_code == 200
    second = reset(client, token, "Another-pass-88")
    assert second.status_code == 400
    assert second.json()["code"] == "invalid_reset_token"
    assert stored(services, user.id).password_reset_hash is None


def test_expired_reset_token_is_refused(client: TestClient, services: Services,
                                        user: UserRecord) -> None:
    forgot(client, user.email)
    token = reset_token(services, user.email)
    with services.db.write() as session:
        user_store.update_user(session, user.id,
                               password_reset_expires=utcnow() - dt.timedelta(seconds=1))
    response = reset(client, token)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_reset_token"
    invalid = client.post("/api/validate-reset-token", json={"token": token})
    assert invalid.status_code == 400


def test_only_the_latest_reset_token_works(client: TestClient, services: Services,
                                           user: UserRecord) -> None:
    forgot(client, user.email)
    first = reset_token(services, user.email)
    forgot(client, user.email)
    assert reset(client, first).status_code == 400
    assert reset(client, reset_token(services, user.email)).status_code == 200


def test_reset_password_applies_the_register_rules(
    client: TestClient, services: Services, user: UserRecord
) -> None:
    forgot(client, user.email)
    token = reset_token(services, user.email)
    response = reset(client, token, "short")
    assert response.status_code == 400
    assert response.json()["code"] == "weak_password"
    assert reset(client, token).status_code == 200  # a refused attempt does not use the link


def test_reset_password_with_a_made_up_token_is_400(client: TestClient) -> None:
    response = reset(client, "made-up-token")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_reset_token"


def test_reset_password_needs_both_fields(client: TestClient) -> None:
    assert client.post("/api/reset-password", json={"token": "x"}).status_code == 422


def test_reset_password_is_audited(client: TestClient, services: Services,
                                   user: UserRecord) -> None:
    forgot(client, user.email)
    reset(client, reset_token(services, user.email))
    assert audited(services, "reset_password") == [user.id]
