"""What a dialog actor writes, applied for many dialogs in one transaction (group commit).

A `DialogWrite` is everything one command of one dialog changes: new messages (their `seq`
already assigned by the dialog's actor, the single writer), dialog columns (handoff state,
first response time), handoff audit rows and extra statements (an e-mail in the outbox, an
operator's load, a refund). `apply_writes` applies a batch of them with one multi-row insert
per table, so committing 50 messages costs about what committing one does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from server.store.dialogs import MessageRecord
from server.store.models import Dialog, DialogMessage, HandoffAudit

_MESSAGES = DialogMessage.__table__
_DIALOGS = Dialog.__table__
_AUDIT = HandoffAudit.__table__

_INSERT_MESSAGES = insert(_MESSAGES).returning(_MESSAGES.c.id, sort_by_parameter_order=True)
_SET_LAST_SEQ = (
    update(_DIALOGS)
    .where(_DIALOGS.c.id == bindparam("dialog_key"))
    .values(last_seq=bindparam("new_last_seq"))
)
_INSERT_AUDIT = insert(_AUDIT)

Extra = Callable[[Session], object]


@dataclasses.dataclass(frozen=True, slots=True)
class NewMessage:
    seq: int
    sender: str
    text: str
    timestamp: dt.datetime
    system_type: str | None = None
    author_user_id: int | None = None
    client_message_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class NewAudit:
    from_status: str
    to_status: str
    reason: str | None
    user_id: int | None
    request_id: str | None
    seq: int
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    at: dt.datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DialogWrite:
    dialog_id: int
    messages: tuple[NewMessage, ...] = ()
    dialog_values: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    audits: tuple[NewAudit, ...] = ()
    extras: tuple[Extra, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.messages or self.dialog_values or self.audits or self.extras)


def message_kind(sender: str) -> str:
    return "operator" if sender == "manager" else sender


def apply_writes(session: Session, writes: Sequence[DialogWrite]) -> list[tuple[MessageRecord, ...]]:
    """Apply every write in `session` (the caller commits); returns each write's messages."""
    rows = [
        {
            "dialog_id": write.dialog_id,
            "seq": message.seq,
            "sender": message.sender,
            "text": message.text,
            "timestamp": message.timestamp,
            "delivered": False,
            "message_kind": message_kind(message.sender),
            "system_type": message.system_type,
            "author_user_id": message.author_user_id,
            "client_message_id": message.client_message_id,
        }
        for write in writes
        for message in write.messages
    ]
    ids = list(session.execute(_INSERT_MESSAGES, rows).scalars()) if rows else []

    last_seqs: dict[int, int] = {}
    for write in writes:
        for message in write.messages:
            last_seqs[write.dialog_id] = max(last_seqs.get(write.dialog_id, 0), message.seq)
    if last_seqs:
        session.execute(
            _SET_LAST_SEQ,
            [{"dialog_key": key, "new_last_seq": seq} for key, seq in last_seqs.items()],
        )
    for write in writes:
        if write.dialog_values:
            session.execute(
                update(_DIALOGS).where(_DIALOGS.c.id == write.dialog_id).values(**write.dialog_values)
            )
    audits = [
        {
            "dialog_id": write.dialog_id,
            "from_status": audit.from_status,
            "to_status": audit.to_status,
            "user_id": audit.user_id,
            "reason": audit.reason,
            "request_id": audit.request_id,
            "seq": audit.seq,
            "extra_data": dict(audit.extra),
            **({"created_at": audit.at} if audit.at is not None else {}),
        }
        for write in writes
        for audit in write.audits
    ]
    if audits:
        session.execute(_INSERT_AUDIT, audits)
    for write in writes:
        for extra in write.extras:
            extra(session)

    records: list[tuple[MessageRecord, ...]] = []
    position = 0
    for write in writes:
        made = []
        for message in write.messages:
            made.append(MessageRecord(
                id=ids[position],
                dialog_id=write.dialog_id,
                seq=message.seq,
                sender=message.sender,
                text=message.text,
                timestamp=message.timestamp,
                system_type=message.system_type,
                client_message_id=message.client_message_id,
            ))
            position += 1
        records.append(tuple(made))
    return records


def last_seq(session: Session, dialog_id: int) -> int:
    """The highest seq stored for a dialog (the counter and the rows agree unless a write of
    the landing chat raced; the larger one is the truth)."""
    counter = session.execute(
        select(Dialog.last_seq).where(Dialog.id == dialog_id)
    ).scalar_one_or_none() or 0
    stored = session.execute(
        select(DialogMessage.seq)
        .where(DialogMessage.dialog_id == dialog_id)
        .order_by(DialogMessage.seq.desc())
        .limit(1)
    ).scalar_one_or_none() or 0
    return max(counter, stored)

