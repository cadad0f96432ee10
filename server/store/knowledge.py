"""Knowledge chunks (`knowledge_embeddings`) and lexical search over their full-text index.

Every chunk belongs to exactly one *source*: a knowledge entry (`knowledge_id`), a Q&A pair
(`qa_id`) or, for text indexed straight from a document, the document (`doc_id`). Writers call
`replace_chunks_for(...)` with the full new list of chunks of a source on every create and
edit, and `delete_chunks_for(...)` on delete; the database keeps the full-text index in step
(triggers on SQLite, a generated column on PostgreSQL -- migration 0002), and ON DELETE CASCADE
removes chunks with their document, entry, Q&A pair, assistant or owner.

Search (`search_chunks`, in knowledge_search.py) is always scoped to one owner and one
assistant (or, for the tenant-global fallback of spec §9.5, to rows with no assistant).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from server.store.knowledge_search import ChunkHit, search_chunks
from server.store.models import KnowledgeChunk, QaKnowledge, UserKnowledge
from server.store.types import utcnow

__all__ = [
    "ChunkHit",
    "ChunkIn",
    "count_chunks",
    "delete_chunks_for",
    "delete_chunks_of_owner",
    "index_qa",
    "qa_chunk_text",
    "record_usage",
    "replace_chunks_for",
    "search_chunks",
]


@dataclasses.dataclass(frozen=True, slots=True)
class ChunkIn:
    index: int
    text: str
    chunk_hash: str
    token_count: int


@dataclasses.dataclass(frozen=True, slots=True)
class _Source:
    column: str
    value: int


def _source(doc_id: int | None, knowledge_id: int | None, qa_id: int | None) -> _Source:
    if knowledge_id is not None and qa_id is not None:
        raise ValueError("a chunk belongs to a knowledge entry or a Q&A pair, not both")
    if knowledge_id is not None:
        return _Source("knowledge_id", knowledge_id)
    if qa_id is not None:
        return _Source("qa_id", qa_id)
    if doc_id is not None:
        return _Source("doc_id", doc_id)
    raise ValueError("name the source: doc_id, knowledge_id or qa_id")


def _of_source(source: _Source) -> Any:
    column = getattr(KnowledgeChunk, source.column)
    condition = column == source.value
    if source.column == "doc_id":
        # Chunks of a document's knowledge entries are replaced through their entry.
        condition = (
            condition & KnowledgeChunk.knowledge_id.is_(None) & KnowledgeChunk.qa_id.is_(None)
        )
    return condition


def replace_chunks_for(
    session: Session,
    *,
    owner_id: int,
    chunks: Sequence[ChunkIn],
    assistant_id: int | None = None,
    doc_id: int | None = None,
    knowledge_id: int | None = None,
    qa_id: int | None = None,
    doc_type: str | None = None,
    importance: int = 10,
    source: str = "document",
) -> int:
    """Make the chunks of one source exactly `chunks`; unchanged chunks keep their rows.

    A chunk is unchanged when its (index, hash) is already stored; its metadata is refreshed.
    Returns the number of chunks the source now has.
    """
    key = _source(doc_id, knowledge_id, qa_id)
    where = (KnowledgeChunk.user_id == owner_id) & _of_source(key)
    existing = session.execute(
        select(KnowledgeChunk.id, KnowledgeChunk.chunk_index, KnowledgeChunk.chunk_hash).where(
            where
        )
    ).all()
    by_key = {(row.chunk_index, row.chunk_hash): row.id for row in existing}
    meta = {
        "assistant_id": assistant_id,
        "doc_id": doc_id,
        "knowledge_id": knowledge_id,
        "qa_id": qa_id,
        "doc_type": doc_type,
        "importance": importance,
        "source": source,
    }
    kept: list[int] = []
    fresh: list[dict[str, Any]] = []
    for chunk in chunks:
        row_id = by_key.pop((chunk.index, chunk.chunk_hash), None)
        if row_id is not None:
            kept.append(row_id)
            continue
        fresh.append(
            {
                **meta,
                "user_id": owner_id,
                "chunk_index": chunk.index,
                "chunk_text": chunk.text,
                "chunk_hash": chunk.chunk_hash,
                "token_count": chunk.token_count,
            }
        )
    stale = list(by_key.values())
    if stale:
        session.execute(delete(KnowledgeChunk).where(KnowledgeChunk.id.in_(stale)))
    if kept:
        session.execute(
            update(KnowledgeChunk)
            .where(KnowledgeChunk.id.in_(kept))
            .values(**meta)
            .execution_options(synchronize_session=False)
        )
    if fresh:
        session.execute(insert(KnowledgeChunk), fresh)
    return len(kept) + len(fresh)


def delete_chunks_for(
    session: Session,
    *,
    owner_id: int,
    doc_id: int | None = None,
    knowledge_id: int | None = None,
    qa_id: int | None = None,
    assistant_id: int | None = None,
) -> int:
    """Delete an owner's chunks matching every id given (a whole document: all its chunks)."""
    where = KnowledgeChunk.user_id == owner_id
    for column, value in (
        ("doc_id", doc_id),
        ("knowledge_id", knowledge_id),
        ("qa_id", qa_id),
        ("assistant_id", assistant_id),
    ):
        if value is not None:
            where = where & (getattr(KnowledgeChunk, column) == value)
    return session.execute(delete(KnowledgeChunk).where(where)).rowcount or 0


def delete_chunks_of_owner(session: Session, owner_id: int) -> int:
    result = session.execute(delete(KnowledgeChunk).where(KnowledgeChunk.user_id == owner_id))
    return result.rowcount or 0


def count_chunks(session: Session, owner_id: int, assistant_id: int | None = None) -> int:
    query = (
        select(func.count()).select_from(KnowledgeChunk).where(KnowledgeChunk.user_id == owner_id)
    )
    if assistant_id is not None:
        query = query.where(KnowledgeChunk.assistant_id == assistant_id)
    return int(session.execute(query).scalar_one())


# --- Q&A pairs --------------------------------------------------------------------------


def qa_chunk_text(question: str, answer: str) -> str:
    return f"Q: {question.strip()}\nA: {answer.strip()}"


def index_qa(session: Session, qa_id: int) -> int:
    """(Re)index one Q&A pair as a single chunk; an inactive pair keeps none. Returns chunks."""
    row = session.get(QaKnowledge, qa_id)
    if row is None:
        return 0
    chunks: list[ChunkIn] = []
    if row.is_active:
        body = qa_chunk_text(row.question, row.answer)
        searchable = f"{body}\n{row.keywords}" if row.keywords else body
        chunks.append(
            ChunkIn(
                0,
                searchable,
                hashlib.sha256(searchable.encode()).hexdigest(),
                max(1, len(body) // 4),
            )
        )
    return replace_chunks_for(
        session,
        owner_id=row.user_id,
        chunks=chunks,
        assistant_id=row.assistant_id,
        qa_id=row.id,
        doc_type="qa_knowledge",
        importance=row.importance,
        source="qa_knowledge",
    )


def _usage_update(table: Any, by_doc: bool) -> Any:
    columns = table.c
    hit = columns.id.in_(bindparam("ids", expanding=True))
    if by_doc:
        hit = hit | columns.doc_id.in_(bindparam("doc_ids", expanding=True))
    return (
        update(table)
        .where((columns.user_id == bindparam("owner_id")) & hit)
        # updated_at named explicitly, or the column's onupdate would stamp it: use is no edit.
        .values(
            usage_count=columns.usage_count + 1,
            last_used=bindparam("now"),
            updated_at=columns.updated_at,
        )
    )


# Prebuilt once (Core, not the ORM): this runs inside every AI answer's transaction.
_KNOWLEDGE_USED = _usage_update(UserKnowledge.__table__, by_doc=True)
_QA_USED = _usage_update(QaKnowledge.__table__, by_doc=False)


def record_usage(
    session: Session,
    owner_id: int,
    *,
    knowledge_ids: Iterable[int] = (),
    doc_ids: Iterable[int] = (),
    qa_ids: Iterable[int] = (),
) -> None:
    """Count a use of the knowledge entries (and Q&A pairs) behind retrieved chunks.

    `doc_ids` stand for every entry of those documents (chunks indexed from a document).
    `updated_at` is left alone: being used is not an edit.
    """
    now = utcnow()
    knowledge = sorted(set(knowledge_ids))
    docs = sorted(set(doc_ids))
    if knowledge or docs:
        session.execute(
            _KNOWLEDGE_USED, {"owner_id": owner_id, "ids": knowledge, "doc_ids": docs, "now": now}
        )
    pairs = sorted(set(qa_ids))
    if pairs:
        session.execute(_QA_USED, {"owner_id": owner_id, "ids": pairs, "now": now})
