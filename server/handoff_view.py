"""How a dialog's handoff looks from outside: `HandoffStatusOut` (spec §4.9) and queue items.

`handoff_status_out` renders a dialog row (or any record with the same handoff fields);
`render_handoff_status` renders a `HandoffState` the dialog actor holds, for events and
replies before the row is re-read. Both need the session for two small reads: the queue
position (computed per owner, spec §4.9 notes) and the assigned manager's name.

New behaviour, as the spec recommends (§8.4): `sla_deadline = requested_at + SLA(channel)`
while a request waits (the original always sends null); a queue item is `priority: "high"`
once its SLA has passed, `"normal"` before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Protocol

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from server.actors.handoff import (
    DEFAULT_SLA_MINUTES,
    HandoffState,
    HandoffStatus,
    sla_deadline,
)
from server.config import Settings
from server.store.models import Dialog, User
from server.store.presence import QueueEntry
from server.store.types import iso

MINUTES_PER_QUEUE_PLACE = 3
LAST_USER_TEXT_MAX_CHARS = 1000


class DialogHandoffFields(Protocol):
    """What is read from a dialog: the `Dialog` row has these, a record may too."""

    @property
    def id(self) -> int: ...
    @property
    def user_id(self) -> int: ...
    @property
    def channel(self) -> str: ...
    @property
    def handoff_status(self) -> str: ...
    @property
    def handoff_reason(self) -> str | None: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def handoff_requested_at(self) -> dt.datetime | None: ...
    @property
    def handoff_started_at(self) -> dt.datetime | None: ...
    @property
    def handoff_resolved_at(self) -> dt.datetime | None: ...
    @property
    def assigned_manager_id(self) -> int | None: ...
    @property
    def is_taken_over(self) -> bool: ...


def sla_minutes(settings: Settings) -> dict[str, int]:
    """The per-channel SLA of the settings, in the shape `sla_deadline` takes."""
    return {"web": settings.handoff_sla_web_minutes,
            "telegram": settings.handoff_sla_telegram_minutes}


def state_of(dialog: DialogHandoffFields) -> HandoffState:
    return HandoffState(
        status=HandoffStatus(dialog.handoff_status),
        reason=dialog.handoff_reason,
        request_id=dialog.request_id,
        requested_at=dialog.handoff_requested_at,
        started_at=dialog.handoff_started_at,
        resolved_at=dialog.handoff_resolved_at,
        assigned_manager_id=dialog.assigned_manager_id,
        is_taken_over=bool(dialog.is_taken_over),
    )


def handoff_status_out(
    session: Session,
    dialog: DialogHandoffFields,
    now: dt.datetime,
    sla: Mapping[str, int] = DEFAULT_SLA_MINUTES,
) -> dict[str, Any]:
    """`HandoffStatusOut` of a dialog row. `now` is accepted for the callers' symmetry with
    `queue_item`; nothing in the status object depends on the clock."""
    del now
    return render_handoff_status(
        session, dialog_id=dialog.id, owner_id=dialog.user_id, channel=dialog.channel,
        state=state_of(dialog), sla=sla,
    )


def render_handoff_status(
    session: Session,
    *,
    dialog_id: int,
    owner_id: int,
    channel: str,
    state: HandoffState,
    sla: Mapping[str, int] = DEFAULT_SLA_MINUTES,
) -> dict[str, Any]:
    position = None
    if state.status == HandoffStatus.REQUESTED and state.requested_at is not None:
        position = queue_position(session, owner_id, dialog_id, state.requested_at)
    manager = None
    if state.assigned_manager_id is not None:
        manager = assigned_manager(session, state.assigned_manager_id)
    return {
        "status": str(state.status),
        "assigned_manager": manager,
        "requested_at": iso(state.requested_at),
        "started_at": iso(state.started_at),
        "resolved_at": iso(state.resolved_at),
        "reason": state.reason,
        "request_id": state.request_id,
        "queue_position": position,
        "estimated_wait_minutes": (
            MINUTES_PER_QUEUE_PLACE * position if position is not None else None
        ),
        "sla_deadline": iso(sla_deadline(state, channel, sla)),
    }


def queue_position(
    session: Session, owner_id: int, dialog_id: int, requested_at: dt.datetime
) -> int:
    """1 + the owner's waiting dialogs requested earlier (ties: the lower id goes first)."""
    earlier = session.execute(
        select(func.count(Dialog.id)).where(
            Dialog.user_id == owner_id,
            Dialog.handoff_status == "requested",
            Dialog.id != dialog_id,
            or_(Dialog.handoff_requested_at < requested_at,
                and_(Dialog.handoff_requested_at == requested_at, Dialog.id < dialog_id)),
        )
    ).scalar_one()
    return 1 + earlier


def manager_name(first_name: str | None, user_id: int) -> str:
    return first_name.strip() if first_name and first_name.strip() else f"User #{user_id}"


def assigned_manager(session: Session, user_id: int) -> dict[str, Any]:
    first_name = session.execute(
        select(User.first_name).where(User.id == user_id)
    ).scalar_one_or_none()
    return {"id": user_id, "name": manager_name(first_name, user_id), "avatar": None}


def queue_item(
    entry: QueueEntry, now: dt.datetime, sla: Mapping[str, int] = DEFAULT_SLA_MINUTES
) -> dict[str, Any]:
    """One row of `GET /api/operator/queue`."""
    requested_at = entry.requested_at
    waited = (now - requested_at).total_seconds() if requested_at is not None else 0.0
    deadline = sla_deadline(
        HandoffState(status=HandoffStatus.REQUESTED, requested_at=requested_at),
        entry.channel, sla,
    )
    text = entry.last_user_text
    return {
        "dialog_id": entry.dialog_id,
        "requested_at": iso(requested_at),
        "reason": entry.reason,
        "last_user_text": text[:LAST_USER_TEXT_MAX_CHARS] if text is not None else None,
        "wait_time_minutes": max(0, int(waited // 60)),
        "priority": "high" if deadline is not None and now >= deadline else "normal",
    }
