"""What an assistant knows and how busy it is: knowledge view, linked documents, the
knowledge clean-up of `validate-knowledge`, and activity statistics (spec §4.3, §5.B).

Owner-only like every assistant route (`access_assistant`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from server.assistants import access_assistant
from server.context import Services
from server.store import assistants as store
from server.store.assistants import Activity, AssistantRecord, DocumentRecord, KnowledgeEntry
from server.store.types import utcnow

STATS_WINDOW = dt.timedelta(days=30)
WEEK = dt.timedelta(days=7)

QUICK_FIX_PREFIX = "quick_fix_"
# Rows that are not the tenant's knowledge but leftovers of templates and fallbacks.
JUNK_TYPES = frozenset({"fallback", "system", "default"})
JUNK_DOC_TYPES = frozenset({"system", "fallback", "template"})
# Placeholder text that only ever comes from templates, never from a real company.
DEMO_MARKERS = (
    "lorem ipsum",
    "this is a demo knowledge entry",
    "replace this text with your company information",
)


# --- knowledge view and documents -------------------------------------------------------------


def knowledge_text(entry: KnowledgeEntry) -> str:
    """The entry as the model sees it: a line naming its kind, unless it is a quick fix."""
    if entry.filename and entry.filename.startswith(QUICK_FIX_PREFIX):
        return entry.content
    return f"[{entry.doc_type or entry.type or 'document'}]\n{entry.content}"


def knowledge_of(services: Services, owner_id: int, assistant_id: int) -> dict[str, Any]:
    with services.db.read() as session:
        record = access_assistant(session, owner_id, assistant_id)
        entries = store.list_assistant_knowledge(session, assistant_id)
    return {
        "assistant_id": record.id,
        "system_prompt": record.system_prompt,
        "documents": [knowledge_text(entry) for entry in entries],
    }


def documents_of(services: Services, owner_id: int, assistant_id: int) -> list[DocumentRecord]:
    with services.db.read() as session:
        access_assistant(session, owner_id, assistant_id)
        return store.list_linked_documents(session, assistant_id, owner_id)


# --- validate-knowledge -------------------------------------------------------------------------


def junk_warning(entry: KnowledgeEntry) -> dict[str, Any] | None:
    """Why an entry is a fallback/template leftover, as a warning; None for real knowledge."""
    if entry.type in JUNK_TYPES:
        return {"type": "fallback_source", "entry_id": entry.id,
                "message": f"Knowledge entry of type {entry.type!r} is a fallback source"}
    if entry.doc_type in JUNK_DOC_TYPES:
        return {"type": "fallback_source", "entry_id": entry.id,
                "message": f"Knowledge entry of kind {entry.doc_type!r} is a fallback source"}
    lowered = entry.content.lower()
    for marker in DEMO_MARKERS:
        if marker in lowered:
            return {"type": "demo_content", "entry_id": entry.id, "pattern": marker,
                    "message": "Knowledge entry holds template placeholder text"}
    return None


def knowledge_report(entries: list[KnowledgeEntry]) -> dict[str, Any]:
    warnings = [w for w in map(junk_warning, entries) if w is not None]
    return {
        "is_valid": not warnings,
        "errors": [],
        "warnings": warnings,
        "knowledge_count": len(entries),
        "document_count": len({e.doc_id for e in entries if e.doc_id is not None}),
        "has_fallback_sources": bool(warnings),
    }


def do_validate_knowledge(services: Services, owner_id: int, assistant_id: int) -> dict[str, Any]:
    """Deletes the junk entries (and their chunks); bumps `knowledge_version` when any went."""
    with services.db.write() as session:
        access_assistant(session, owner_id, assistant_id, for_update=True)
        entries = store.list_assistant_knowledge(session, assistant_id)
        before = knowledge_report(entries)
        junk_ids = [warning["entry_id"] for warning in before["warnings"]]
        removed = store.delete_knowledge_entries(session, junk_ids)
        if removed:
            store.update_assistant(session, assistant_id, bump_knowledge=True)
        after = knowledge_report(store.list_assistant_knowledge(session, assistant_id))
    return {
        "assistant_id": assistant_id,
        "is_clean": after["is_valid"],
        "validation_before": before,
        "validation_after": after,
        "changes": {"knowledge_removed": removed, "fallback_sources_removed": removed > 0},
    }


# --- statistics ---------------------------------------------------------------------------------


def assistants_overview(services: Services, owner_id: int) -> dict[str, Any]:
    """AI replies and dialogs started over the last 30 days, per assistant and in total."""
    since = utcnow() - STATS_WINDOW
    with services.db.read() as session:
        records = store.list_assistants(session, owner_id)
        activity = store.count_activity(session, [r.id for r in records], since)
    by_assistant = [
        {"id": r.id, "name": r.name, "is_active": r.is_active,
         "messages": activity[r.id].messages, "dialogs": activity[r.id].dialogs}
        for r in records
    ]
    return {
        "global": {
            "totalAssistants": len(records),
            "activeAssistants": sum(1 for r in records if r.is_active),
            "totalMessages": sum(item["messages"] for item in by_assistant),
            "totalDialogs": sum(item["dialogs"] for item in by_assistant),
        },
        "byAssistant": by_assistant,
    }


@dataclasses.dataclass(frozen=True, slots=True)
class AssistantStats:
    assistant: AssistantRecord
    total: Activity
    monthly: Activity
    weekly: Activity
    documents: int


def assistant_stats(services: Services, owner_id: int, assistant_id: int) -> AssistantStats:
    now = utcnow()
    with services.db.read() as session:
        record = access_assistant(session, owner_id, assistant_id)
        ids = [assistant_id]
        return AssistantStats(
            assistant=record,
            total=store.count_activity(session, ids)[assistant_id],
            monthly=store.count_activity(session, ids, now - STATS_WINDOW)[assistant_id],
            weekly=store.count_activity(session, ids, now - WEEK)[assistant_id],
            documents=store.count_linked_documents(session, assistant_id, owner_id),
        )
