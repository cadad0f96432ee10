"""Doors that read dialogs (spec §4.4, §4.3 assistant dialogs, §5.A `POST /api/dialogs`,
§5.B filters-data).

Thin: parse, read through `server/store/dialog_queries.py`, render. Owner-or-admin: a dialog
of another tenant is "not found" (404) for a plain user — DESIGN §8 overrides the 403 the
spec reports of the original, so ids do not leak. `/api/assistants/{id}/dialogs` follows the
assistants module's rule (owner only). Writes to a dialog (messages, takeover, release,
handoff) are not here: they go through the dialog's actor.
Literal paths (`filters-data`, `by-telegram-chat/…`) are declared before `{dialog_id}`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, field_validator
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from server.actors.events import message_payload
from server.assistants import access_assistant
from server.context import Services
from server.errors import not_found
from server.http.routing import MAX_DB_ID, ApiRouter, Call
from server.http.schemas import Lenient, Strict
from server.store import dialog_queries as queries
from server.store.dialog_queries import ChannelFilter, DialogFilters, DialogRecord, StatusFilter
from server.store.dialogs import MessageRecord
from server.store.types import iso, utcnow
from server.store.users import UserRecord

log = logging.getLogger(__name__)
router = ApiRouter("dialogs")

T = TypeVar("T")
DbId = Annotated[int, Field(ge=0, le=MAX_DB_ID)]
MAX_PAGE = 1_000_000
MAX_MESSAGES_PAGE = 1000
DIALOG = "/api/dialogs/{dialog_id}"
DIALOG_NOT_FOUND = "Dialog not found"
TIME_WINDOWS = {"week": dt.timedelta(days=7), "month": dt.timedelta(days=30)}
# Names the original generated for web guests and then stored back as if the visitor said them.
GENERATED_NAME = re.compile(r"^(?:User|Пользователь)#\d+")
KIND_OF_SENDER = {"manager": "operator"}


class DialogsQuery(Lenient):
    user_id: DbId | None = None
    all: bool = False
    page: int = Field(1, ge=1, le=MAX_PAGE)
    limit: int = Field(50, ge=1, le=100)
    search: str | None = Field(None, max_length=255)
    status: StatusFilter | None = None
    channel: ChannelFilter | None = None
    assistant_id: DbId | None = None
    time_filter: Literal["today", "week", "month"] | None = None

    @field_validator("search", "status", "channel", "time_filter", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        # The dashboard sends `status=` for "any"; the original treated that as no filter.
        return None if isinstance(value, str) and not value.strip() else value


class MessagesQuery(Lenient):
    after_id: DbId | None = None
    limit: int | None = Field(None, ge=1, le=MAX_MESSAGES_PAGE)


class TelegramChatQuery(Lenient):
    bot_id: DbId | None = None
    assistant_id: DbId | None = None


class CreateDialogIn(Strict):
    assistant_id: DbId


class DialogStatusOut(BaseModel):
    id: int
    handoff_status: str
    is_taken_over: int
    assigned_manager_id: int | None


# --- rendering ------------------------------------------------------------------------------


def clean_name(value: str | None) -> str | None:
    if not value or GENERATED_NAME.match(value):
        return None
    return value


def display_name(dialog: DialogRecord, owner_first_name: str | None) -> str | None:
    """first + last, else first, else @username, else "User#id" for a web guest, else the
    owner's first name (spec §4.4)."""
    first, last = clean_name(dialog.first_name), clean_name(dialog.last_name)
    if first and last:
        return f"{first} {last}"
    if first:
        return first
    if dialog.telegram_username:
        return f"@{dialog.telegram_username}"
    if dialog.guest_id:
        return f"User#{dialog.id}"
    return owner_first_name


def render_dialog_core(dialog: DialogRecord) -> dict[str, Any]:
    """The fields the dashboard and the visitor's dialog objects share (flags as 0/1)."""
    return {
        "id": dialog.id,
        "user_id": dialog.user_id,
        "assistant_id": dialog.assistant_id,
        "started_at": iso(dialog.started_at),
        "ended_at": iso(dialog.ended_at),
        "auto_response": int(dialog.auto_response),
        "first_response_time": dialog.first_response_time,
        "fallback": int(dialog.fallback),
        "is_taken_over": int(dialog.is_taken_over),
        "telegram_chat_id": dialog.telegram_chat_id,
        "telegram_username": dialog.telegram_username,
        "guest_id": dialog.guest_id,
        "handoff_status": dialog.handoff_status,
        "last_seq": dialog.last_seq,
    }


def render_dialog(dialog: DialogRecord) -> dict[str, Any]:
    """The dashboard dialog object of spec §4.4 (flags as 0/1), plus `channel` and `last_seq`."""
    return {
        **render_dialog_core(dialog),
        "channel": dialog.channel,
        "first_name": clean_name(dialog.first_name),
        "last_name": clean_name(dialog.last_name),
        "handoff_requested_at": iso(dialog.handoff_requested_at),
        "handoff_started_at": iso(dialog.handoff_started_at),
        "handoff_resolved_at": iso(dialog.handoff_resolved_at),
        "handoff_reason": dialog.handoff_reason,
        "assigned_manager_id": dialog.assigned_manager_id,
        "request_id": dialog.request_id,
    }


def render_list_row(row: queries.DialogListRow) -> dict[str, Any]:
    dialog = row.dialog
    return render_dialog(dialog) | {
        "last_message_at": iso(row.last_message_at or dialog.started_at),
        "last_message_text": row.last_message_text,
        "channel_type": "telegram" if dialog.telegram_chat_id else "web",
        "name": display_name(dialog, row.owner_first_name),
        "email": row.owner_email,
        "topic": "General question",
        "comment": "",
        "sentiment": "neutral",
    }


def render_message(message: MessageRecord) -> dict[str, Any]:
    """One message wherever it appears (DESIGN §5), with the dashboard's `message_kind`."""
    return {**message_payload(message),
            "message_kind": KIND_OF_SENDER.get(message.sender, message.sender)}


def summary_title(dialog: DialogRecord) -> str:
    first, last = clean_name(dialog.first_name), clean_name(dialog.last_name)
    name = " ".join(part for part in (first, last) if part)
    if name:
        return name
    if dialog.telegram_username:
        return f"@{dialog.telegram_username}"
    return f"Dialog {dialog.id}"


# --- reads ------------------------------------------------------------------------------------


def read(services: Services, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one store read in its own transaction (called through `Call.run`)."""
    with services.db.read() as session:
        return func(session, *args, **kwargs)


def access_dialog(session: Session, user: UserRecord, dialog_id: int) -> DialogRecord:
    dialog = queries.visible_dialog(session, dialog_id, user.id, is_admin=user.is_admin)
    if dialog is None:
        raise not_found(DIALOG_NOT_FOUND)
    return dialog


def dialog_messages(
    session: Session, user: UserRecord, dialog_id: int, query: MessagesQuery
) -> list[MessageRecord]:
    access_dialog(session, user, dialog_id)
    return queries.list_messages(session, dialog_id, after_id=query.after_id, limit=query.limit)


def filters_of(user: UserRecord, query: DialogsQuery) -> DialogFilters:
    """Admins may name an owner (`user_id`) or drop the owner filter (`all`); others never."""
    owner_id: int | None = user.id
    if user.is_admin and query.all:
        owner_id = None
    elif user.is_admin and query.user_id is not None:
        owner_id = query.user_id
    return DialogFilters(
        owner_id=owner_id, status=query.status, channel=query.channel,
        assistant_id=query.assistant_id, started_after=window_start(query.time_filter),
        search=query.search or None,
    )


def window_start(time_filter: str | None) -> dt.datetime | None:
    if time_filter is None:
        return None
    now = utcnow()
    if time_filter == "today":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    return now - TIME_WINDOWS[time_filter]


def assistant_summaries(
    session: Session, owner_id: int, assistant_id: int
) -> list[queries.DialogSummary]:
    access_assistant(session, owner_id, assistant_id)
    return queries.assistant_dialog_summaries(session, assistant_id)


def create_test_dialog(services: Services, owner_id: int, assistant_id: int) -> DialogRecord:
    with services.db.write() as session:
        access_assistant(session, owner_id, assistant_id)
        return queries.create_dashboard_dialog(session, owner_id, assistant_id)


# --- collection -----------------------------------------------------------------------------


@router.route("GET", "/api/dialogs", auth="user", query=DialogsQuery,
              summary="Own dialogs, newest first, with filters, search and the last message")
async def list_dialogs(call: Call) -> dict[str, Any]:
    query: DialogsQuery = call.query
    page = await call.run(read, call.services, queries.list_dialogs,
                          filters_of(call.user, query), page=query.page, limit=query.limit)
    return {
        "items": [render_list_row(row) for row in page.rows],
        "total": page.total,
        "page": query.page,
        "pages": -(-page.total // query.limit),
        "limit": query.limit,
    }


@router.route("POST", "/api/dialogs", auth="user", body=CreateDialogIn, errors=(404,),
              summary="Start the owner's test chat with one of their assistants")
async def create_dialog(call: Call) -> dict[str, Any]:
    dialog = await call.run(create_test_dialog, call.services, call.user.id,
                            call.body.assistant_id)
    return render_dialog(dialog)


@router.route("GET", "/api/dialogs/filters-data", auth="user",
              summary="Dialog counts per channel and per assistant (admins: all tenants)")
async def filters_data(call: Call) -> dict[str, Any]:
    owner_id = None if call.user.is_admin else call.user.id
    channels, assistants = await call.run(read, call.services, queries.filter_counts, owner_id)
    listed = [("telegram", "Telegram", channels.telegram),
              ("website", "Website (widget)", channels.website)]
    return {
        "channels": [{"type": kind, "name": name, "count": n} for kind, name, n in listed if n],
        "bots": [{"id": a.id, "name": a.name, "dialogs_count": a.dialogs_count}
                 for a in assistants],
    }


@router.route("GET", "/api/dialogs/by-telegram-chat/{telegram_chat_id}", auth="service",
              query=TelegramChatQuery, str_params=("telegram_chat_id",), errors=(404,),
              summary="The dialog of a Telegram chat and the active bot that serves it")
async def dialog_by_telegram_chat(call: Call) -> dict[str, Any]:
    chat_id: str = call.path["telegram_chat_id"]
    query: TelegramChatQuery = call.query
    route = None
    if "\x00" not in chat_id and len(chat_id) <= 64:  # what the column can hold
        route = await call.run(read, call.services, queries.telegram_route, chat_id,
                               bot_id=query.bot_id, assistant_id=query.assistant_id)
    if route is None:
        raise not_found("No dialog with an active bot for this chat")
    return {"id": route.id, "assistant_id": route.assistant_id, "user_id": route.user_id,
            "telegram_chat_id": route.telegram_chat_id, "handoff_status": route.handoff_status,
            "bot_id": route.bot_id}


# --- one dialog -----------------------------------------------------------------------------


@router.route("GET", DIALOG, auth="user", errors=(404,), summary="One dialog (owner or admin)")
async def get_dialog(call: Call) -> dict[str, Any]:
    dialog = await call.run(read, call.services, access_dialog, call.user,
                            call.path["dialog_id"])
    return render_dialog(dialog)


@router.route("GET", DIALOG + "/messages", auth="user", query=MessagesQuery, errors=(404,),
              summary="Messages of a dialog in order (owner or admin); after_id/limit optional")
async def get_messages(call: Call) -> list[dict[str, Any]]:
    messages = await call.run(read, call.services, dialog_messages, call.user,
                              call.path["dialog_id"], call.query)
    return [render_message(message) for message in messages]


@router.route("GET", DIALOG + "/status", auth=("service", "user"), response=DialogStatusOut,
              errors=(404,), summary="Handoff flags for the bot worker (fail-open) or the owner")
async def dialog_status(call: Call) -> dict[str, Any]:
    """The Telegram worker asks before and after each AI reply; for it an unknown dialog or
    a failing database reads as "no handoff", so the bot keeps answering (spec §4.4). The
    owner's JWT gets the truth: 404 when the dialog is not theirs."""
    dialog_id: int = call.path["dialog_id"]
    if not call.caller.service:
        dialog = await call.run(read, call.services, access_dialog, call.user, dialog_id)
    else:
        try:
            dialog = await call.run(read, call.services, queries.get_dialog, dialog_id)
        except SQLAlchemyError:
            log.warning("dialog status read failed; answering fail-open",
                        exc_info=True, extra={"dialog_id": dialog_id})
            dialog = None
        if dialog is None:
            return {"id": dialog_id, "handoff_status": "none", "is_taken_over": 0,
                    "assigned_manager_id": None}
    return {"id": dialog.id, "handoff_status": dialog.handoff_status,
            "is_taken_over": int(dialog.is_taken_over),
            "assigned_manager_id": dialog.assigned_manager_id}


# --- per assistant ----------------------------------------------------------------------------


@router.route("GET", "/api/assistants/{assistant_id}/dialogs", auth="user", errors=(404,),
              summary="Unpaginated summaries of an own assistant's dialogs, newest first")
async def assistant_dialogs(call: Call) -> list[dict[str, Any]]:
    summaries = await call.run(read, call.services, assistant_summaries, call.user.id,
                               call.path["assistant_id"])
    return [
        {
            "id": s.dialog.id,
            "title": summary_title(s.dialog),
            "status": "completed" if s.dialog.ended_at else "active",
            "started_at": iso(s.dialog.started_at),
            "last_message_at": iso(s.last_message_at or s.dialog.started_at),
            "message_count": s.message_count,
        }
        for s in summaries
    ]
