"""The e-mail a dialog's owner gets when a visitor waits for a human (spec §6.7, §8.4).

`queue_handoff_email` writes the mail into the outbox inside the caller's transaction (the
dispatcher of `server/mail.py` sends it after the commit) and returns whether it did. It is
throttled per dialog and kind through `handoff_mail_marks`: claiming the mark is one
`INSERT … ON CONFLICT DO NOTHING` or one conditional UPDATE, so however many processes
notify about the same dialog at once, one mail goes out per `HANDOFF_EMAIL_COOLDOWN_MINUTES`
(the original kept the cooldown in memory, per process). Kinds:
- `requested`: a visitor asked for a human (T1, or the operator went offline);
- `sla_breached`: the request is still waiting after its SLA; sent once per request (the mark
  must be older than the dialog's current `handoff_requested_at`) and only while it waits.

Mails are plain text; the visitor's words are quoted line by line with control and
bidirectional-override characters removed, never placed in the subject.
"""

from __future__ import annotations

import datetime as dt
import logging
import unicodedata
from typing import Any, Literal, cast

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from server.config import Settings
from server.mail import KEPT, PENDING, Mailer
from server.store.models import Dialog, HandoffMailMark, MailOutbox, User

log = logging.getLogger(__name__)

MailKind = Literal["requested", "sla_breached"]
QUOTE_MAX_CHARS = 500
REASON_TEXTS = {
    "manual": "the visitor pressed the button to talk to a human",
    "keyword": "the visitor asked to talk to a human",
    "fallback": "the AI assistant could not answer the visitor",
    "retries": "the visitor kept repeating an unsolved problem",
    "auto_trigger": "the conversation was handed over automatically",
    "operator_offline": "the operator who had the dialog went offline",
}


def queue_handoff_email(
    session: Session,
    settings: Settings,
    *,
    dialog_id: int,
    owner_id: int,
    reason: str | None,
    last_user_text: str | None,
    now: dt.datetime,
    kind: MailKind = "requested",
    mailer: Mailer | None = None,
) -> bool:
    """Queue the owner's notification unless one went out within the cooldown.

    Pass `mailer` to wake the dispatcher right after the commit; without it the mail waits
    for the dispatcher's next poll (`MAIL_POLL_INTERVAL_SECS`).
    """
    if kind not in ("requested", "sla_breached"):
        raise ValueError(f"not a handoff mail kind: {kind!r}")
    found = session.execute(
        select(User.email, Dialog.handoff_status, Dialog.handoff_requested_at)
        .join(User, User.id == Dialog.user_id)
        .where(Dialog.id == dialog_id, Dialog.user_id == owner_id, User.status == "active")
    ).one_or_none()
    if found is None:
        return False  # no such dialog of this owner, or the owner cannot sign in any more
    owner_email, status, requested_at = found
    if kind == "sla_breached":
        if status != "requested" or requested_at is None:
            return False  # a stale SLA timer: the request was answered or withdrawn
    else:
        requested_at = None  # a new request is throttled by the cooldown alone
    cooldown = dt.timedelta(minutes=settings.handoff_email_cooldown_minutes)
    if not _claim_mark(session, dialog_id, kind, now, now - cooldown, requested_at):
        return False
    subject, body = handoff_mail_text(
        settings, dialog_id=dialog_id, reason=reason, last_user_text=last_user_text, kind=kind
    )
    mail_kind = f"handoff_{kind}"
    if mailer is not None:
        mailer.enqueue(session, owner_email, subject, body, kind=mail_kind)
    else:
        status_value = PENDING if settings.smtp_url else KEPT
        session.add(MailOutbox(to_addr=owner_email, subject=subject, body_text=body,
                               kind=mail_kind, status=status_value))
        session.flush()
    log.info("handoff mail queued",
             extra={"dialog_id": dialog_id, "owner_id": owner_id, "kind": mail_kind})
    return True


def _claim_mark(
    session: Session,
    dialog_id: int,
    kind: str,
    now: dt.datetime,
    sent_before: dt.datetime,
    requested_at: dt.datetime | None,
) -> bool:
    """Atomically take the right to send: a first mark, or an old enough one moved to now."""
    dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
    inserted = session.execute(
        dialect.insert(HandoffMailMark)
        .values(dialog_id=dialog_id, kind=kind, sent_at=now)
        .on_conflict_do_nothing(index_elements=["dialog_id", "kind"])
        .returning(HandoffMailMark.dialog_id)  # a row back = inserted (rowcount is -1 on PG)
    ).first()
    if inserted is not None:
        return True
    conditions = [
        HandoffMailMark.dialog_id == dialog_id,
        HandoffMailMark.kind == kind,
        HandoffMailMark.sent_at <= sent_before,
    ]
    if requested_at is not None:
        conditions.append(HandoffMailMark.sent_at < requested_at)
    moved = session.execute(
        update(HandoffMailMark).where(*conditions).values(sent_at=now)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(moved) == 1


def _rowcount(result: Any) -> int:
    return cast("CursorResult[Any]", result).rowcount


def handoff_mail_text(
    settings: Settings,
    *,
    dialog_id: int,
    reason: str | None,
    last_user_text: str | None,
    kind: MailKind,
) -> tuple[str, str]:
    """Subject and plain-text body of the owner's notification."""
    link = f"{settings.frontend_url}/admin?dialog_id={dialog_id}"
    if kind == "sla_breached":
        subject = f"Dialog #{dialog_id} is still waiting for an operator"
        opening = (f"A visitor in dialog #{dialog_id} has been waiting for a human operator "
                   "longer than the agreed response time.")
    else:
        subject = f"Dialog #{dialog_id} needs an operator"
        opening = f"A visitor in dialog #{dialog_id} is waiting for a human operator."
    lines = [opening, "", f"Why: {_reason_text(reason)}."]
    quoted = _quote(last_user_text)
    if quoted:
        lines += ["", "Their last message:", quoted]
    lines += [
        "",
        f"Open the dialog and take it over: {link}",
        "",
        (f"You get at most one such e-mail per dialog every "
         f"{settings.handoff_email_cooldown_minutes} minutes."),
    ]
    return subject, "\n".join(lines) + "\n"


def _reason_text(reason: str | None) -> str:
    if reason is None:
        return "a handoff was requested"
    return REASON_TEXTS.get(reason) or f"a handoff was requested ({_clean(reason)[:32]})"


def _clean(text: str) -> str:
    """Drop control characters (but line breaks) and format characters such as bidi overrides."""
    kept = []
    for char in text.replace("\r\n", "\n").replace("\r", "\n"):
        category = unicodedata.category(char)
        if char == "\n" or char == "\t" or category not in ("Cc", "Cf", "Cs", "Co", "Cn"):
            kept.append(char)
    return "".join(kept)


def _quote(text: str | None) -> str:
    if not text:
        return ""
    cleaned = _clean(text).strip()
    if len(cleaned) > QUOTE_MAX_CHARS:
        cleaned = cleaned[:QUOTE_MAX_CHARS].rstrip() + " …"
    return "\n".join(f"> {line}" for line in cleaned.splitlines())
