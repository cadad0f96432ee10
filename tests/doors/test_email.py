"""Doors of `email`: confirm_email, resend_email_code, test_send (spec §4.12, S5, S7)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import httpx
import pytest
from fakes.outbox import confirmation_code, latest_mail, mails
from fakes.smtp import SmtpSink, free_port, running_smtp_sink
from starlette.testclient import TestClient

from credentials import DEFAULT_PASSWORD, SERVICE_TOKEN
from server.context import Services
from server.store import users as user_store
from server.store.types import utcnow
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]
EMAIL = "fresh@example.com"


@pytest.fixture
def registered(client: TestClient) -> str:
    """An account that registered and has a code waiting in the outbox."""
    response = client.post("/api/register", json={"email": EMAIL, "password": DEFAULT_PASSWORD})
    assert response.status_code == 200
    return EMAIL


def confirm(client: TestClient, code: str, email: str = EMAIL) -> httpx.Response:
    return client.post("/api/confirm_email", json={"email": email, "code": code})


def resend(client: TestClient, email: str = EMAIL, **headers: str) -> httpx.Response:
    return client.post("/api/resend_email_code", json={"email": email}, headers=headers)


def stored(services: Services, email: str = EMAIL) -> UserRecord:
    with services.db.read() as session:
        found = user_store.get_user_by_email(session, email)
    assert found is not None
    return found


def wrong_code(right: str) -> str:
    return f"{(int(right) + 1) % 1_000_000:06d}"


# --- confirm_email ------------------------------------------------------------------------------


def test_confirm_email_signs_the_user_in(client: TestClient, services: Services,
                                         registered: str) -> None:
    response = confirm(client, confirmation_code(services, registered))
    assert response.status_code == 200
    body = response.json()
    assert body["message"] and body["token_type"] == "bearer"
    me = client.post("/api/validate-token",
                     headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.json()["email"] == registered
    refreshed = client.post("/api/refresh-token", json={"refresh_token": body["refresh_token"]})
    assert refreshed.status_code == 200


def test_confirm_email_marks_the_account_and_clears_the_code(
    client: TestClient, services: Services, registered: str
) -> None:
    confirm(client, confirmation_code(services, registered))
    user = stored(services)
    assert user.is_email_confirmed
    assert (user.email_code_hash, user.email_code_expires) == (None, None)


def test_confirm_email_sends_a_welcome_mail(client: TestClient, services: Services,
                                            registered: str) -> None:
    confirm(client, confirmation_code(services, registered))
    assert latest_mail(services, registered, "welcome").status == "kept"


def test_confirm_email_compares_the_address_case_insensitively(
    client: TestClient, services: Services, registered: str
) -> None:
    response = confirm(client, confirmation_code(services, registered), email="FRESH@Example.com")
    assert response.status_code == 200


def test_confirm_email_of_an_unknown_address_is_404(client: TestClient) -> None:
    response = confirm(client, "123456", email="nobody@example.com")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_confirm_email_twice_is_400(client: TestClient, services: Services,
                                    registered: str) -> None:
    code = confirmation_code(services, registered)
    confirm(client, code)
    response = confirm(client, code)
    assert response.status_code == 400
    assert response.json()["code"] == "email_already_confirmed"


def test_confirm_email_with_a_wrong_code_is_400_and_counted(
    client: TestClient, services: Services, registered: str
) -> None:
    response = confirm(client, wrong_code(confirmation_code(services, registered)))
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_code"
    assert stored(services).email_code_attempts == 1
    assert not stored(services).is_email_confirmed


def test_confirm_email_with_an_expired_code_is_400(
    client: TestClient, services: Services, registered: str
) -> None:
    with services.db.write() as session:
        user_store.update_user(session, stored(services).id,
                               email_code_expires=utcnow() - dt.timedelta(seconds=1))
    response = confirm(client, confirmation_code(services, registered))
    assert response.status_code == 400
    assert response.json()["code"] == "code_expired"


def test_five_wrong_codes_kill_the_code(client: TestClient, services: Services,
                                        registered: str) -> None:
    right = confirmation_code(services, registered)
    answers = [confirm(client, wrong_code(right)).json()["code"] for _ in range(5)]
    assert answers == ["invalid_code"] * 5
    response = confirm(client, right)
    assert response.status_code == 400
    assert response.json()["code"] == "too_many_attempts"
    assert stored(services).email_code_hash is None
    assert not stored(services).is_email_confirmed


def test_a_new_code_after_the_lockout_works(client: TestClient, services: Services,
                                            registered: str) -> None:
    right = confirmation_code(services, registered)
    for _ in range(5):
        confirm(client, wrong_code(right))
    assert resend(client).status_code == 200
    assert confirm(client, confirmation_code(services, registered)).status_code == 200


def test_confirm_email_needs_email_and_code(client: TestClient) -> None:
    response = client.post("/api/confirm_email", json={"email": EMAIL})
    assert response.status_code == 422


def test_confirm_email_of_a_blocked_account_is_403(
    client: TestClient, services: Services, registered: str
) -> None:
    with services.db.write() as session:
        user_store.update_user(session, stored(services).id, status="blocked")
    response = confirm(client, confirmation_code(services, registered))
    assert response.status_code == 403
    assert response.json()["code"] == "account_blocked"


# --- resend_email_code --------------------------------------------------------------------------


def test_resend_mails_a_new_code_and_the_old_one_dies(
    client: TestClient, services: Services, registered: str
) -> None:
    old = confirmation_code(services, registered)
    response = resend(client)
    assert response.status_code == 200
    new = confirmation_code(services, registered)
    assert len(mails(services, registered, "confirm_email")) == 2
    if new != old:  # one in a million the same code comes again
        assert confirm(client, old).json()["code"] == "invalid_code"
    assert confirm(client, new).status_code == 200


def test_resend_resets_the_attempts(client: TestClient, services: Services,
                                    registered: str) -> None:
    confirm(client, wrong_code(confirmation_code(services, registered)))
    resend(client)
    assert stored(services).email_code_attempts == 0


def test_resend_answers_the_same_for_an_unknown_address(client: TestClient,
                                                        registered: str) -> None:
    known = resend(client)
    unknown = resend(client, "nobody@example.com")
    assert known.status_code == unknown.status_code == 200
    assert known.json() == unknown.json()


def test_resend_for_an_unknown_address_mails_nothing(client: TestClient,
                                                     services: Services) -> None:
    resend(client, "nobody@example.com")
    assert mails(services) == []


def test_resend_for_a_confirmed_account_is_400(client: TestClient, user: UserRecord) -> None:
    response = resend(client, user.email)
    assert response.status_code == 400
    assert response.json()["code"] == "email_already_confirmed"


def test_resend_accepts_the_legacy_dummy_code(client: TestClient, registered: str) -> None:
    response = client.post("/api/resend_email_code", json={"email": EMAIL, "code": "000000"})
    assert response.status_code == 200


def test_resend_refuses_unknown_fields(client: TestClient) -> None:
    response = client.post("/api/resend_email_code", json={"email": EMAIL, "extra": 1})
    assert response.status_code == 422


def test_resend_is_limited_to_three_an_hour_per_ip(client: TestClient) -> None:
    answers = [resend(client, f"n{i}@example.com").status_code for i in range(4)]
    assert answers == [200, 200, 200, 429]


@pytest.mark.parametrize("settings_env", [{"TRUSTED_PROXY_IPS": "testclient"}])
def test_resend_is_limited_per_address_across_ips(client: TestClient, registered: str) -> None:
    answers = [
        resend(client, **{"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(4)
    ]
    assert answers == [200, 200, 200, 429]
    assert resend(client, "other@example.com", **{"X-Forwarded-For": "198.51.100.9"}
                  ).status_code == 200


# --- test_send ----------------------------------------------------------------------------------

TEST_SEND = "/api/test_send"
SERVICE_HEADERS = {"X-Service-Token": SERVICE_TOKEN}
REPORT_KEYS = {"message", "success", "server", "port", "ssl", "starttls", "username_configured",
               "from_email"}


def test_send_without_credentials_is_401(client: TestClient) -> None:
    assert client.post(TEST_SEND, params={"to": "ops@example.com"}).status_code == 401


def test_send_with_a_wrong_service_token_is_401(client: TestClient) -> None:
    response = client.post(TEST_SEND, params={"to": "ops@example.com"},
                           headers={"X-Service-Token": "wrong"})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_service_token"


def test_send_for_a_plain_user_is_403(client: TestClient, user: UserRecord,
                                      auth_headers: Headers) -> None:
    response = client.post(TEST_SEND, params={"to": "ops@example.com"},
                           headers=auth_headers(user))
    assert response.status_code == 403


def test_send_without_smtp_reports_failure_and_the_settings(client: TestClient,
                                                            services: Services) -> None:
    response = client.post(TEST_SEND, params={"to": "ops@example.com"}, headers=SERVICE_HEADERS)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == REPORT_KEYS
    assert body["success"] is False
    assert body["server"] is None
    assert body["from_email"] == services.settings.mail_from


def test_send_works_for_an_admin(client: TestClient, admin: UserRecord,
                                 auth_headers: Headers) -> None:
    response = client.post(TEST_SEND, params={"to": "ops@example.com"},
                           headers=auth_headers(admin))
    assert response.status_code == 200


def test_send_needs_a_valid_address(client: TestClient) -> None:
    missing = client.post(TEST_SEND, headers=SERVICE_HEADERS)
    malformed = client.post(TEST_SEND, params={"to": "nope"}, headers=SERVICE_HEADERS)
    assert missing.status_code == 422
    assert malformed.status_code == 400
    assert malformed.json()["code"] == "invalid_email"


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with running_smtp_sink() as sink:
        yield sink


class TestWithSmtp:
    @pytest.fixture
    def settings_env(self, smtp_sink: SmtpSink) -> dict[str, str]:
        return {"SMTP_URL": smtp_sink.url, "MAIL_FROM": "ReplyX <robot@example.com>"}

    def test_send_delivers_a_mail_over_smtp(self, client: TestClient,
                                            smtp_sink: SmtpSink) -> None:
        response = client.post(TEST_SEND, params={"to": "ops@example.com"},
                               headers=SERVICE_HEADERS)
        body = response.json()
        assert response.status_code == 200
        assert body["success"] is True
        assert (body["server"], body["port"], body["ssl"]) == ("127.0.0.1", smtp_sink.port, False)
        assert body["username_configured"] is False
        assert body["from_email"] == "ReplyX <robot@example.com>"
        assert smtp_sink.wait_for("ops@example.com")[0].subject == "ReplyX SMTP test"


class TestWithUnreachableSmtp:
    @pytest.fixture
    def settings_env(self) -> dict[str, str]:
        return {"SMTP_URL": f"smtp://mailer:s3cret-pw@127.0.0.1:{free_port()}",
                "SMTP_TIMEOUT_SECS": "5"}

    def test_send_failure_is_200_without_secrets_or_exception_text(
        self, client: TestClient
    ) -> None:
        response = client.post(TEST_SEND, params={"to": "ops@example.com"},
                               headers=SERVICE_HEADERS)
        assert response.status_code == 200
        body = response.json()
        assert body["success"] is False
        assert body["username_configured"] is True
        assert "s3cret-pw" not in response.text
        assert "Errno" not in response.text and "refused" not in response.text.lower()
