"""Doors of operator presence and the handoff queue (spec §5.A "Operator presence & queue").

- `POST /api/operator/heartbeat`: the panel reports `online` every 30 s, `away` when hidden,
  `offline` on unload; optional new chat limits. Creates the presence row on first use.
- `GET /api/operator/queue`: dialogs waiting for a human, oldest request first. Scoped to
  the caller's own dialogs (the original listed every tenant's); an admin sees all.
- `GET /api/operator/my-dialogs`: the dialogs the caller holds now (handoff `active`).
Thin: the heartbeat goes to the operator's session actor; the lists are one read each through
`server/store/presence.py`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from server.context import Services
from server.handoff_view import queue_item, sla_minutes
from server.http.routing import ApiRouter, Call
from server.http.schemas import Strict
from server.store import presence
from server.store.presence import OperatorDialog, PresenceRecord, QueueEntry
from server.store.types import iso, utcnow
from server.store.users import UserRecord

router = ApiRouter("operator")


class HeartbeatIn(Strict):
    status: Literal["online", "away", "offline"]
    max_active_chats_web: int | None = Field(None, ge=0, le=presence.MAX_WEB_LIMIT, strict=True)
    max_active_chats_telegram: int | None = Field(
        None, ge=0, le=presence.MAX_TELEGRAM_LIMIT, strict=True
    )


class PresenceOut(BaseModel):
    user_id: int
    status: str
    last_heartbeat: str | None
    max_active_chats_web: int
    max_active_chats_telegram: int
    active_chats: int
    updated_at: str


class QueueItemOut(BaseModel):
    dialog_id: int
    requested_at: str | None
    reason: str | None
    last_user_text: str | None
    wait_time_minutes: int
    priority: Literal["normal", "high"]


class LastMessageOut(BaseModel):
    text: str
    sender: str
    timestamp: str


class UserInfoOut(BaseModel):
    first_name: str | None
    last_name: str | None


class OperatorDialogOut(BaseModel):
    id: int
    started_at: str
    handoff_started_at: str | None
    last_message: LastMessageOut | None
    user_info: UserInfoOut


def render_presence(record: PresenceRecord) -> dict[str, Any]:
    return {
        "user_id": record.user_id,
        "status": record.status,
        "last_heartbeat": iso(record.last_heartbeat),
        "max_active_chats_web": record.max_active_chats_web,
        "max_active_chats_telegram": record.max_active_chats_telegram,
        "active_chats": record.active_chats,
        "updated_at": iso(record.updated_at),
    }


def render_operator_dialog(dialog: OperatorDialog) -> dict[str, Any]:
    last = dialog.last_message
    return {
        "id": dialog.id,
        "started_at": iso(dialog.started_at),
        "handoff_started_at": iso(dialog.handoff_started_at),
        "last_message": (
            {"text": last.text, "sender": last.sender, "timestamp": iso(last.timestamp)}
            if last is not None else None
        ),
        "user_info": {"first_name": dialog.first_name, "last_name": dialog.last_name},
    }


def queue_of(services: Services, user: UserRecord) -> list[QueueEntry]:
    with services.db.read() as session:
        return presence.handoff_queue(session, None if user.is_admin else user.id)


def dialogs_of(services: Services, operator_id: int) -> list[OperatorDialog]:
    with services.db.read() as session:
        return presence.operator_dialogs(session, operator_id)


@router.route("POST", "/api/operator/heartbeat", auth="user", body=HeartbeatIn,
              response=PresenceOut, errors=(422,))
async def post_heartbeat(call: Call) -> dict[str, Any]:
    """Report the operator's presence (and optionally their chat limits)"""
    # Through the operator's session actor, the one writer of their presence (it also hears
    # their feed socket), so the two sources never interleave half-written updates.
    body: HeartbeatIn = call.body
    record = await call.services.live_system.heartbeat(
        call.user.id, body.status, body.max_active_chats_web, body.max_active_chats_telegram)
    return render_presence(record)


@router.route("GET", "/api/operator/queue", auth="user", response=list[QueueItemOut])
async def get_queue(call: Call) -> list[dict[str, Any]]:
    """Dialogs waiting for an operator, oldest request first (own dialogs; admins: all)"""
    entries = await call.run(queue_of, call.services, call.user)
    now = utcnow()
    sla = sla_minutes(call.services.settings)
    return [queue_item(entry, now, sla) for entry in entries]


@router.route("GET", "/api/operator/my-dialogs", auth="user", response=list[OperatorDialogOut])
async def get_my_dialogs(call: Call) -> list[dict[str, Any]]:
    """Dialogs the caller handles now as the operator"""
    dialogs = await call.run(dialogs_of, call.services, call.user.id)
    return [render_operator_dialog(dialog) for dialog in dialogs]
