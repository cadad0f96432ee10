"""Doors of `auth`: register, login, logout, refresh-token, validate-token (spec §4.1, §5)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fakes.outbox import code_in, latest_mail, mails
from sqlalchemy import select
from starlette.testclient import TestClient

from credentials import DEFAULT_PASSWORD
from server.context import Services
from server.security import ACCESS, REFRESH, PasswordHasher, TokenService, keyed_hash
from server.store import users as user_store
from server.store.models import AuditLog, OpenAIToken
from server.store.types import utcnow
from server.store.users import UserRecord

MakeUser = Callable[..., UserRecord]
Headers = Callable[[UserRecord], dict[str, str]]


def register(client: TestClient, email: str = "new@example.com", **extra: Any) -> httpx.Response:
    return client.post(
        "/api/register", json={"email": email, "password": DEFAULT_PASSWORD, **extra}
    )


def login(client: TestClient, email: str, password: str = DEFAULT_PASSWORD,
          **extra: str) -> httpx.Response:
    return client.post("/api/login", data={"username": email, "password": password, **extra})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stored_user(services: Services, email: str) -> UserRecord:
    with services.db.read() as session:
        found = user_store.get_user_by_email(session, email)
    assert found is not None
    return found


def audit_rows(services: Services, action: str) -> list[AuditLog]:
    with services.db.read() as session:
        rows = session.execute(select(AuditLog).where(AuditLog.action == action)).scalars()
        return list(rows)


def identity(client: TestClient, access_token: str) -> httpx.Response:
    return client.post("/api/validate-token", headers=bearer(access_token))


# --- register -----------------------------------------------------------------------------------


def test_register_returns_user_read(client: TestClient) -> None:
    response = register(client, first_name="Ada")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "email", "role", "status", "created_at", "first_name"}
    assert (body["email"], body["role"], body["status"], body["first_name"]) == (
        "new@example.com", "user", "active", "Ada",
    )
    assert body["created_at"].endswith("Z")


def test_register_creates_an_unconfirmed_account(client: TestClient, services: Services) -> None:
    register(client)
    assert stored_user(services, "new@example.com").is_email_confirmed is False


def test_register_ignores_role_status_and_legacy_tokens(
    client: TestClient, services: Services
) -> None:
    response = register(client, role="admin", status="blocked", ai_token="sk-x",
                        telegram_token="123:abc")
    assert response.status_code == 200
    assert (response.json()["role"], response.json()["status"]) == ("user", "active")
    with services.db.read() as session:
        assert session.execute(select(OpenAIToken)).first() is None


def test_register_refuses_unknown_fields(client: TestClient) -> None:
    response = register(client, is_email_confirmed=True)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_register_needs_email_and_password(client: TestClient) -> None:
    response = client.post("/api/register", json={"email": "x@example.com"})
    assert response.status_code == 422


def test_register_lowercases_and_strips_markup_from_email(client: TestClient) -> None:
    response = register(client, email=' <Mixed.Case@Example.COM>" ')
    assert response.status_code == 200
    assert response.json()["email"] == "mixed.case@example.com"


@pytest.mark.parametrize("email", ["plainaddress", "a@b", "two@@example.com", "",
                                   "x" * 250 + "@example.com"])
def test_register_refuses_malformed_email(client: TestClient, email: str) -> None:
    response = register(client, email=email)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_email"


@pytest.mark.parametrize("password", ["short1", "onlyletters", "12345678901", "password123",
                                      "a1" * 65])
def test_register_refuses_weak_password(client: TestClient, password: str) -> None:
    response = client.post("/api/register", json={"email": "n@example.com", "password": password})
    assert response.status_code == 400
    assert response.json()["code"] == "weak_password"


def test_register_refuses_taken_email_in_any_case(client: TestClient) -> None:
    assert register(client, email="dup@example.com").status_code == 200
    response = register(client, email="DUP@example.com")
    assert response.status_code == 400
    assert response.json()["code"] == "email_taken"


def test_register_cleans_and_caps_first_name(client: TestClient) -> None:
    response = register(client, first_name="  <b>" + "n" * 200)
    assert response.json()["first_name"] == "b" + "n" * 99


def test_register_mails_a_code_stored_only_as_keyed_hash(
    client: TestClient, services: Services
) -> None:
    before = utcnow()
    register(client)
    mail = latest_mail(services, "new@example.com", "confirm_email")
    assert mail.status == "kept"  # no SMTP_URL: the embedded default keeps mails
    code = code_in(mail.body_text)
    user = stored_user(services, "new@example.com")
    assert user.email_code_hash == keyed_hash(
        services.settings.secret_key or "", "new@example.com", code
    )
    assert code not in (user.email_code_hash or "")
    assert user.email_code_attempts == 0
    ttl = dt.timedelta(seconds=services.settings.email_code_ttl_secs)
    assert user.email_code_expires is not None
    assert before + ttl <= user.email_code_expires <= utcnow() + ttl


@pytest.mark.parametrize(
    "settings_env", [{"ADMIN_NOTIFY_EMAILS": "ops@example.com,boss@example.com"}]
)
def test_register_notifies_the_configured_admins(client: TestClient, services: Services) -> None:
    register(client)
    for admin_addr in ("ops@example.com", "boss@example.com"):
        notice = latest_mail(services, admin_addr, "admin_new_user")
        assert "new@example.com" in notice.body_text


def test_register_without_admin_addresses_sends_no_notice(
    client: TestClient, services: Services
) -> None:
    register(client)
    assert [mail.kind for mail in mails(services)] == ["confirm_email"]


def test_register_writes_an_audit_row(client: TestClient, services: Services) -> None:
    user_id = register(client).json()["id"]
    assert [(row.user_id, row.success) for row in audit_rows(services, "register")] == [
        (user_id, True)
    ]


@pytest.mark.parametrize("settings_env", [{"RATE_LIMITS": "register=2/3600"}])
def test_register_rate_limit_answers_429_with_headers(client: TestClient) -> None:
    assert register(client, email="one@example.com").status_code == 200
    assert register(client, email="two@example.com").status_code == 200
    response = register(client, email="three@example.com")
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["X-RateLimit-Limit"] == "2"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert int(response.headers["X-RateLimit-Reset"]) > 0


# --- login --------------------------------------------------------------------------------------


def test_login_returns_an_access_and_a_refresh_token(
    client: TestClient, services: Services, user: UserRecord
) -> None:
    response = login(client, user.email)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert services.tokens.decode(body["access_token"], ACCESS).user_id == user.id
    assert services.tokens.decode(body["refresh_token"], REFRESH).user_id == user.id


def test_login_tolerates_oauth2_extras(client: TestClient, user: UserRecord) -> None:
    response = login(client, user.email, grant_type="password", scope="", client_id="web",
                     client_secret="x")
    assert response.status_code == 200


def test_login_compares_email_lower_cased(client: TestClient, user: UserRecord) -> None:
    assert login(client, user.email.upper()).status_code == 200


def test_login_wrong_password_and_unknown_email_answer_the_same(
    client: TestClient, user: UserRecord
) -> None:
    wrong_password = login(client, user.email, "Wrong-pass-99")
    unknown = login(client, "nobody@example.com")
    assert wrong_password.status_code == unknown.status_code == 401
    assert wrong_password.json() == unknown.json()
    assert wrong_password.json()["code"] == "invalid_credentials"
    assert unknown.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("status", "code"), [("blocked", "account_blocked"), ("inactive", "account_inactive")]
)
def test_login_of_a_disabled_account_is_403(
    client: TestClient, make_user: MakeUser, status: str, code: str
) -> None:
    account = make_user(status=status)
    response = login(client, account.email)
    assert response.status_code == 403
    assert response.json()["code"] == code


def test_login_of_a_disabled_account_with_wrong_password_is_401(
    client: TestClient, make_user: MakeUser
) -> None:
    account = make_user(status="blocked")
    assert login(client, account.email, "Wrong-pass-99").status_code == 401


def test_login_before_email_confirmation_is_403(client: TestClient, make_user: MakeUser) -> None:
    account = make_user(confirmed=False)
    response = login(client, account.email)
    assert response.status_code == 403
    assert response.json()["code"] == "email_not_confirmed"


def test_admin_logs_in_without_email_confirmation(client: TestClient, make_user: MakeUser) -> None:
    account = make_user(role="admin", confirmed=False)
    assert login(client, account.email).status_code == 200


def test_login_needs_username_and_password(client: TestClient) -> None:
    response = client.post("/api/login", data={"username": "a@example.com"})
    assert response.status_code == 422


def test_login_takes_a_form_not_json(client: TestClient, user: UserRecord) -> None:
    response = client.post("/api/login", json={"username": user.email,
                                                "password": DEFAULT_PASSWORD})
    assert response.status_code == 422


def test_login_audits_success_and_failure(
    client: TestClient, services: Services, user: UserRecord
) -> None:
    login(client, user.email, "Wrong-pass-99")
    login(client, "nobody@example.com")
    login(client, user.email)
    rows = [(row.user_id, row.success) for row in audit_rows(services, "login")]
    assert rows == [(user.id, False), (None, False), (user.id, True)]
    assert all("password" not in row.details for row in audit_rows(services, "login"))


@pytest.mark.parametrize("settings_env", [{"RATE_LIMITS": "login_account=2/300"}])
def test_login_is_limited_per_ip_and_account(client: TestClient, user: UserRecord,
                                              make_user: MakeUser) -> None:
    login(client, user.email, "Wrong-pass-99")
    login(client, user.email, "Wrong-pass-99")
    response = login(client, user.email)
    assert response.status_code == 429
    assert "Retry-After" in response.headers
    assert login(client, make_user().email).status_code == 200


def test_login_upgrades_an_outdated_hash(
    client: TestClient, services: Services, make_user: MakeUser
) -> None:
    account = make_user()
    older = PasswordHasher(time_cost=2, memory_kib=2048, parallelism=1).hash(DEFAULT_PASSWORD)
    with services.db.write() as session:
        user_store.update_user(session, account.id, hashed_password=older)
    assert login(client, account.email).status_code == 200
    upgraded = stored_user(services, account.email).hashed_password
    assert upgraded != older
    assert not services.hasher.needs_rehash(upgraded)
    assert login(client, account.email).status_code == 200


# --- tokens on the guard, validate-token --------------------------------------------------------


def test_validate_token_answers_who_the_token_belongs_to(
    client: TestClient, user: UserRecord, auth_headers: Headers
) -> None:
    response = client.post("/api/validate-token", headers=auth_headers(user))
    assert response.status_code == 200
    assert response.json() == {"valid": True, "user_id": user.id, "email": user.email,
                               "role": "user"}


def test_validate_token_without_a_token_is_401(client: TestClient) -> None:
    response = client.post("/api/validate-token")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_refresh_token_is_refused_as_access_token(
    client: TestClient, user: UserRecord, refresh_token_for: Callable[[UserRecord], str]
) -> None:
    response = identity(client, refresh_token_for(user))
    assert response.status_code == 401


def test_expired_access_token_is_401(client: TestClient, services: Services,
                                     user: UserRecord) -> None:
    issuer = TokenService(services.settings.secret_key or "", -5, 30)
    token = issuer.issue(user.id, user.email, user.token_version, ACCESS).token
    response = identity(client, token)
    assert response.status_code == 401
    assert response.json()["code"] == "token_expired"


# --- logout -------------------------------------------------------------------------------------


def test_logout_makes_the_access_token_401(client: TestClient, user: UserRecord) -> None:
    tokens = login(client, user.email).json()
    response = client.post("/api/logout", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert "message" in response.json()
    after = identity(client, tokens["access_token"])
    assert after.status_code == 401
    assert after.json()["code"] == "token_revoked"


def test_logout_leaves_other_sessions_alive(client: TestClient, user: UserRecord) -> None:
    first = login(client, user.email).json()
    second = login(client, user.email).json()
    client.post("/api/logout", headers=bearer(first["access_token"]))
    assert identity(client, second["access_token"]).status_code == 200


def test_logout_revokes_the_refresh_token_sent_in_the_body(
    client: TestClient, user: UserRecord
) -> None:
    tokens = login(client, user.email).json()
    client.post("/api/logout", headers=bearer(tokens["access_token"]),
                json={"refresh_token": tokens["refresh_token"]})
    response = client.post("/api/refresh-token", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 401


def test_logout_keeps_the_refresh_token_when_not_sent(client: TestClient, user: UserRecord) -> None:
    tokens = login(client, user.email).json()
    client.post("/api/logout", headers=bearer(tokens["access_token"]))
    response = client.post("/api/refresh-token", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 200


def test_logout_does_not_revoke_another_users_refresh_token(
    client: TestClient, user: UserRecord, make_user: MakeUser
) -> None:
    other = login(client, make_user().email).json()
    mine = login(client, user.email).json()
    client.post("/api/logout", headers=bearer(mine["access_token"]),
                json={"refresh_token": other["refresh_token"]})
    response = client.post("/api/refresh-token", json={"refresh_token": other["refresh_token"]})
    assert response.status_code == 200


def test_logout_with_an_unusable_refresh_token_still_logs_out(
    client: TestClient, user: UserRecord
) -> None:
    tokens = login(client, user.email).json()
    response = client.post("/api/logout", headers=bearer(tokens["access_token"]),
                           json={"refresh_token": "garbage"})
    assert response.status_code == 200
    assert identity(client, tokens["access_token"]).status_code == 401


def test_logout_needs_a_token(client: TestClient) -> None:
    assert client.post("/api/logout").status_code == 401


# --- refresh-token ------------------------------------------------------------------------------


def refresh(client: TestClient, token: str) -> httpx.Response:
    return client.post("/api/refresh-token", json={"refresh_token": token})


def test_refresh_returns_a_new_pair_and_the_identity(client: TestClient, user: UserRecord) -> None:
    tokens = login(client, user.email).json()
    response = refresh(client, tokens["refresh_token"])
    assert response.status_code == 200
    body = response.json()
    assert (body["token_type"], body["user_id"], body["email"]) == ("bearer", user.id, user.email)
    assert body["refresh_token"] != tokens["refresh_token"]
    assert identity(client, body["access_token"]).status_code == 200


def test_refresh_rotation_lets_the_new_refresh_token_work(
    client: TestClient, user: UserRecord
) -> None:
    first = login(client, user.email).json()
    second = refresh(client, first["refresh_token"]).json()
    assert refresh(client, second["refresh_token"]).status_code == 200


def test_reusing_a_refresh_token_ends_every_session(client: TestClient, user: UserRecord) -> None:
    first = login(client, user.email).json()
    rotated = refresh(client, first["refresh_token"]).json()
    reuse = refresh(client, first["refresh_token"])
    assert reuse.status_code == 401
    assert reuse.json()["code"] == "token_revoked"
    assert refresh(client, rotated["refresh_token"]).status_code == 401
    assert identity(client, rotated["access_token"]).status_code == 401
    assert identity(client, first["access_token"]).status_code == 401
    assert login(client, user.email).status_code == 200  # the password still works


@pytest.mark.parametrize("body", [{}, {"refresh_token": ""}, {"refresh_token": None}])
def test_refresh_without_a_token_is_400(client: TestClient, body: dict[str, Any]) -> None:
    response = client.post("/api/refresh-token", json=body)
    assert response.status_code == 400


def test_refresh_refuses_an_access_token(client: TestClient, user: UserRecord,
                                         auth_headers: Headers) -> None:
    access = auth_headers(user)["Authorization"].split()[1]
    assert refresh(client, access).status_code == 401


def test_refresh_refuses_garbage(client: TestClient) -> None:
    response = refresh(client, "not-a-jwt")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


def test_refresh_refuses_an_expired_token(client: TestClient, services: Services,
                                          user: UserRecord) -> None:
    issuer = TokenService(services.settings.secret_key or "", 60, -1)
    token = issuer.issue(user.id, user.email, user.token_version, REFRESH).token
    response = refresh(client, token)
    assert response.status_code == 401
    assert response.json()["code"] == "token_expired"


def test_refresh_for_a_deleted_account_is_401(
    client: TestClient, services: Services, user: UserRecord,
    refresh_token_for: Callable[[UserRecord], str],
) -> None:
    token = refresh_token_for(user)
    with services.db.write() as session:
        user_store.delete_user(session, user.id)
    assert refresh(client, token).status_code == 401


def test_refresh_before_email_confirmation_is_403(
    client: TestClient, make_user: MakeUser, refresh_token_for: Callable[[UserRecord], str]
) -> None:
    response = refresh(client, refresh_token_for(make_user(confirmed=False)))
    assert response.status_code == 403
    assert response.json()["code"] == "email_not_confirmed"


def test_refresh_for_a_blocked_account_is_403(
    client: TestClient, make_user: MakeUser, refresh_token_for: Callable[[UserRecord], str]
) -> None:
    response = refresh(client, refresh_token_for(make_user(status="blocked")))
    assert response.status_code == 403
    assert response.json()["code"] == "account_blocked"


def test_refresh_token_of_an_older_token_version_is_401(
    client: TestClient, services: Services, user: UserRecord,
    refresh_token_for: Callable[[UserRecord], str],
) -> None:
    token = refresh_token_for(user)
    with services.db.write() as session:
        user_store.bump_token_version(session, user.id)
    assert refresh(client, token).status_code == 401


def test_register_then_login_needs_the_mailed_code(client: TestClient, services: Services) -> None:
    register(client, email="flow@example.com")
    assert login(client, "flow@example.com").status_code == 403
    code = code_in(latest_mail(services, "flow@example.com", "confirm_email").body_text)
    confirmed = client.post("/api/confirm_email", json={"email": "flow@example.com", "code": code})
    assert confirmed.status_code == 200
    assert login(client, "flow@example.com").status_code == 200
    assert [m.kind for m in mails(services, "flow@example.com")] == ["confirm_email", "welcome"]
