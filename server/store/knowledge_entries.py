"""Knowledge entries (`user_knowledge`) in the store: a text attached to a document and to one
assistant (or to none: tenant-global), `type` `original` or `summary` (spec §7.6).

The chunks indexed from an entry are written by `server/ai/ingest.index_text` (keyed by
`knowledge_id`); deleting an entry here deletes them with an explicit statement first.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, func, literal, or_, select, update
from sqlalchemy.orm import Session

from server.store.models import Document, KnowledgeChunk, UserKnowledge
from server.store.types import utcnow

MOST_USED_COUNT = 5
SUMMARY = "summary"


@dataclasses.dataclass(frozen=True, slots=True)
class KnowledgeRow:
    id: int
    user_id: int
    assistant_id: int | None
    doc_id: int | None
    content: str
    type: str
    doc_type: str | None
    importance: int
    usage_count: int
    last_used: dt.datetime | None


def _row(entry: UserKnowledge) -> KnowledgeRow:
    return KnowledgeRow(
        id=entry.id,
        user_id=entry.user_id,
        assistant_id=entry.assistant_id,
        doc_id=entry.doc_id,
        content=entry.content,
        type=entry.type,
        doc_type=entry.doc_type,
        importance=entry.importance,
        usage_count=entry.usage_count or 0,
        last_used=entry.last_used,
    )


def create_entry(
    session: Session,
    owner_id: int,
    *,
    doc_id: int | None,
    assistant_id: int | None,
    content: str,
    type_: str,
    doc_type: str | None,
    importance: int = 10,
) -> KnowledgeRow:
    entry = UserKnowledge(
        user_id=owner_id,
        assistant_id=assistant_id,
        doc_id=doc_id,
        content=content,
        type=type_,
        doc_type=doc_type,
        importance=importance,
        usage_count=0,
    )
    session.add(entry)
    session.flush()
    return _row(entry)


def get_owned_entry(session: Session, knowledge_id: int, owner_id: int) -> KnowledgeRow | None:
    entry = session.execute(
        select(UserKnowledge).where(
            UserKnowledge.id == knowledge_id, UserKnowledge.user_id == owner_id
        )
    ).scalar_one_or_none()
    return _row(entry) if entry is not None else None


def update_entry(session: Session, knowledge_id: int, **fields: Any) -> KnowledgeRow:
    """Set the given columns (content, type, assistant_id, doc_type, importance)."""
    entry = session.get(UserKnowledge, knowledge_id)
    assert entry is not None, "update_entry needs an existing entry (check ownership first)"
    for name, value in fields.items():
        setattr(entry, name, value)
    entry.updated_at = utcnow()
    session.flush()
    return _row(entry)


def delete_entry(session: Session, knowledge_id: int, owner_id: int) -> None:
    session.execute(
        delete(KnowledgeChunk).where(
            KnowledgeChunk.knowledge_id == knowledge_id, KnowledgeChunk.user_id == owner_id
        )
    )
    session.execute(
        delete(UserKnowledge).where(
            UserKnowledge.id == knowledge_id, UserKnowledge.user_id == owner_id
        )
    )


def list_entries(
    session: Session, owner_id: int, *, offset: int, limit: int, assistant_id: int | None = None
) -> tuple[list[KnowledgeRow], int]:
    """(one page, id descending; total)."""
    where = UserKnowledge.user_id == owner_id
    if assistant_id is not None:
        where = where & (UserKnowledge.assistant_id == assistant_id)
    total = session.execute(
        select(func.count()).select_from(UserKnowledge).where(where)
    ).scalar_one()
    entries = session.execute(
        select(UserKnowledge).where(where).order_by(UserKnowledge.id.desc())
        .offset(offset).limit(limit)
    ).scalars()
    return [_row(entry) for entry in entries], int(total)


def find_summary(session: Session, owner_id: int, doc_id: int) -> KnowledgeRow | None:
    """The stored document summary (tenant-global, `assistant_id` NULL), newest first."""
    entry = session.execute(
        select(UserKnowledge)
        .where(
            UserKnowledge.user_id == owner_id,
            UserKnowledge.doc_id == doc_id,
            UserKnowledge.type == SUMMARY,
            UserKnowledge.assistant_id.is_(None),
        )
        .order_by(UserKnowledge.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return _row(entry) if entry is not None else None


# --- statistics -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class UsedEntry:
    id: int
    doc_id: int | None
    filename: str | None
    doc_type: str | None
    usage_count: int
    last_used: dt.datetime | None
    importance: int


@dataclasses.dataclass(frozen=True, slots=True)
class KnowledgeStats:
    total: int
    most_used: list[UsedEntry]
    document_types: dict[str, int]
    total_content_length: int
    avg_importance: float


def knowledge_stats(session: Session, owner_id: int) -> KnowledgeStats:
    """Counts over ALL of the owner's entries (the original summed only the top 5)."""
    mine = UserKnowledge.user_id == owner_id
    total, length, importance = session.execute(
        select(
            func.count(UserKnowledge.id),
            func.coalesce(func.sum(func.length(UserKnowledge.content)), 0),
            func.avg(UserKnowledge.importance),
        ).where(mine)
    ).one()
    kinds = session.execute(
        select(UserKnowledge.doc_type, func.count(UserKnowledge.id))
        .where(mine)
        .group_by(UserKnowledge.doc_type)
    ).all()
    document_types: dict[str, int] = collections.Counter()
    for doc_type, count in kinds:
        document_types[doc_type or "unknown"] += int(count)
    top = session.execute(
        select(UserKnowledge, Document.filename)
        .outerjoin(Document, UserKnowledge.doc_id == Document.id)
        .where(mine)
        .order_by(UserKnowledge.usage_count.desc(), UserKnowledge.id.desc())
        .limit(MOST_USED_COUNT)
    ).all()
    return KnowledgeStats(
        total=int(total),
        most_used=[
            UsedEntry(entry.id, entry.doc_id, filename, entry.doc_type, entry.usage_count or 0,
                      entry.last_used, entry.importance)
            for entry, filename in top
        ],
        document_types=dict(document_types),
        total_content_length=int(length),
        avg_importance=round(float(importance), 2) if importance is not None else 0.0,
    )


# --- usage -------------------------------------------------------------------------------------


def track_usage(session: Session, owner_id: int, texts: Sequence[str]) -> int:
    """For each text, count a use of the owner's first entry (by id) whose content contains
    it or is contained in it. Returns how many texts matched an entry."""
    position = func.instr if session.get_bind().dialect.name == "sqlite" else func.strpos
    uses: collections.Counter[int] = collections.Counter()
    for text in texts:
        if not text.strip():
            continue  # "" is inside every entry: it says nothing about what was used
        needle = literal(text)
        knowledge_id = session.execute(
            select(UserKnowledge.id)
            .where(
                UserKnowledge.user_id == owner_id,
                or_(
                    position(UserKnowledge.content, needle) > 0,
                    and_(func.length(UserKnowledge.content) > 0,
                         position(needle, UserKnowledge.content) > 0),
                ),
            )
            .order_by(UserKnowledge.id)
            .limit(1)
        ).scalar_one_or_none()
        if knowledge_id is not None:
            uses[knowledge_id] += 1
    now = utcnow()
    for knowledge_id, count in uses.items():
        session.execute(
            update(UserKnowledge)
            .where(UserKnowledge.id == knowledge_id)
            .values(usage_count=UserKnowledge.usage_count + count, last_used=now,
                    updated_at=UserKnowledge.updated_at)
            .execution_options(synchronize_session=False)
        )
    return sum(uses.values())
