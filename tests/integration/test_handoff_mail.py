"""The owner's handoff e-mail (server/handoff_mail.py) on SQLite and PostgreSQL: content,
link, escaping, and the cross-process throttle."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import pytest
from handoff_data import T0, add_dialog, outbox_count
from sqlalchemy import update

from server.context import Services
from server.handoff_mail import queue_handoff_email
from server.mail import KEPT, PENDING
from server.store import mail as mail_store
from server.store.mail import OutboxRecord
from server.store.models import Dialog
from server.store.users import UserRecord

THREAD_JOIN_SECS = 60
MakeUser = Callable[..., UserRecord]
COOLDOWN = dt.timedelta(minutes=10)


@pytest.fixture
def settings_env() -> dict[str, str]:
    return {"FRONTEND_URL": "https://app.example.com/"}


def _queue(services: Services, dialog_id: int, owner_id: int, now: dt.datetime = T0,
           kind: str = "requested", text: str | None = "I need a human",
           reason: str | None = "keyword") -> bool:
    with services.db.write() as session:
        return queue_handoff_email(
            session, services.settings, dialog_id=dialog_id, owner_id=owner_id, reason=reason,
            last_user_text=text, now=now, kind=kind,  # type: ignore[arg-type]
        )


def _mails(services: Services, to_addr: str) -> list[OutboxRecord]:
    with services.db.read() as session:
        return mail_store.list_outbox(session, to_addr)


def _requested(services: Services, owner: UserRecord, at: dt.datetime = T0) -> int:
    return add_dialog(services, owner.id, status="requested", requested_at=at, reason="keyword")


# --- content ----------------------------------------------------------------------------------


def test_request_mail_goes_to_the_owner_with_a_link_to_the_dialog(
    services: Services, user: UserRecord
) -> None:
    dialog_id = _requested(services, user)
    assert _queue(services, dialog_id, user.id) is True
    [mail] = _mails(services, user.email)
    assert mail.kind == "handoff_requested" and mail.status == KEPT
    assert mail.subject == f"Dialog #{dialog_id} needs an operator"
    assert f"https://app.example.com/admin?dialog_id={dialog_id}\n" in mail.body_text
    assert "Why: the visitor asked to talk to a human." in mail.body_text
    assert "\n> I need a human\n" in mail.body_text


def test_sla_mail_says_the_visitor_is_still_waiting(services: Services, user: UserRecord) -> None:
    dialog_id = _requested(services, user)
    assert _queue(services, dialog_id, user.id, kind="sla_breached", text=None) is True
    [mail] = _mails(services, user.email)
    assert mail.kind == "handoff_sla_breached"
    assert mail.subject == f"Dialog #{dialog_id} is still waiting for an operator"
    assert "Their last message" not in mail.body_text


def test_visitor_text_is_quoted_without_control_or_bidi_characters(
    services: Services, user: UserRecord
) -> None:
    dialog_id = _requested(services, user)
    text = "line one\r\nSubject: spoofed\x00\x1b[31m\u202egnp.exe\n" + "y" * 900
    assert _queue(services, dialog_id, user.id, text=text, reason="odd\nreason\x07")
    [mail] = _mails(services, user.email)
    assert "\n" not in mail.subject and "spoofed" not in mail.subject
    assert "> line one\n> Subject: spoofed[31mgnp.exe\n> yyy" in mail.body_text
    for forbidden in ("\r", "\x00", "\x1b", "\u202e", "\x07"):
        assert forbidden not in mail.body_text
    assert "y" * 501 not in mail.body_text and "…" in mail.body_text
    assert "(odd\nreason)" in mail.body_text  # unknown reason kept, cleaned, never the subject


def test_no_mail_for_an_inactive_owner_a_missing_dialog_or_someone_elses(
    services: Services, make_user: MakeUser
) -> None:
    blocked, owner, stranger = make_user(status="blocked"), make_user(), make_user()
    assert _queue(services, _requested(services, blocked), blocked.id) is False
    dialog_id = _requested(services, owner)
    assert _queue(services, dialog_id, stranger.id) is False
    assert _queue(services, dialog_id + 1000, owner.id) is False
    assert outbox_count(services) == 0
    assert _queue(services, dialog_id, owner.id) is True


@pytest.mark.parametrize("settings_env", [{"SMTP_URL": "smtp://127.0.0.1:2525"}])
def test_with_smtp_the_mail_waits_for_the_dispatcher(
    services: Services, user: UserRecord, settings_env: dict[str, str]
) -> None:
    dialog_id = _requested(services, user)
    with services.db.write() as session:
        assert queue_handoff_email(
            session, services.settings, dialog_id=dialog_id, owner_id=user.id, reason="manual",
            last_user_text=None, now=T0, mailer=services.mailer,
        )
    [mail] = _mails(services, user.email)
    assert mail.status == PENDING
    assert "http://testserver/admin?dialog_id=" in mail.body_text  # FRONTEND_URL = PUBLIC_URL


# --- throttle ---------------------------------------------------------------------------------


def test_second_request_within_the_cooldown_sends_nothing_and_after_it_sends_again(
    services: Services, user: UserRecord
) -> None:
    dialog_id = _requested(services, user)
    assert _queue(services, dialog_id, user.id, T0) is True
    assert _queue(services, dialog_id, user.id, T0 + COOLDOWN - dt.timedelta(seconds=1)) is False
    assert len(_mails(services, user.email)) == 1
    assert _queue(services, dialog_id, user.id, T0 + COOLDOWN) is True
    assert len(_mails(services, user.email)) == 2


def test_cooldown_is_per_dialog_and_per_kind(services: Services, user: UserRecord) -> None:
    first, second = _requested(services, user), _requested(services, user)
    assert _queue(services, first, user.id) is True
    assert _queue(services, second, user.id) is True
    assert _queue(services, first, user.id, T0 + dt.timedelta(minutes=5),
                  kind="sla_breached") is True
    assert outbox_count(services, "handoff_requested") == 2
    assert outbox_count(services, "handoff_sla_breached") == 1


@pytest.mark.parametrize("settings_env", [{"HANDOFF_EMAIL_COOLDOWN_MINUTES": "1"}])
def test_cooldown_comes_from_the_settings(
    services: Services, user: UserRecord, settings_env: dict[str, str]
) -> None:
    dialog_id = _requested(services, user)
    assert _queue(services, dialog_id, user.id, T0) is True
    assert _queue(services, dialog_id, user.id, T0 + dt.timedelta(seconds=59)) is False
    assert _queue(services, dialog_id, user.id, T0 + dt.timedelta(minutes=1)) is True
    assert "every 1 minutes" in _mails(services, user.email)[0].body_text


def test_sla_mail_is_sent_once_per_request_and_only_while_it_waits(
    services: Services, user: UserRecord
) -> None:
    dialog_id = _requested(services, user)
    breach = T0 + dt.timedelta(minutes=5)
    assert _queue(services, dialog_id, user.id, breach, kind="sla_breached") is True
    assert _queue(services, dialog_id, user.id, breach + 2 * COOLDOWN, kind="sla_breached") is False
    re_requested = breach + 2 * COOLDOWN
    with services.db.write() as session:
        session.execute(update(Dialog).where(Dialog.id == dialog_id)
                        .values(handoff_requested_at=re_requested))
    later = re_requested + dt.timedelta(minutes=5)
    assert _queue(services, dialog_id, user.id, later, kind="sla_breached") is True
    with services.db.write() as session:
        session.execute(update(Dialog).where(Dialog.id == dialog_id)
                        .values(handoff_status="active", handoff_requested_at=later))
    assert _queue(services, dialog_id, user.id, later + 2 * COOLDOWN, kind="sla_breached") is False
    assert outbox_count(services, "handoff_sla_breached") == 2


def test_a_rolled_back_transaction_leaves_no_mail_and_no_throttle(
    services: Services, user: UserRecord
) -> None:
    dialog_id = _requested(services, user)
    with pytest.raises(RuntimeError), services.db.write() as session:
        assert queue_handoff_email(session, services.settings, dialog_id=dialog_id,
                                   owner_id=user.id, reason="manual", last_user_text=None,
                                   now=T0)
        raise RuntimeError("the transition failed")
    assert outbox_count(services) == 0
    assert _queue(services, dialog_id, user.id, T0 + dt.timedelta(seconds=1)) is True


def test_concurrent_notifications_about_one_dialog_queue_exactly_one_mail(
    services: Services, user: UserRecord
) -> None:
    dialog_id = _requested(services, user)
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(10)

    def notify(offset: int) -> None:
        start.wait(THREAD_JOIN_SECS)
        sent = _queue(services, dialog_id, user.id, T0 + dt.timedelta(seconds=offset))
        with lock:
            results.append(sent)

    threads = [threading.Thread(target=notify, args=(index,)) for index in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_JOIN_SECS)
    assert len(results) == 10 and results.count(True) == 1
    assert outbox_count(services, "handoff_requested") == 1


def test_unknown_kind_is_a_programming_error(services: Services, user: UserRecord) -> None:
    dialog_id = _requested(services, user)
    with pytest.raises(ValueError):
        _queue(services, dialog_id, user.id, kind="weekly_digest")
    assert outbox_count(services) == 0
