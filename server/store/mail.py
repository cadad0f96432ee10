"""The mail outbox as the rest of the code reads it (writes belong to `server/mail.py`)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.store.models import MailOutbox


@dataclasses.dataclass(frozen=True, slots=True)
class OutboxRecord:
    id: int
    to_addr: str
    subject: str
    body_text: str
    kind: str
    status: str
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None
    created_at: dt.datetime
    sent_at: dt.datetime | None


_FIELDS = [f.name for f in dataclasses.fields(OutboxRecord)]


def _record(row: MailOutbox) -> OutboxRecord:
    return OutboxRecord(**{name: getattr(row, name) for name in _FIELDS})


def list_outbox(
    session: Session, to_addr: str | None = None, *, kind: str | None = None
) -> list[OutboxRecord]:
    """Mails in the outbox, oldest first, optionally for one recipient and/or of one kind."""
    query = select(MailOutbox).order_by(MailOutbox.id)
    if to_addr is not None:
        query = query.where(MailOutbox.to_addr == to_addr)
    if kind is not None:
        query = query.where(MailOutbox.kind == kind)
    return [_record(row) for row in session.execute(query).scalars()]


def get_outbox_mail(session: Session, mail_id: int) -> OutboxRecord | None:
    row = session.get(MailOutbox, mail_id)
    return _record(row) if row is not None else None
