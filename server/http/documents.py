"""Doors of the `documents` module (spec §4.5), the uploads of §5.A and the assistant's
`ingest-website` of §4.3 (served here: it is the same website import as import-website).

Thin: parse, call `server/documents.py`, `server/knowledge.py`, `server/document_summary.py`
or `server/website_import.py`, render. Every id names the caller's own object, else 404.
Uploads and website imports share the `document_upload` rate limit (10 per 5 minutes).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, RootModel, StringConstraints, field_validator

from server import document_summary, documents, knowledge, website_import
from server.http.routing import MAX_DB_ID, ApiRouter, Call
from server.http.schemas import Lenient, Strict
from server.store.documents import DocumentRow
from server.store.knowledge_entries import KnowledgeRow
from server.store.types import iso

router = ApiRouter("documents")

DbId = Annotated[int, Field(ge=0, le=MAX_DB_ID)]
MAX_PAGE = 1_000_000
MAX_CONTENT_CHARS = 500_000
MAX_TRACKED_TEXTS = 100
MAX_TRACKED_CHARS = 10_000
UPLOAD = "document_upload"


class DocumentRead(BaseModel):
    id: int
    user_id: int
    filename: str
    size: int
    upload_date: str


class PageQuery(Lenient):
    page: int = Field(1, ge=1, le=MAX_PAGE)
    limit: int = Field(50, ge=1, le=100)
    assistant_id: DbId | None = None


class UploadForm(Lenient):
    assistant_id: DbId | None = None

    @field_validator("assistant_id", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


class UrlIn(Strict):
    url: str = Field(min_length=1, max_length=2048)


class ImportWebsiteIn(UrlIn):
    assistant_id: DbId | None = None


class KnowledgeIn(Strict):
    doc_id: DbId
    content: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS, pattern=r"\S")
    type: Literal["summary", "original"]
    doc_type: str | None = Field(None, min_length=1, max_length=64)
    importance: int = Field(10, ge=1, le=10)
    assistant_id: DbId | None = None


class KnowledgeUpdateIn(KnowledgeIn):
    doc_id: DbId | None = None  # the original's schema requires it; it is ignored
    importance: int | None = Field(None, ge=1, le=10)  # kept when not given


TrackedText = Annotated[str, StringConstraints(max_length=MAX_TRACKED_CHARS)]


class TrackUsageIn(RootModel[list[TrackedText]]):
    """A raw JSON array of the texts an answer used."""

    root: list[TrackedText] = Field(max_length=MAX_TRACKED_TEXTS)


class ServiceKnowledgeQuery(Lenient):
    assistant_id: DbId | None = None


def render_document(document: DocumentRow) -> dict[str, Any]:
    return {
        "id": document.id,
        "user_id": document.user_id,
        "filename": document.filename,
        "size": document.size,
        "upload_date": iso(document.upload_date),
    }


def render_entry(entry: KnowledgeRow) -> dict[str, Any]:
    return {
        "id": entry.id,
        "doc_id": entry.doc_id,
        "type": entry.type,
        "content": knowledge.render_content(entry),
        "doc_type": entry.doc_type,
        "importance": entry.importance,
        "last_used": iso(entry.last_used) if entry.last_used else None,
        "usage_count": entry.usage_count,
        "assistant_id": entry.assistant_id,
    }


def fields_of(body: KnowledgeIn | KnowledgeUpdateIn) -> knowledge.KnowledgeFields:
    return knowledge.KnowledgeFields(
        content=body.content, type=body.type, assistant_id=body.assistant_id,
        doc_type=body.doc_type, importance=body.importance,
    )


# --- documents ----------------------------------------------------------------------------------


@router.route("GET", "/api/documents", auth="user", query=PageQuery, errors=(404,),
              summary="Own documents, newest first (optionally those of one assistant)")
async def list_documents(call: Call) -> dict[str, Any]:
    query: PageQuery = call.query
    page = await call.run(documents.list_documents, call.services, call.user.id,
                          page=query.page, limit=query.limit, assistant_id=query.assistant_id)
    items = [render_document(d) | {"doc_hash": d.doc_hash} for d in page.documents]
    return {"documents": items, "items": items, "total": page.total, "page": page.page,
            "pages": page.pages, "limit": page.limit}


@router.route("POST", "/api/documents", auth="user", multipart=True, form=UploadForm,
              response=DocumentRead, rate_limit=UPLOAD, errors=(400, 402, 404, 503),
              summary="Upload a document (PDF, DOCX, TXT, MD, HTML); charges document_upload")
async def upload_document(call: Call) -> dict[str, Any]:
    assert call.upload is not None
    document = await call.run(documents.do_upload_document, call.services, call.user.id,
                              call.upload.data, call.upload.filename, call.body.assistant_id)
    return render_document(document)


@router.route("POST", "/api/assistants/{assistant_id}/documents", auth="user", multipart=True,
              response=DocumentRead, rate_limit=UPLOAD, errors=(400, 402, 503),
              summary="Upload a document into an assistant's knowledge; charges document_upload")
async def upload_assistant_document(call: Call) -> dict[str, Any]:
    assert call.upload is not None
    document = await call.run(documents.do_upload_document, call.services, call.user.id,
                              call.upload.data, call.upload.filename, call.path["assistant_id"])
    return render_document(document)


@router.route("POST", "/api/documents/import-website", auth="user", body=ImportWebsiteIn,
              response=DocumentRead, rate_limit=UPLOAD, errors=(400, 402, 404, 415, 502, 503),
              summary="Import one web page as a document (SSRF-guarded); charges document_upload")
async def import_website(call: Call) -> dict[str, Any]:
    body: ImportWebsiteIn = call.body
    imported = await website_import.do_import_website(
        call.services, call.user.id, body.url, assistant_id=body.assistant_id
    )
    return render_document(imported.document)


@router.route("POST", "/api/assistants/{assistant_id}/ingest-website", auth="user", body=UrlIn,
              rate_limit=UPLOAD, errors=(400, 402, 415, 502, 503),
              summary="Import one web page into the assistant's knowledge (SSRF-guarded)")
async def ingest_website(call: Call) -> dict[str, Any]:
    imported = await website_import.do_import_website(
        call.services, call.user.id, call.body.url, assistant_id=call.path["assistant_id"],
        doc_type=website_import.WEBSITE_SINGLE,
    )
    return {"ok": True, "doc_id": imported.document.id, "url": imported.url,
            "chars_indexed": imported.chars_indexed}


@router.route("DELETE", "/api/documents/{doc_id}", auth="user",
              summary="Delete a document, its knowledge, chunks and file; bump versions")
async def delete_document(call: Call) -> dict[str, Any]:
    await call.run(documents.do_delete_document, call.services, call.user.id, call.path["doc_id"])
    return {"ok": True}


@router.route("GET", "/api/documents/{doc_id}/text", auth="user", errors=(400, 415, 503),
              summary="The document's text, extracted from the stored file")
async def document_text(call: Call) -> dict[str, Any]:
    text = await call.run(documents.document_text, call.services, call.user.id,
                          call.path["doc_id"])
    return {"text": text}


@router.route("GET", "/api/documents/{doc_id}/summary", auth="user", errors=(503,),
              summary="Stored summary, or generate (LLM, stored) / extract (offline) one")
async def document_summary_view(call: Call) -> dict[str, Any]:
    summary = await document_summary.document_summary(call.services, call.user.id,
                                                      call.path["doc_id"])
    return summary.render()


@router.route("POST", "/api/analyze-document/{doc_id}", auth="user", errors=(503,),
              summary="Analyse a document again (LLM, or extractive offline); not stored")
async def analyze_document(call: Call) -> dict[str, Any]:
    summary = await document_summary.analyze_document(call.services, call.user.id,
                                                      call.path["doc_id"])
    return summary.render()


# --- knowledge ----------------------------------------------------------------------------------


@router.route("POST", "/api/knowledge/confirm", auth="user", body=KnowledgeIn, errors=(404,),
              summary="Add a knowledge entry for a document; indexed; bumps versions")
async def confirm_knowledge(call: Call) -> dict[str, Any]:
    body: KnowledgeIn = call.body
    knowledge_id = await call.run(knowledge.do_confirm_knowledge, call.services, call.user.id,
                                  body.doc_id, fields_of(body))
    return {"ok": True, "id": knowledge_id}


@router.route("GET", "/api/knowledge/confirmed", auth="user", query=PageQuery, errors=(404,),
              summary="Own knowledge entries, newest first")
async def confirmed_knowledge(call: Call) -> dict[str, Any]:
    query: PageQuery = call.query
    page = await call.run(knowledge.list_confirmed, call.services, call.user.id,
                          assistant_id=query.assistant_id, page=query.page, limit=query.limit)
    return {"items": [render_entry(entry) for entry in page.items], "total": page.total,
            "page": query.page, "pages": -(-page.total // query.limit), "limit": query.limit}


@router.route("GET", "/api/knowledge/stats", auth="user",
              summary="Knowledge counts, the 5 most used entries, counts by kind")
async def knowledge_stats(call: Call) -> dict[str, Any]:
    stats = await call.run(knowledge.knowledge_stats, call.services, call.user.id)
    return {
        "total_documents": stats.total,
        "most_used": [
            {"id": used.id, "doc_id": used.doc_id, "filename": used.filename,
             "doc_type": used.doc_type, "usage_count": used.usage_count,
             "last_used": iso(used.last_used) if used.last_used else None,
             "importance": used.importance}
            for used in stats.most_used
        ],
        "document_types": stats.document_types,
        "total_content_length": stats.total_content_length,
        "avg_importance": stats.avg_importance,
    }


@router.route("POST", "/api/knowledge/track-usage", auth="user", body=TrackUsageIn,
              summary="Count a use of the entries containing (or contained in) each text")
async def track_usage(call: Call) -> dict[str, Any]:
    texts: list[str] = call.body.root
    if not texts:
        return {"message": "No texts given; nothing to track"}
    updated = await call.run(knowledge.do_track_usage, call.services, call.user.id, texts)
    return {"message": f"Usage tracked for {updated} of {len(texts)} texts",
            "updated_count": updated}


@router.route("PUT", "/api/knowledge/{knowledge_id}", auth="user", body=KnowledgeUpdateIn,
              summary="Replace a knowledge entry's content; re-indexed; bumps versions")
async def update_knowledge(call: Call) -> dict[str, Any]:
    await call.run(knowledge.do_update_knowledge, call.services, call.user.id,
                   call.path["knowledge_id"], fields_of(call.body))
    return {"ok": True}


@router.route("DELETE", "/api/knowledge/{knowledge_id}", auth="user",
              summary="Delete a knowledge entry and its chunks; bumps versions")
async def delete_knowledge(call: Call) -> dict[str, Any]:
    await call.run(knowledge.do_delete_knowledge, call.services, call.user.id,
                   call.path["knowledge_id"])
    return {"ok": True}


@router.route("GET", "/api/user-knowledge/{user_id}", auth="service",
              query=ServiceKnowledgeQuery,
              summary="Prompt and knowledge texts of a user's assistant (service callers only)")
async def user_knowledge(call: Call) -> dict[str, Any]:
    return await call.run(knowledge.knowledge_for_service, call.services, call.path["user_id"],
                          call.query.assistant_id)
