"""Dialogs and their messages in the store.

`append_message` assigns the next per-dialog `seq` with one atomic counter update on the
dialog row, so two writers can never hand out the same number (the unique (dialog_id, seq)
index is the last line of defence). In the live-chat path the dialog's actor is the single
writer and calls this from its thread; the landing chat, which has no actor, calls it directly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.store.models import Dialog, DialogMessage, User


@dataclasses.dataclass(frozen=True, slots=True)
class MessageRecord:
    id: int
    dialog_id: int
    seq: int
    sender: str
    text: str
    timestamp: dt.datetime
    system_type: str | None
    client_message_id: str | None


def to_record(row: DialogMessage) -> MessageRecord:
    return MessageRecord(
        id=row.id,
        dialog_id=row.dialog_id,
        seq=row.seq,
        sender=row.sender,
        text=row.text,
        timestamp=row.timestamp,
        system_type=row.system_type,
        client_message_id=row.client_message_id,
    )


def first_admin_id(session: Session) -> int | None:
    return session.execute(
        select(User.id).where(User.role == "admin", User.status == "active").order_by(User.id)
    ).scalars().first()


def get_or_create_guest_dialog(
    session: Session, owner_id: int, guest_id: str, channel: str, assistant_id: int | None = None
) -> int:
    """The open dialog of one guest with one owner on one channel (created on first use);
    with an `assistant_id`, with that assistant (a guest of two widgets has two dialogs)."""
    query = select(Dialog.id).where(
        Dialog.user_id == owner_id,
        Dialog.guest_id == guest_id,
        Dialog.channel == channel,
        Dialog.ended_at.is_(None),
    )
    if assistant_id is not None:
        query = query.where(Dialog.assistant_id == assistant_id)
    found = session.execute(query.order_by(Dialog.id.desc())).scalars().first()
    if found is not None:
        return found
    dialog = Dialog(user_id=owner_id, guest_id=guest_id, channel=channel, assistant_id=assistant_id)
    session.add(dialog)
    session.flush()
    return dialog.id


def append_message(
    session: Session,
    dialog_id: int,
    sender: str,
    text: str,
    *,
    system_type: str | None = None,
    author_user_id: int | None = None,
    client_message_id: str | None = None,
) -> MessageRecord:
    seq = session.execute(
        update(Dialog)
        .where(Dialog.id == dialog_id)
        .values(last_seq=Dialog.last_seq + 1)
        .returning(Dialog.last_seq)
    ).scalar_one()
    row = DialogMessage(
        dialog_id=dialog_id,
        seq=seq,
        sender=sender,
        text=text,
        system_type=system_type,
        message_kind=sender if sender != "manager" else "operator",
        author_user_id=author_user_id,
        client_message_id=client_message_id,
    )
    session.add(row)
    session.flush()
    return to_record(row)


def list_messages(session: Session, dialog_id: int, since_seq: int = 0) -> list[MessageRecord]:
    rows = session.execute(
        select(DialogMessage)
        .where(DialogMessage.dialog_id == dialog_id, DialogMessage.seq > since_seq)
        .order_by(DialogMessage.seq)
    ).scalars()
    return [to_record(row) for row in rows]


def message_at(session: Session, dialog_id: int, seq: int) -> MessageRecord | None:
    row = session.execute(
        select(DialogMessage).where(DialogMessage.dialog_id == dialog_id, DialogMessage.seq == seq)
    ).scalar_one_or_none()
    return to_record(row) if row is not None else None
