"""Dialogs in a chosen handoff state, written straight into the store (presence, queue, mail
and handoff-view tests)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import func, select

from server.context import Services
from server.store.models import Dialog, DialogMessage, MailOutbox, OperatorPresence

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


def add_dialog(
    services: Services,
    owner_id: int,
    *,
    status: str = "none",
    requested_at: dt.datetime | None = None,
    started_at: dt.datetime | None = None,
    manager_id: int | None = None,
    channel: str = "web",
    reason: str | None = None,
    messages: Sequence[tuple[str, str]] = (),
    first_name: str | None = None,
    last_name: str | None = None,
) -> int:
    """A dialog with its handoff columns set and `(sender, text)` messages in order."""
    with services.db.write() as session:
        dialog = Dialog(
            user_id=owner_id,
            channel=channel,
            guest_id=f"guest-{owner_id}",
            handoff_status=status,
            handoff_requested_at=requested_at,
            handoff_started_at=started_at,
            handoff_reason=reason,
            assigned_manager_id=manager_id,
            is_taken_over=status == "active",
            first_name=first_name,
            last_name=last_name,
            last_seq=len(messages),
        )
        session.add(dialog)
        session.flush()
        for seq, (sender, text) in enumerate(messages, start=1):
            session.add(DialogMessage(
                dialog_id=dialog.id, seq=seq, sender=sender, text=text,
                timestamp=T0 + dt.timedelta(seconds=seq),
            ))
        return dialog.id


def set_presence(services: Services, user_id: int, **values: object) -> None:
    with services.db.write() as session:
        row = session.execute(
            select(OperatorPresence).where(OperatorPresence.user_id == user_id)
        ).scalar_one_or_none()
        if row is None:
            row = OperatorPresence(user_id=user_id)
            session.add(row)
        for name, value in values.items():
            setattr(row, name, value)


def outbox_count(services: Services, kind: str | None = None) -> int:
    with services.db.read() as session:
        query = select(func.count()).select_from(MailOutbox)
        if kind is not None:
            query = query.where(MailOutbox.kind == kind)
        return session.execute(query).scalar_one()
