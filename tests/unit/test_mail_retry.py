"""The mailer's outbox delivery: retry with exponential backoff, give up, deliver once.

Real SMTP on loopback: an aiosmtpd server that refuses the first recipient with a temporary
451 and then accepts, or a port nobody listens on. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from fakes.outbox import mails
from fakes.smtp import SmtpSink, free_port, running_smtp_sink
from sqlalchemy import update

from server.context import Services
from server.mail import FAILED, KEPT, PENDING, SENT
from server.store.mail import OutboxRecord
from server.store.models import MailOutbox
from server.store.types import utcnow

TO = "customer@example.com"
BASE_DELAY = dt.timedelta(seconds=5)
RETRY_ENV = {"MAIL_RETRY_BASE_SECS": "5", "MAIL_MAX_ATTEMPTS": "3", "SMTP_TIMEOUT_SECS": "5"}


def enqueue(services: Services, subject: str = "Hello") -> None:
    with services.db.write() as session:
        services.mailer.enqueue(session, TO, subject, "Body text", kind="test")


def only_mail(services: Services) -> OutboxRecord:
    [mail] = mails(services, TO)
    return mail


def make_due(services: Services) -> None:
    """Skip the backoff wait: the test is about what happens next, not about the clock."""
    with services.db.write() as session:
        session.execute(
            update(MailOutbox).values(next_attempt_at=utcnow() - dt.timedelta(seconds=1))
        )


class TestUnreachableServer:
    @pytest.fixture
    def settings_env(self) -> dict[str, str]:
        return RETRY_ENV | {"SMTP_URL": f"smtp://127.0.0.1:{free_port()}"}

    async def test_failed_delivery_is_rescheduled_after_the_base_delay(
        self, services: Services
    ) -> None:
        enqueue(services)
        before = utcnow()
        assert await services.mailer.deliver_due() == 1
        mail = only_mail(services)
        assert (mail.status, mail.attempts) == (PENDING, 1)
        assert mail.last_error
        assert before + BASE_DELAY <= mail.next_attempt_at <= utcnow() + BASE_DELAY

    async def test_backoff_doubles_with_each_failure(self, services: Services) -> None:
        enqueue(services)
        await services.mailer.deliver_due()
        make_due(services)
        before = utcnow()
        await services.mailer.deliver_due()
        mail = only_mail(services)
        assert mail.attempts == 2
        assert before + 2 * BASE_DELAY <= mail.next_attempt_at <= utcnow() + 2 * BASE_DELAY

    async def test_mail_not_yet_due_is_left_alone(self, services: Services) -> None:
        enqueue(services)
        await services.mailer.deliver_due()
        assert await services.mailer.deliver_due() == 0
        assert only_mail(services).attempts == 1

    async def test_mail_is_given_up_after_max_attempts(self, services: Services) -> None:
        enqueue(services)
        for _ in range(3):
            make_due(services)
            await services.mailer.deliver_due()
        mail = only_mail(services)
        assert (mail.status, mail.attempts) == (FAILED, 3)
        make_due(services)
        assert await services.mailer.deliver_due() == 0

    async def test_send_now_reports_the_error_instead_of_raising(
        self, services: Services
    ) -> None:
        error = await services.mailer.send_now(TO, "Test", "Body")
        assert error is not None


@pytest.fixture
def flaky_sink() -> Iterator[SmtpSink]:
    with running_smtp_sink(refuse_first=1) as sink:
        yield sink


class TestServerThatRefusesOnce:
    @pytest.fixture
    def settings_env(self, flaky_sink: SmtpSink) -> dict[str, str]:
        return RETRY_ENV | {"SMTP_URL": flaky_sink.url}

    async def test_refused_mail_is_delivered_on_the_retry(
        self, services: Services, flaky_sink: SmtpSink
    ) -> None:
        enqueue(services, subject="Your code")
        await services.mailer.deliver_due()
        assert (only_mail(services).status, flaky_sink.messages) == (PENDING, [])
        make_due(services)
        await services.mailer.deliver_due()
        mail = only_mail(services)
        assert (mail.status, mail.attempts, mail.last_error) == (SENT, 2, None)
        assert mail.sent_at is not None
        [received] = flaky_sink.wait_for(TO)
        assert received.subject == "Your code"

    async def test_sent_mail_is_not_sent_again(
        self, services: Services, flaky_sink: SmtpSink
    ) -> None:
        enqueue(services)
        await services.mailer.deliver_due()
        make_due(services)
        await services.mailer.deliver_due()
        make_due(services)
        assert await services.mailer.deliver_due() == 0
        assert len(flaky_sink.messages) == 1


async def test_without_smtp_mail_is_kept_and_never_delivered(services: Services) -> None:
    enqueue(services)
    assert only_mail(services).status == KEPT
    assert await services.mailer.deliver_due() == 0
    assert only_mail(services).attempts == 0
