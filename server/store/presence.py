"""Operator presence (spec §7.11) and the handoff queue as the operator panel reads it.

Every function takes the caller's session and never commits, so the dialog actor can run it
inside its own transaction; writes belong in `Database.write()` (on SQLite that transaction
holds the write lock from its first statement, on PostgreSQL the statements below are
race-free by themselves):
- a missing presence row is created with `INSERT … ON CONFLICT DO NOTHING`, never a
  select-then-insert, so two first heartbeats cannot collide on the unique `user_id`;
- `reserve_slot` is one conditional UPDATE (`status = 'online' AND active_chats < max`), so
  concurrent takeovers can never push an operator past the channel's limit;
- `resync_active_chats` locks the presence rows before counting, so a takeover in flight is
  either fully counted or applies its +1 after the resync (spec §7.11: the counter drifts).

One `active_chats` counter covers both channels; a takeover compares it with the limit of the
dialog's channel (`max_active_chats_telegram` for Telegram dialogs, the web limit otherwise).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, cast

from sqlalchemy import Row, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from server.actors.handoff import OperatorCapacity
from server.store.models import Dialog, DialogMessage, OperatorPresence

PRESENCE_STATUSES = ("online", "away", "offline")
DEFAULT_MAX_WEB = 3
DEFAULT_MAX_TELEGRAM = 5
MAX_WEB_LIMIT = 20
MAX_TELEGRAM_LIMIT = 50
TELEGRAM = "telegram"
# A reservation re-reads the row to explain a refusal; if the row changed in between (a slot
# was freed), it tries again, a bounded number of times.
RESERVE_ATTEMPTS = 3


@dataclasses.dataclass(frozen=True, slots=True)
class PresenceRecord:
    user_id: int
    status: str
    last_heartbeat: dt.datetime | None
    max_active_chats_web: int
    max_active_chats_telegram: int
    active_chats: int
    created_at: dt.datetime
    updated_at: dt.datetime

    def max_for(self, channel: str) -> int:
        return self.max_active_chats_telegram if channel == TELEGRAM else self.max_active_chats_web

    def capacity(self, channel: str) -> OperatorCapacity:
        return OperatorCapacity(self.status, self.active_chats, self.max_for(channel))


@dataclasses.dataclass(frozen=True, slots=True)
class QueueEntry:
    """A dialog waiting for an operator, with the visitor's last words."""

    dialog_id: int
    owner_id: int
    channel: str
    requested_at: dt.datetime | None
    reason: str | None
    last_user_text: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class LastMessage:
    text: str
    sender: str
    timestamp: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class OperatorDialog:
    """A dialog an operator is handling now (handoff `active`, assigned to them)."""

    id: int
    owner_id: int
    channel: str
    started_at: dt.datetime
    handoff_started_at: dt.datetime | None
    first_name: str | None
    last_name: str | None
    last_message: LastMessage | None


_FIELDS = [f.name for f in dataclasses.fields(PresenceRecord)]


def _record(row: OperatorPresence) -> PresenceRecord:
    return PresenceRecord(**{name: getattr(row, name) for name in _FIELDS})


def _rowcount(result: Any) -> int:
    return cast("CursorResult[Any]", result).rowcount


def _max_column(channel: str) -> Any:
    if channel == TELEGRAM:
        return OperatorPresence.max_active_chats_telegram
    return OperatorPresence.max_active_chats_web


def _ensure_row(session: Session, user_id: int, now: dt.datetime, status: str) -> None:
    """Create the user's presence row with the default limits unless it exists (race-free)."""
    dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
    values = {
        "user_id": user_id,
        "status": status,
        "last_heartbeat": now,
        "max_active_chats_web": DEFAULT_MAX_WEB,
        "max_active_chats_telegram": DEFAULT_MAX_TELEGRAM,
        "active_chats": 0,
        "created_at": now,
        "updated_at": now,
    }
    statement = dialect.insert(OperatorPresence).values(**values)
    session.execute(statement.on_conflict_do_nothing(index_elements=["user_id"]))


def get_presence(session: Session, user_id: int) -> PresenceRecord | None:
    # populate_existing: this module's bulk UPDATEs must not leave a stale row in the session.
    row = session.execute(
        select(OperatorPresence)
        .where(OperatorPresence.user_id == user_id)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    return _record(row) if row is not None else None


def heartbeat(
    session: Session,
    user_id: int,
    status: str,
    now: dt.datetime,
    max_active_chats_web: int | None = None,
    max_active_chats_telegram: int | None = None,
) -> PresenceRecord:
    """Record a heartbeat: status, time and (optionally) new limits; creates the row."""
    if status not in PRESENCE_STATUSES:
        raise ValueError(f"not a presence status: {status!r}")
    values: dict[str, Any] = {"status": status, "last_heartbeat": now, "updated_at": now}
    if max_active_chats_web is not None:
        if not 0 <= max_active_chats_web <= MAX_WEB_LIMIT:
            raise ValueError("max_active_chats_web out of range")
        values["max_active_chats_web"] = max_active_chats_web
    if max_active_chats_telegram is not None:
        if not 0 <= max_active_chats_telegram <= MAX_TELEGRAM_LIMIT:
            raise ValueError("max_active_chats_telegram out of range")
        values["max_active_chats_telegram"] = max_active_chats_telegram
    _ensure_row(session, user_id, now, status)
    session.execute(
        update(OperatorPresence).where(OperatorPresence.user_id == user_id).values(**values)
    )
    record = get_presence(session, user_id)
    assert record is not None  # created above, in this transaction
    return record


def capacity(session: Session, user_id: int, channel: str) -> OperatorCapacity:
    """What a takeover of a `channel` dialog by this user would meet (no row: a fresh one)."""
    record = get_presence(session, user_id)
    if record is None:
        fresh = DEFAULT_MAX_TELEGRAM if channel == TELEGRAM else DEFAULT_MAX_WEB
        return OperatorCapacity("online", 0, fresh)
    return record.capacity(channel)


def reserve_slot(session: Session, user_id: int, channel: str, now: dt.datetime) -> str | None:
    """Take one chat slot for a takeover: None on success, else the refusal text.

    Creates the row (online, 3/5) if missing (spec §4.9). The increment is one conditional
    UPDATE, so it is atomic however many takeovers race for the last slot.
    """
    _ensure_row(session, user_id, now, "online")
    limit = _max_column(channel)
    for _attempt in range(RESERVE_ATTEMPTS):
        result = session.execute(
            update(OperatorPresence)
            .where(
                OperatorPresence.user_id == user_id,
                OperatorPresence.status == "online",
                OperatorPresence.active_chats < limit,
            )
            .values(active_chats=OperatorPresence.active_chats + 1, updated_at=now)
        )
        if _rowcount(result) == 1:
            return None
        record = get_presence(session, user_id)
        refusal = record.capacity(channel).refusal() if record is not None else None
        if refusal is not None:
            return refusal
    return "operator is at capacity (the load changed during the reservation)"


def release_slot(session: Session, user_id: int) -> None:
    """Give one chat slot back (a release, a reset); the counter never goes below 0."""
    session.execute(
        update(OperatorPresence)
        .where(OperatorPresence.user_id == user_id, OperatorPresence.active_chats > 0)
        .values(active_chats=OperatorPresence.active_chats - 1)
    )


def mark_stale_offline(session: Session, now: dt.datetime, threshold_secs: int) -> list[int]:
    """Set every online/away operator without a heartbeat for `threshold_secs` offline.

    Returns the ids of the users that went offline with this call (a concurrent call cannot
    return the same user: the UPDATE only matches rows that are not offline yet).
    """
    cutoff = now - dt.timedelta(seconds=threshold_secs)
    result = session.execute(
        update(OperatorPresence)
        .where(
            OperatorPresence.status != "offline",
            or_(OperatorPresence.last_heartbeat.is_(None),
                OperatorPresence.last_heartbeat < cutoff),
        )
        .values(status="offline", updated_at=now)
        .returning(OperatorPresence.user_id)
    )
    return sorted(result.scalars())


def _active_count(user_column: Any) -> Any:
    return (
        select(func.count(Dialog.id))
        .where(Dialog.assigned_manager_id == user_column, Dialog.handoff_status == "active")
        .scalar_subquery()
    )


def resync_active_chats(session: Session) -> int:
    """Set every `active_chats` to the number of active dialogs the user holds; returns how
    many rows were wrong. Run periodically: the counter drifts (spec §7.11)."""
    # Lock first (no-op on SQLite, whose write transaction is already exclusive), then count
    # in a new statement, which on PostgreSQL sees every takeover committed before the lock.
    session.execute(select(OperatorPresence.id).with_for_update()).all()
    count = _active_count(OperatorPresence.user_id)
    result = session.execute(
        update(OperatorPresence)
        .where(OperatorPresence.active_chats != count)
        .values(active_chats=count)
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result)


def active_dialog_ids(session: Session, operator_id: int) -> list[int]:
    """The dialogs this operator holds (handoff `active`), by id."""
    return list(session.execute(
        select(Dialog.id)
        .where(Dialog.assigned_manager_id == operator_id, Dialog.handoff_status == "active")
        .order_by(Dialog.id)
    ).scalars())


# --- the queue and the operator's dialogs (read by the panel; one query each) ------------------


def handoff_queue(session: Session, owner_id: int | None) -> list[QueueEntry]:
    """Dialogs in `requested`, oldest request first; one owner's, or everyone's for None."""
    last_user_text = (
        select(DialogMessage.text)
        .where(DialogMessage.dialog_id == Dialog.id, DialogMessage.sender == "user")
        .order_by(DialogMessage.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    query = (
        select(Dialog.id, Dialog.user_id, Dialog.channel, Dialog.handoff_requested_at,
               Dialog.handoff_reason, last_user_text)
        .where(Dialog.handoff_status == "requested")
        .order_by(Dialog.handoff_requested_at, Dialog.id)
    )
    if owner_id is not None:
        query = query.where(Dialog.user_id == owner_id)
    return [QueueEntry(*row) for row in session.execute(query)]


def operator_dialogs(session: Session, operator_id: int) -> list[OperatorDialog]:
    """The dialogs the operator holds now, each with its latest message (any sender)."""
    last_seq = (
        select(DialogMessage.dialog_id, func.max(DialogMessage.seq).label("seq"))
        .join(Dialog, Dialog.id == DialogMessage.dialog_id)
        .where(Dialog.assigned_manager_id == operator_id, Dialog.handoff_status == "active")
        .group_by(DialogMessage.dialog_id)
        .subquery()
    )
    query = (
        select(Dialog.id, Dialog.user_id, Dialog.channel, Dialog.started_at,
               Dialog.handoff_started_at, Dialog.first_name, Dialog.last_name,
               DialogMessage.text, DialogMessage.sender, DialogMessage.timestamp)
        .outerjoin(last_seq, last_seq.c.dialog_id == Dialog.id)
        .outerjoin(DialogMessage, and_(DialogMessage.dialog_id == Dialog.id,
                                       DialogMessage.seq == last_seq.c.seq))
        .where(Dialog.assigned_manager_id == operator_id, Dialog.handoff_status == "active")
        .order_by(Dialog.handoff_started_at, Dialog.id)
    )
    return [_operator_dialog(row) for row in session.execute(query)]


def _operator_dialog(row: Row[Any]) -> OperatorDialog:
    (dialog_id, owner_id, channel, started_at, handoff_started_at, first_name, last_name,
     text, sender, timestamp) = row
    last = LastMessage(text, sender, timestamp) if sender is not None else None
    return OperatorDialog(dialog_id, owner_id, channel, started_at, handoff_started_at,
                          first_name, last_name, last)
