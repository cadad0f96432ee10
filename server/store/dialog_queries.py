"""Reads of dialogs for the dashboard, the widget and the bot workers.

`list_dialogs` returns one page of the dashboard list with each dialog's last message in ONE
statement: the page's ids are a CTE, a `row_number()` window over the messages of just those
dialogs picks each one's latest, and a left join brings it in (SQLite ≥ 3.25 and PostgreSQL
both run it). The total is a second, plain count. Search patterns escape `%` and `_`.

The one write here, `create_dashboard_dialog`, makes a new empty dialog: a dialog with no
message yet has no actor to go through (its messages will).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, or_, select
from sqlalchemy.orm import Session

from server.store.dialogs import MessageRecord
from server.store.models import Assistant, BotInstance, Dialog, DialogMessage, User

StatusFilter = Literal["active", "taken_over", "handoff_requested", "handoff_active"]
ChannelFilter = Literal["telegram", "website"]
AI_HANDLES = ("none", "cancelled", "released")
LIKE_ESCAPE = "\\"


@dataclasses.dataclass(frozen=True, slots=True)
class DialogRecord:
    id: int
    user_id: int
    assistant_id: int | None
    bot_instance_id: int | None
    channel: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    auto_response: bool
    first_response_time: float | None
    fallback: bool
    is_taken_over: bool
    telegram_chat_id: str | None
    telegram_username: str | None
    first_name: str | None
    last_name: str | None
    guest_id: str | None
    last_seq: int
    handoff_status: str
    handoff_requested_at: dt.datetime | None
    handoff_started_at: dt.datetime | None
    handoff_resolved_at: dt.datetime | None
    handoff_reason: str | None
    assigned_manager_id: int | None
    request_id: str | None


_FIELDS = tuple(field.name for field in dataclasses.fields(DialogRecord))


def to_record(row: Dialog) -> DialogRecord:
    return DialogRecord(**{name: getattr(row, name) for name in _FIELDS})


@dataclasses.dataclass(frozen=True, slots=True)
class DialogFilters:
    """`owner_id=None` means every tenant (an admin's `all=true`)."""

    owner_id: int | None
    status: StatusFilter | None = None
    channel: ChannelFilter | None = None
    assistant_id: int | None = None
    started_after: dt.datetime | None = None
    search: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DialogListRow:
    dialog: DialogRecord
    owner_email: str
    owner_first_name: str | None
    last_message_text: str | None
    last_message_at: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class DialogPage:
    rows: list[DialogListRow]
    total: int


@dataclasses.dataclass(frozen=True, slots=True)
class DialogSummary:
    dialog: DialogRecord
    message_count: int
    last_message_at: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelCounts:
    telegram: int
    website: int


@dataclasses.dataclass(frozen=True, slots=True)
class AssistantCount:
    id: int
    name: str
    dialogs_count: int


@dataclasses.dataclass(frozen=True, slots=True)
class TelegramRoute:
    id: int
    assistant_id: int | None
    user_id: int
    telegram_chat_id: str
    handoff_status: str
    bot_id: int


# --- the dashboard list -------------------------------------------------------------------


def escape_like(text: str) -> str:
    return (
        text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )


def _conditions(filters: DialogFilters) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if filters.owner_id is not None:
        where.append(Dialog.user_id == filters.owner_id)
    if filters.status == "active":
        where += [Dialog.is_taken_over.is_(False), Dialog.handoff_status.in_(AI_HANDLES)]
    elif filters.status == "taken_over":
        where.append(Dialog.is_taken_over.is_(True))
    elif filters.status == "handoff_requested":
        where.append(Dialog.handoff_status == "requested")
    elif filters.status == "handoff_active":
        where.append(Dialog.handoff_status == "active")
    if filters.channel == "telegram":
        where.append(Dialog.telegram_chat_id.is_not(None))
    elif filters.channel == "website":
        where.append(Dialog.telegram_chat_id.is_(None))
    if filters.assistant_id is not None:
        where.append(Dialog.assistant_id == filters.assistant_id)
    if filters.started_after is not None:
        where.append(Dialog.started_at >= filters.started_after)
    if filters.search:
        where.append(_search(filters.search))
    return where


def _search(text: str) -> ColumnElement[bool]:
    """Visitor names, Telegram username, guest id, any message text, or the owner's e-mail."""
    pattern = f"%{escape_like(text)}%"

    def like(column: Any) -> ColumnElement[bool]:
        return column.ilike(pattern, escape=LIKE_ESCAPE)  # type: ignore[no-any-return]

    return or_(
        like(Dialog.first_name),
        like(Dialog.last_name),
        like(Dialog.telegram_username),
        like(Dialog.guest_id),
        exists().where(DialogMessage.dialog_id == Dialog.id, like(DialogMessage.text)),
        exists().where(User.id == Dialog.user_id, like(User.email)),
    )


def list_dialogs(session: Session, filters: DialogFilters, *, page: int, limit: int) -> DialogPage:
    """Newest id first; each row with its owner's e-mail and its last message."""
    where = _conditions(filters)
    total = session.execute(select(func.count()).select_from(Dialog).where(*where)).scalar_one()
    page_ids = (
        select(Dialog.id.label("id")).where(*where)
        .order_by(Dialog.id.desc()).limit(limit).offset((page - 1) * limit)
        .cte("page_ids")
    )
    ranked = (
        select(
            DialogMessage.dialog_id.label("dialog_id"),
            DialogMessage.text.label("text"),
            DialogMessage.timestamp.label("timestamp"),
            func.row_number().over(
                partition_by=DialogMessage.dialog_id,
                order_by=(DialogMessage.seq.desc(), DialogMessage.id.desc()),
            ).label("rank"),
        )
        .where(DialogMessage.dialog_id.in_(select(page_ids.c.id)))
        .subquery("ranked")
    )
    query = (
        select(Dialog, User.email, User.first_name, ranked.c.text, ranked.c.timestamp)
        .join(page_ids, page_ids.c.id == Dialog.id)
        .join(User, User.id == Dialog.user_id)
        .outerjoin(ranked, and_(ranked.c.dialog_id == Dialog.id, ranked.c.rank == 1))
        .order_by(Dialog.id.desc())
    )
    rows = [
        DialogListRow(to_record(dialog), email, first_name, text, timestamp)
        for dialog, email, first_name, text, timestamp in session.execute(query)
    ]
    return DialogPage(rows=rows, total=total)


def filter_counts(
    session: Session, owner_id: int | None
) -> tuple[ChannelCounts, list[AssistantCount]]:
    """What the dashboard's filter menus offer: dialogs per channel and per assistant."""
    owned = [Dialog.user_id == owner_id] if owner_id is not None else []
    telegram, website = session.execute(
        select(
            func.count(case((Dialog.telegram_chat_id.is_not(None), 1))),
            func.count(case((Dialog.telegram_chat_id.is_(None), 1))),
        ).where(*owned)
    ).one()
    assistants = session.execute(
        select(Assistant.id, Assistant.name, func.count(Dialog.id))
        .join(Dialog, Dialog.assistant_id == Assistant.id)
        .where(*owned)
        .group_by(Assistant.id, Assistant.name)
        .order_by(Assistant.id)
    )
    return (
        ChannelCounts(telegram=telegram, website=website),
        [AssistantCount(id, name, count) for id, name, count in assistants],
    )


# --- one dialog -----------------------------------------------------------------------------


def get_dialog(session: Session, dialog_id: int) -> DialogRecord | None:
    row = session.get(Dialog, dialog_id)
    return to_record(row) if row is not None else None


def visible_dialog(
    session: Session, dialog_id: int, viewer_id: int, *, is_admin: bool
) -> DialogRecord | None:
    """The dialog if the viewer owns it or is an admin; None for a missing or foreign one."""
    record = get_dialog(session, dialog_id)
    if record is None or not (is_admin or record.user_id == viewer_id):
        return None
    return record


def list_messages(
    session: Session, dialog_id: int, *, after_id: int | None = None, limit: int | None = None
) -> list[MessageRecord]:
    query = select(DialogMessage).where(DialogMessage.dialog_id == dialog_id)
    if after_id is not None:
        query = query.where(DialogMessage.id > after_id)
    query = query.order_by(DialogMessage.seq)
    if limit is not None:
        query = query.limit(limit)
    return [
        MessageRecord(
            id=row.id, dialog_id=row.dialog_id, seq=row.seq, sender=row.sender, text=row.text,
            timestamp=row.timestamp, system_type=row.system_type,
            client_message_id=row.client_message_id,
        )
        for row in session.execute(query).scalars()
    ]


def create_dashboard_dialog(session: Session, owner_id: int, assistant_id: int) -> DialogRecord:
    """The owner's "test your assistant" chat: channel `dashboard`, no guest."""
    row = Dialog(user_id=owner_id, assistant_id=assistant_id, channel="dashboard")
    session.add(row)
    session.flush()
    session.refresh(row)
    return to_record(row)


# --- visitors ---------------------------------------------------------------------------------


def _guest_query(owner_id: int, guest_id: str, assistant_id: int | None) -> Select[tuple[Dialog]]:
    query = select(Dialog).where(Dialog.user_id == owner_id, Dialog.guest_id == guest_id)
    if assistant_id is not None:
        query = query.where(Dialog.assistant_id == assistant_id)
    return query


def guest_dialogs(
    session: Session, owner_id: int, guest_id: str, assistant_id: int | None = None
) -> list[DialogRecord]:
    """One visitor's dialogs with one owner (and assistant, when the visitor came through one)."""
    query = _guest_query(owner_id, guest_id, assistant_id).order_by(Dialog.id.desc())
    return [to_record(row) for row in session.execute(query).scalars()]


def guest_dialog(
    session: Session, dialog_id: int, owner_id: int, guest_id: str,
    assistant_id: int | None = None,
) -> DialogRecord | None:
    query = _guest_query(owner_id, guest_id, assistant_id).where(Dialog.id == dialog_id)
    row = session.execute(query).scalar_one_or_none()
    return to_record(row) if row is not None else None


def first_active_assistant_id(session: Session, owner_id: int) -> int | None:
    """The assistant an account-level site token talks to: the owner's oldest active one."""
    return session.execute(
        select(Assistant.id)
        .where(Assistant.user_id == owner_id, Assistant.is_active.is_(True))
        .order_by(Assistant.id)
    ).scalars().first()


def active_assistant_domains(session: Session, owner_id: int) -> list[str]:
    """The allowed domains of every active assistant of the owner (comma lists, unsplit)."""
    return list(
        session.execute(
            select(Assistant.allowed_domains)
            .where(Assistant.user_id == owner_id, Assistant.is_active.is_(True))
            .order_by(Assistant.id)
        ).scalars()
    )


# --- per assistant and for the bot workers ----------------------------------------------------


def assistant_dialog_summaries(session: Session, assistant_id: int) -> list[DialogSummary]:
    """Every dialog of the assistant, newest first, with its message count and last time."""
    stats = (
        select(
            DialogMessage.dialog_id.label("dialog_id"),
            func.count(DialogMessage.id).label("messages"),
            func.max(DialogMessage.timestamp).label("last_at"),
        )
        .join(Dialog, Dialog.id == DialogMessage.dialog_id)
        .where(Dialog.assistant_id == assistant_id)
        .group_by(DialogMessage.dialog_id)
        .subquery("stats")
    )
    query = (
        select(Dialog, stats.c.messages, stats.c.last_at)
        .outerjoin(stats, stats.c.dialog_id == Dialog.id)
        .where(Dialog.assistant_id == assistant_id)
        .order_by(Dialog.started_at.desc(), Dialog.id.desc())
    )
    return [
        DialogSummary(to_record(dialog), messages or 0, last_at)
        for dialog, messages, last_at in session.execute(query)
    ]


def telegram_route(
    session: Session, telegram_chat_id: str, *, bot_id: int | None = None,
    assistant_id: int | None = None,
) -> TelegramRoute | None:
    """The newest dialog of a Telegram chat with an ACTIVE bot of its assistant (the dialog's
    own bot when it records one). A chat id is per person, not per bot: the optional filters
    pick among the bots that person talks to."""
    bot_matches = and_(
        BotInstance.assistant_id == Dialog.assistant_id,
        BotInstance.user_id == Dialog.user_id,
        BotInstance.is_active.is_(True),
        or_(Dialog.bot_instance_id.is_(None), Dialog.bot_instance_id == BotInstance.id),
    )
    query = (
        select(Dialog.id, Dialog.assistant_id, Dialog.user_id, Dialog.telegram_chat_id,
               Dialog.handoff_status, BotInstance.id)
        .join(BotInstance, bot_matches)
        .where(Dialog.telegram_chat_id == telegram_chat_id)
    )
    if bot_id is not None:
        query = query.where(BotInstance.id == bot_id)
    if assistant_id is not None:
        query = query.where(Dialog.assistant_id == assistant_id)
    row = session.execute(query.order_by(Dialog.id.desc(), BotInstance.id).limit(1)).first()
    if row is None:
        return None
    return TelegramRoute(*row)
