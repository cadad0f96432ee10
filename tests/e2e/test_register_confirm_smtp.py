"""Sign-up end to end over real SMTP: register → the code arrives at an SMTP server on
loopback → confirm_email with it → the access token it returns is accepted.

The app runs its real mail dispatcher (started by the lifespan, woken after the register
transaction commits); the SMTP server is aiosmtpd in a thread of the test process.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes.outbox import code_in, mails
from fakes.smtp import SmtpSink, running_smtp_sink
from starlette.testclient import TestClient

from credentials import DEFAULT_PASSWORD
from server.context import Services
from server.mail import SENT

EMAIL = "newcomer@example.com"
ADMIN_INBOX = "signups@example.com"


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with running_smtp_sink() as sink:
        yield sink


@pytest.fixture
def settings_env(smtp_sink: SmtpSink) -> dict[str, str]:
    return {"SMTP_URL": smtp_sink.url, "ADMIN_NOTIFY_EMAILS": ADMIN_INBOX}


def test_code_mailed_over_smtp_confirms_the_account_and_signs_in(
    client: TestClient, services: Services, smtp_sink: SmtpSink
) -> None:
    registered = client.post("/api/register",
                             json={"email": EMAIL, "password": DEFAULT_PASSWORD})
    assert registered.status_code == 200

    [mail] = smtp_sink.wait_for(EMAIL, timeout_secs=10)
    assert mail.subject == "Confirm your ReplyX e-mail"
    code = code_in(mail.body)

    confirmed = client.post("/api/confirm_email", json={"email": EMAIL, "code": code})
    assert confirmed.status_code == 200
    access_token = confirmed.json()["access_token"]

    me = client.post("/api/validate-token", headers={"Authorization": f"Bearer {access_token}"})
    assert me.status_code == 200
    assert me.json()["email"] == EMAIL

    smtp_sink.wait_for(ADMIN_INBOX)
    smtp_sink.wait_for(EMAIL, count=2)  # the welcome mail follows the confirmation
    assert all(row.status == SENT for row in mails(services, EMAIL, "confirm_email"))
