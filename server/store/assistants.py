"""Assistants in the store: the record the guards read, and what the assistants module changes.

Every function takes an open session and returns plain frozen dataclasses, never ORM rows.
Version bumps are SQL expressions (`widget_version = widget_version + 1`), so two concurrent
bumps never collapse into one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.orm import Session

from server.store.models import (
    Assistant,
    BotInstance,
    Dialog,
    DialogMessage,
    Document,
    KnowledgeChunk,
    QaKnowledge,
    UserKnowledge,
)
from server.store.types import utcnow


@dataclasses.dataclass(frozen=True, slots=True)
class AssistantRecord:
    id: int
    user_id: int
    name: str
    ai_model: str
    system_prompt: str
    is_active: bool
    website_integration_enabled: bool
    allow_tokenless_widget: bool
    allowed_domains: str
    knowledge_version: int
    widget_version: int
    operator_name: str | None
    business_name: str | None
    avatar_url: str | None
    widget_theme: str | None
    widget_settings: dict[str, Any]
    fallback_text: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


_FIELDS = [f.name for f in dataclasses.fields(AssistantRecord)]
# Columns a caller may set through `create_assistant` / `update_assistant`.
EDITABLE_FIELDS = frozenset(_FIELDS) - {"id", "user_id", "knowledge_version",
                                        "widget_version", "created_at", "updated_at"}


def to_record(row: Assistant) -> AssistantRecord:
    values = {name: getattr(row, name) for name in _FIELDS}
    values["widget_settings"] = dict(row.widget_settings or {})
    return AssistantRecord(**values)


def get_assistant(session: Session, assistant_id: int) -> AssistantRecord | None:
    row = session.get(Assistant, assistant_id)
    return to_record(row) if row is not None else None


def get_owned_assistant(
    session: Session, assistant_id: int, owner_id: int, *, for_update: bool = False
) -> AssistantRecord | None:
    """The assistant if `owner_id` owns it; None for a missing or foreign one alike."""
    query = select(Assistant).where(Assistant.id == assistant_id, Assistant.user_id == owner_id)
    if for_update:
        query = query.with_for_update()
    row = session.execute(query).scalar_one_or_none()
    return to_record(row) if row is not None else None


def list_assistants(session: Session, owner_id: int) -> list[AssistantRecord]:
    rows = session.execute(
        select(Assistant)
        .where(Assistant.user_id == owner_id)
        .order_by(Assistant.created_at.desc(), Assistant.id.desc())
    ).scalars()
    return [to_record(row) for row in rows]


def create_assistant(session: Session, owner_id: int, **fields: Any) -> AssistantRecord:
    _check_editable(fields)
    row = Assistant(user_id=owner_id, **fields)
    session.add(row)
    session.flush()
    return to_record(row)


def update_assistant(
    session: Session,
    assistant_id: int,
    *,
    bump_knowledge: bool = False,
    bump_widget: bool = False,
    **fields: Any,
) -> AssistantRecord:
    """Set fields, stamp `updated_at`, and bump the requested versions atomically."""
    _check_editable(fields)
    values: dict[str, Any] = dict(fields, updated_at=utcnow())
    if bump_knowledge:
        values["knowledge_version"] = Assistant.knowledge_version + 1
    if bump_widget:
        values["widget_version"] = Assistant.widget_version + 1
    session.execute(
        update(Assistant).where(Assistant.id == assistant_id).values(**values),
        execution_options={"synchronize_session": False},
    )
    row = session.execute(
        select(Assistant)
        .where(Assistant.id == assistant_id)
        .execution_options(populate_existing=True)
    ).scalar_one()
    return to_record(row)


def _check_editable(fields: dict[str, Any]) -> None:
    unknown = set(fields) - EDITABLE_FIELDS
    if unknown:
        raise AttributeError(f"not editable assistant fields: {sorted(unknown)}")


# --- deletion ---------------------------------------------------------------------------------


def linked_documents_query(assistant_id: int, owner_id: int) -> Select[tuple[int]]:
    """Ids of the owner's documents attached to the assistant directly or through knowledge."""
    through_knowledge = select(UserKnowledge.doc_id).where(
        UserKnowledge.assistant_id == assistant_id, UserKnowledge.doc_id.is_not(None)
    )
    return select(Document.id).where(
        Document.user_id == owner_id,
        or_(Document.assistant_id == assistant_id, Document.id.in_(through_knowledge)),
    )


@dataclasses.dataclass(frozen=True, slots=True)
class DeletedAssistant:
    dialogs_detached: int
    documents_deleted: int
    storage_keys: list[str]


def delete_assistant(session: Session, assistant_id: int, owner_id: int) -> DeletedAssistant:
    """Remove the assistant and what only it uses; its dialogs stay, detached.

    A linked document is deleted unless knowledge of another assistant (or tenant-global
    knowledge) still uses it. Knowledge, chunks and bots are deleted by explicit statements
    rather than left to the FK cascades, so triggers that keep a full-text index in step run.
    """
    shared_elsewhere = select(UserKnowledge.doc_id).where(
        UserKnowledge.doc_id.is_not(None),
        or_(UserKnowledge.assistant_id.is_(None), UserKnowledge.assistant_id != assistant_id),
    )
    doomed = session.execute(
        select(Document.id, Document.storage_key).where(
            Document.id.in_(linked_documents_query(assistant_id, owner_id)),
            Document.id.not_in(shared_elsewhere),
        )
    ).all()
    doc_ids = [doc_id for doc_id, _ in doomed]
    storage_keys = [key for _, key in doomed if key]

    for model in (KnowledgeChunk, UserKnowledge, QaKnowledge, BotInstance):
        session.execute(delete(model).where(model.assistant_id == assistant_id))
    if doc_ids:
        session.execute(delete(KnowledgeChunk).where(KnowledgeChunk.doc_id.in_(doc_ids)))
        session.execute(delete(Document).where(Document.id.in_(doc_ids)))
    detached = session.execute(
        update(Dialog).where(Dialog.assistant_id == assistant_id).values(assistant_id=None)
    ).rowcount
    session.execute(delete(Assistant).where(Assistant.id == assistant_id))
    return DeletedAssistant(
        dialogs_detached=detached or 0, documents_deleted=len(doc_ids), storage_keys=storage_keys
    )


# --- activity ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Activity:
    messages: int = 0
    dialogs: int = 0


def count_activity(
    session: Session, assistant_ids: Sequence[int], since: dt.datetime | None = None
) -> dict[int, Activity]:
    """AI replies and dialogs started per assistant (since `since`, or ever)."""
    if not assistant_ids:
        return {}
    replies = (
        select(Dialog.assistant_id, func.count(DialogMessage.id))
        .join(Dialog, DialogMessage.dialog_id == Dialog.id)
        .where(Dialog.assistant_id.in_(assistant_ids), DialogMessage.sender == "assistant")
        .group_by(Dialog.assistant_id)
    )
    started = (
        select(Dialog.assistant_id, func.count(Dialog.id))
        .where(Dialog.assistant_id.in_(assistant_ids))
        .group_by(Dialog.assistant_id)
    )
    if since is not None:
        replies = replies.where(DialogMessage.timestamp >= since)
        started = started.where(Dialog.started_at >= since)
    messages = {aid: count for aid, count in session.execute(replies) if aid is not None}
    dialogs = {aid: count for aid, count in session.execute(started) if aid is not None}
    return {
        aid: Activity(messages=messages.get(aid, 0), dialogs=dialogs.get(aid, 0))
        for aid in assistant_ids
    }


# --- documents and knowledge of one assistant -------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class DocumentRecord:
    id: int
    user_id: int
    filename: str
    size: int
    upload_date: dt.datetime


def list_linked_documents(
    session: Session, assistant_id: int, owner_id: int
) -> list[DocumentRecord]:
    rows = session.execute(
        select(Document)
        .where(Document.id.in_(linked_documents_query(assistant_id, owner_id)))
        .order_by(Document.upload_date.desc(), Document.id.desc())
    ).scalars()
    return [
        DocumentRecord(id=row.id, user_id=row.user_id, filename=row.filename,
                       size=row.size or 0, upload_date=row.upload_date)
        for row in rows
    ]


def count_linked_documents(session: Session, assistant_id: int, owner_id: int) -> int:
    subquery = linked_documents_query(assistant_id, owner_id).subquery()
    return session.execute(select(func.count()).select_from(subquery)).scalar_one()


@dataclasses.dataclass(frozen=True, slots=True)
class KnowledgeEntry:
    id: int
    doc_id: int | None
    content: str
    type: str
    doc_type: str | None
    filename: str | None


def list_assistant_knowledge(session: Session, assistant_id: int) -> list[KnowledgeEntry]:
    rows = session.execute(
        select(UserKnowledge, Document.filename)
        .outerjoin(Document, UserKnowledge.doc_id == Document.id)
        .where(UserKnowledge.assistant_id == assistant_id)
        .order_by(UserKnowledge.importance.desc(), UserKnowledge.id)
    ).all()
    return [
        KnowledgeEntry(id=row.id, doc_id=row.doc_id, content=row.content, type=row.type,
                       doc_type=row.doc_type, filename=filename)
        for row, filename in rows
    ]


def delete_knowledge_entries(session: Session, knowledge_ids: Sequence[int]) -> int:
    if not knowledge_ids:
        return 0
    session.execute(delete(KnowledgeChunk).where(KnowledgeChunk.knowledge_id.in_(knowledge_ids)))
    result = session.execute(delete(UserKnowledge).where(UserKnowledge.id.in_(knowledge_ids)))
    return result.rowcount or 0


# --- service lookups --------------------------------------------------------------------------


def telegram_assistant_of(session: Session, owner_id: int) -> AssistantRecord | None:
    """The assistant behind the owner's first active Telegram bot, if any."""
    row = session.execute(
        select(Assistant)
        .join(BotInstance, BotInstance.assistant_id == Assistant.id)
        .where(
            BotInstance.user_id == owner_id,
            BotInstance.platform == "telegram",
            BotInstance.is_active.is_(True),
            Assistant.user_id == owner_id,
        )
        .order_by(BotInstance.id)
        .limit(1)
    ).scalar_one_or_none()
    return to_record(row) if row is not None else None
