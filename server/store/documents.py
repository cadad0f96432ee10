"""Documents in the store: uploaded files' rows, and the version bumps knowledge edits cause.

Functions take an open session and return frozen dataclasses. Deleting a document deletes its
chunks and knowledge entries with explicit statements (not only by FK cascade), so the
triggers that keep the SQLite full-text index in step run on every database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from server.store.assistants import linked_documents_query
from server.store.models import (
    Assistant,
    BalanceTransaction,
    Document,
    KnowledgeChunk,
    UserKnowledge,
)


@dataclasses.dataclass(frozen=True, slots=True)
class DocumentRow:
    id: int
    user_id: int
    assistant_id: int | None
    filename: str
    original_filename: str | None
    mime_type: str | None
    storage_key: str | None
    size: int
    doc_hash: str | None
    upload_date: dt.datetime


def _row(document: Document) -> DocumentRow:
    return DocumentRow(
        id=document.id,
        user_id=document.user_id,
        assistant_id=document.assistant_id,
        filename=document.filename,
        original_filename=document.original_filename,
        mime_type=document.mime_type,
        storage_key=document.storage_key,
        size=document.size or 0,
        doc_hash=document.doc_hash,
        upload_date=document.upload_date,
    )


def create_document(
    session: Session,
    owner_id: int,
    *,
    filename: str,
    original_filename: str | None,
    mime_type: str,
    storage_key: str,
    size: int,
    doc_hash: str,
    assistant_id: int | None = None,
) -> DocumentRow:
    document = Document(
        user_id=owner_id,
        assistant_id=assistant_id,
        filename=filename,
        original_filename=original_filename,
        mime_type=mime_type,
        storage_key=storage_key,
        size=size,
        doc_hash=doc_hash,
    )
    session.add(document)
    session.flush()
    return _row(document)


def get_owned_document(session: Session, doc_id: int, owner_id: int) -> DocumentRow | None:
    """The document if `owner_id` owns it; None for a missing or foreign one alike."""
    document = session.execute(
        select(Document).where(Document.id == doc_id, Document.user_id == owner_id)
    ).scalar_one_or_none()
    return _row(document) if document is not None else None


def list_documents(
    session: Session, owner_id: int, *, offset: int, limit: int, assistant_id: int | None = None
) -> tuple[list[DocumentRow], int]:
    """(one page newest first, total). With an assistant: the documents linked to it, each
    once however many knowledge entries link it (an IN over ids, never a duplicating join)."""
    where = Document.user_id == owner_id
    if assistant_id is not None:
        where = where & Document.id.in_(linked_documents_query(assistant_id, owner_id))
    total = session.execute(select(func.count()).select_from(Document).where(where)).scalar_one()
    documents = session.execute(
        select(Document)
        .where(where)
        .order_by(Document.upload_date.desc(), Document.id.desc())
        .offset(offset)
        .limit(limit)
    ).scalars()
    return [_row(document) for document in documents], int(total)


def delete_document(session: Session, doc_id: int, owner_id: int) -> None:
    """The document, its knowledge entries and every chunk indexed from it."""
    owned = (KnowledgeChunk.user_id == owner_id) & (
        (KnowledgeChunk.doc_id == doc_id)
        | KnowledgeChunk.knowledge_id.in_(
            select(UserKnowledge.id).where(UserKnowledge.doc_id == doc_id)
        )
    )
    session.execute(delete(KnowledgeChunk).where(owned))
    session.execute(
        delete(UserKnowledge).where(
            UserKnowledge.doc_id == doc_id, UserKnowledge.user_id == owner_id
        )
    )
    session.execute(delete(Document).where(Document.id == doc_id, Document.user_id == owner_id))


def bump_knowledge_versions(
    session: Session, owner_id: int, assistant_ids: Collection[int] | None = None
) -> int:
    """Bump `knowledge_version` of the owner's assistants (all of them when None), so cached
    answers built on the old knowledge stop matching. Returns how many were bumped."""
    where = Assistant.user_id == owner_id
    if assistant_ids is not None:
        if not assistant_ids:
            return 0
        where = where & Assistant.id.in_(sorted(set(assistant_ids)))
    result = session.execute(
        update(Assistant)
        .where(where)
        .values(knowledge_version=Assistant.knowledge_version + 1)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


def first_active_assistant_id(session: Session, owner_id: int) -> int | None:
    return session.execute(
        select(Assistant.id)
        .where(Assistant.user_id == owner_id, Assistant.is_active.is_(True))
        .order_by(Assistant.id)
        .limit(1)
    ).scalar_one_or_none()


def link_charge(session: Session, transaction_id: int, doc_id: int) -> None:
    """Point the `document_upload` ledger row at the document it paid for (spec §9.7)."""
    session.execute(
        update(BalanceTransaction)
        .where(BalanceTransaction.id == transaction_id)
        .values(related_id=doc_id)
        .execution_options(synchronize_session=False)
    )
