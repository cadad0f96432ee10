"""Knowledge entries: confirm, list, edit, delete, usage and statistics (spec §4.5).

Every entry is the caller's (`user_knowledge.user_id`), and so are the document and the
assistant it names (spec §10 S17: the original let an entry be attached to another tenant's
assistant); a foreign or missing id is a 404. Every create and edit (re)indexes the entry's
text keyed by its id, so an edit replaces its chunks (old words are no longer found) and a
delete removes them; each bumps `knowledge_version` of the assistants concerned (all of the
owner's when the entry is tenant-global).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from sqlalchemy.orm import Session

from server.ai.ingest import index_text
from server.assistant_knowledge import knowledge_text
from server.assistants import access_assistant
from server.context import Services
from server.documents import access_document
from server.errors import not_found
from server.store import assistants as assistant_store
from server.store import documents as doc_store
from server.store import knowledge_entries as entries
from server.store.knowledge_entries import KnowledgeRow, KnowledgeStats

KNOWLEDGE_NOT_FOUND = "Knowledge entry not found"
CONFIRMED_DOC_TYPE = "confirmed_knowledge"
CONFIRMED_SOURCE = "confirmed_knowledge"
SUMMARY = entries.SUMMARY


def access_entry(session: Session, owner_id: int, knowledge_id: int) -> KnowledgeRow:
    entry = entries.get_owned_entry(session, knowledge_id, owner_id)
    if entry is None:
        raise not_found(KNOWLEDGE_NOT_FOUND)
    return entry


def parsed_summary(content: str) -> list[Any] | None:
    """A summary entry's JSON array, or None when the content is not one."""
    try:
        value = json.loads(content)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def render_content(entry: KnowledgeRow) -> Any:
    if entry.type == SUMMARY:
        parsed = parsed_summary(entry.content)
        if parsed is not None:
            return parsed
    return entry.content


def searchable_text(content: str, type_: str) -> str:
    """What retrieval should find: the summaries' words, not a JSON array's punctuation."""
    parsed = parsed_summary(content) if type_ == SUMMARY else None
    if parsed is None:
        return content
    parts = [str(item.get("summary", "")) if isinstance(item, dict) else str(item)
             for item in parsed]
    return "\n\n".join(part for part in parts if part.strip())


def _index(session: Session, entry: KnowledgeRow) -> None:
    index_text(
        session, owner_id=entry.user_id, text=searchable_text(entry.content, entry.type),
        assistant_id=entry.assistant_id, doc_id=entry.doc_id, knowledge_id=entry.id,
        doc_type=entry.doc_type or CONFIRMED_DOC_TYPE, importance=entry.importance,
        source=CONFIRMED_SOURCE,
    )


def _bump(session: Session, owner_id: int, *assistant_ids: int | None) -> None:
    # A tenant-global entry (no assistant) feeds every assistant's fallback search.
    if any(assistant_id is None for assistant_id in assistant_ids):
        doc_store.bump_knowledge_versions(session, owner_id)
    else:
        doc_store.bump_knowledge_versions(
            session, owner_id, [a for a in assistant_ids if a is not None]
        )


@dataclasses.dataclass(frozen=True, slots=True)
class KnowledgeFields:
    content: str
    type: str
    assistant_id: int | None
    doc_type: str | None = None
    importance: int | None = None


def do_confirm_knowledge(
    services: Services, owner_id: int, doc_id: int, fields: KnowledgeFields
) -> int:
    with services.db.write() as session:
        access_document(session, owner_id, doc_id)
        if fields.assistant_id is not None:
            access_assistant(session, owner_id, fields.assistant_id)
        entry = entries.create_entry(
            session, owner_id, doc_id=doc_id, assistant_id=fields.assistant_id,
            content=fields.content, type_=fields.type,
            doc_type=fields.doc_type or CONFIRMED_DOC_TYPE,
            importance=fields.importance if fields.importance is not None else 10,
        )
        _index(session, entry)
        _bump(session, owner_id, entry.assistant_id)
        return entry.id


def do_update_knowledge(
    services: Services, owner_id: int, knowledge_id: int, fields: KnowledgeFields
) -> None:
    """Replaces content, type and assistant (a missing assistant makes it tenant-global, as
    in the original); keeps doc_type and importance unless given; re-indexes."""
    with services.db.write() as session:
        current = access_entry(session, owner_id, knowledge_id)
        if fields.assistant_id is not None:
            access_assistant(session, owner_id, fields.assistant_id)
        changes: dict[str, Any] = {
            "content": fields.content, "type": fields.type, "assistant_id": fields.assistant_id,
        }
        if fields.doc_type is not None:
            changes["doc_type"] = fields.doc_type
        if fields.importance is not None:
            changes["importance"] = fields.importance
        entry = entries.update_entry(session, knowledge_id, **changes)
        _index(session, entry)
        _bump(session, owner_id, current.assistant_id, entry.assistant_id)


def do_delete_knowledge(services: Services, owner_id: int, knowledge_id: int) -> None:
    with services.db.write() as session:
        access_entry(session, owner_id, knowledge_id)
        entries.delete_entry(session, knowledge_id, owner_id)
        doc_store.bump_knowledge_versions(session, owner_id)


@dataclasses.dataclass(frozen=True, slots=True)
class KnowledgePage:
    items: list[KnowledgeRow]
    total: int


def list_confirmed(
    services: Services, owner_id: int, *, assistant_id: int | None, page: int, limit: int
) -> KnowledgePage:
    with services.db.read() as session:
        if assistant_id is not None:
            access_assistant(session, owner_id, assistant_id)
        items, total = entries.list_entries(
            session, owner_id, offset=(page - 1) * limit, limit=limit, assistant_id=assistant_id
        )
    return KnowledgePage(items, total)


def knowledge_stats(services: Services, owner_id: int) -> KnowledgeStats:
    with services.db.read() as session:
        return entries.knowledge_stats(session, owner_id)


def do_track_usage(services: Services, owner_id: int, texts: list[str]) -> int:
    with services.db.write() as session:
        return entries.track_usage(session, owner_id, texts)


def knowledge_for_service(
    services: Services, owner_id: int, assistant_id: int | None
) -> dict[str, Any]:
    """The prompt and knowledge texts of the named or the first active assistant (service
    callers only: it dumps a tenant's private knowledge, spec §10 S3)."""
    with services.db.read() as session:
        if assistant_id is None:
            assistant_id = doc_store.first_active_assistant_id(session, owner_id)
            if assistant_id is None:
                raise not_found("The user has no active assistant")
        record = access_assistant(session, owner_id, assistant_id)
        knowledge = assistant_store.list_assistant_knowledge(session, record.id)
    return {
        "system_prompt": record.system_prompt,
        "documents": [knowledge_text(entry) for entry in knowledge],
    }
