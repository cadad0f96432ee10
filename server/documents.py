"""Documents: upload, list, delete, and the text of a stored file (spec §4.5, §5.A).

An upload is checked before it costs anything (size 413, type sniffed on content 415, the
assistant 404), then `document_upload` is charged BEFORE the file is stored (402); when any
later step fails (no text, a parser error, the database) the charge is refunded and the file
removed. Files live under `DATA_DIR/uploads` with keys relative to it
(`users/{uid}/documents/{uuid}.{real extension}`); the original name is kept in the row only.
With an assistant, the text becomes an `original` knowledge entry of it, indexed for retrieval,
and the assistant's `knowledge_version` is bumped. Website imports (`server/website_import.py`)
reuse `save_document`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import uuid
from pathlib import Path

from sqlalchemy.orm import Session

from server.admin_users import UPLOADS_DIR_NAME, remove_stored_files
from server.ai.extract import DocKind, extract, sniff
from server.ai.ingest import check_size, index_text, normalise_text
from server.assistants import access_assistant
from server.billing import Charge, do_charge, do_refund
from server.config import Settings
from server.context import Services
from server.doc_types import classify_text
from server.errors import AppError, ErrorCode, not_found
from server.store import billing as billing_store
from server.store import documents as doc_store
from server.store import knowledge_entries as entries
from server.store.documents import DocumentRow

log = logging.getLogger(__name__)

DOCUMENT_NOT_FOUND = "Document not found"
DOCUMENT_UPLOAD = "document_upload"
ORIGINAL = "original"
MAX_FILENAME_CHARS = 255
EXTENSIONS = {
    DocKind.PDF: "pdf",
    DocKind.DOCX: "docx",
    DocKind.HTML: "html",
    DocKind.MARKDOWN: "md",
    DocKind.TEXT: "txt",
}
_UNSAFE_NAME_CHARS = frozenset('<>:"|?*')


def uploads_root(settings: Settings) -> Path:
    return settings.data_dir / UPLOADS_DIR_NAME


def access_document(session: Session, owner_id: int, doc_id: int) -> DocumentRow:
    document = doc_store.get_owned_document(session, doc_id, owner_id)
    if document is None:
        raise not_found(DOCUMENT_NOT_FOUND)
    return document


def storage_unavailable() -> AppError:
    return AppError(ErrorCode.SERVICE_UNAVAILABLE, "The document storage is unavailable")


def no_text() -> AppError:
    return AppError(
        ErrorCode.EMPTY_DOCUMENT, "No text could be extracted from the document", status=400
    )


# --- files --------------------------------------------------------------------------------------


def safe_filename(raw: str | None, extension: str) -> str:
    """The client's file name without any directory, control or shell-special characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in _UNSAFE_NAME_CHARS)
    name = name.strip().lstrip(".").strip()
    if not name:
        return f"document.{extension}"
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, suffix = name.rpartition(".")
        if dot and 0 < len(suffix) <= 10:
            return stem[: MAX_FILENAME_CHARS - len(suffix) - 1] + "." + suffix
        return name[:MAX_FILENAME_CHARS]
    return name


def printable(raw: str | None) -> str | None:
    """The client's name as given, minus control characters (PostgreSQL refuses NUL)."""
    kept = "".join(ch for ch in raw or "" if ch.isprintable())[:MAX_FILENAME_CHARS]
    return kept or None


def store_file(root: Path, owner_id: int, data: bytes, extension: str) -> str:
    """Write a new file (never overwriting one) and return its key relative to `root`."""
    key = f"users/{owner_id}/documents/{uuid.uuid4().hex}.{extension}"
    path = root / key
    partial = path.with_name(path.name + ".part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(data)
        os.replace(partial, path)  # readers never see half a file
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        log.error("could not store a document", extra={"key": key, "error": str(exc)})
        raise storage_unavailable() from exc
    return key


def read_stored_file(root: Path, key: str | None) -> bytes | None:
    if not key:
        return None
    base = root.resolve()
    path = (base / key).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        log.error("could not read a document", extra={"key": key, "error": str(exc)})
        raise storage_unavailable() from exc


# --- saving -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class StoredFile:
    key: str
    filename: str
    original_filename: str | None
    mime_type: str
    size: int


def check_affordable(session: Session, owner_id: int, service_type: str) -> None:
    """The 402 early, before slow work; the charge itself stays an atomic debit later."""
    price = billing_store.get_price(session, service_type)
    balance = billing_store.get_balance(session, owner_id)
    if price is None or not price.is_active or balance < price.price:
        raise billing_store.insufficient_balance(balance, price.price if price else None)


def save_document(
    services: Services,
    owner_id: int,
    stored: StoredFile,
    text: str,
    *,
    assistant_id: int | None,
    doc_type: str,
    paid: Charge,
) -> DocumentRow:
    """One transaction: the document row, and with an assistant its indexed knowledge entry."""
    with services.db.write() as session:
        if assistant_id is not None:
            access_assistant(session, owner_id, assistant_id, for_update=True)
        document = doc_store.create_document(
            session, owner_id, filename=stored.filename,
            original_filename=stored.original_filename, mime_type=stored.mime_type,
            storage_key=stored.key, size=stored.size,
            doc_hash=hashlib.md5(text.encode(), usedforsecurity=False).hexdigest(),
            assistant_id=assistant_id,
        )
        doc_store.link_charge(session, paid.transaction_id, document.id)
        if assistant_id is not None:
            entry = entries.create_entry(
                session, owner_id, doc_id=document.id, assistant_id=assistant_id,
                content=text, type_=ORIGINAL, doc_type=doc_type,
            )
            index_text(session, owner_id=owner_id, text=text, assistant_id=assistant_id,
                       doc_id=document.id, knowledge_id=entry.id, doc_type=doc_type)
            doc_store.bump_knowledge_versions(session, owner_id, [assistant_id])
        return document


def do_upload_document(
    services: Services,
    owner_id: int,
    data: bytes,
    filename: str | None,
    assistant_id: int | None = None,
) -> DocumentRow:
    check_size(len(data), services.settings.max_upload_bytes)
    if not data:
        raise AppError(ErrorCode.EMPTY_DOCUMENT, "The file is empty", status=400)
    sniffed = sniff(data, filename)
    if assistant_id is not None:
        with services.db.read() as session:
            access_assistant(session, owner_id, assistant_id)
    paid = do_charge(services.db, owner_id, DOCUMENT_UPLOAD)
    root = uploads_root(services.settings)
    extension = EXTENSIONS[sniffed.kind]
    key: str | None = None
    try:
        key = store_file(root, owner_id, data, extension)
        raw, _pages = extract(data, sniffed)
        text = normalise_text(raw)
        if not text:
            raise no_text()
        stored = StoredFile(key, safe_filename(filename, extension), printable(filename),
                            sniffed.mime_type, len(data))
        return save_document(services, owner_id, stored, text, assistant_id=assistant_id,
                             doc_type=classify_text(text), paid=paid)
    except BaseException:
        do_refund(services.db, paid, "the document could not be added")
        if key is not None:
            remove_stored_files(root, [key])
        raise


# --- reading and deleting -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class DocumentPage:
    documents: list[DocumentRow]
    total: int
    page: int
    limit: int

    @property
    def pages(self) -> int:
        return math.ceil(self.total / self.limit)


def list_documents(
    services: Services, owner_id: int, *, page: int, limit: int, assistant_id: int | None
) -> DocumentPage:
    with services.db.read() as session:
        if assistant_id is not None:
            access_assistant(session, owner_id, assistant_id)
        documents, total = doc_store.list_documents(
            session, owner_id, offset=(page - 1) * limit, limit=limit, assistant_id=assistant_id
        )
    return DocumentPage(documents, total, page, limit)


def do_delete_document(services: Services, owner_id: int, doc_id: int) -> None:
    """Knowledge, chunks and the row in one transaction; the file after the commit (a rolled
    back deletion never loses it). Every assistant of the owner may have used the text."""
    with services.db.write() as session:
        document = access_document(session, owner_id, doc_id)
        doc_store.delete_document(session, doc_id, owner_id)
        doc_store.bump_knowledge_versions(session, owner_id)
    if document.storage_key:
        remove_stored_files(uploads_root(services.settings), [document.storage_key])


def document_text(services: Services, owner_id: int, doc_id: int) -> str:
    """The text extracted again from the stored file (404 when the file or its text is gone)."""
    with services.db.read() as session:
        document = access_document(session, owner_id, doc_id)
    data = read_stored_file(uploads_root(services.settings), document.storage_key)
    if not data:
        raise not_found("The document's file is missing")
    raw, _pages = extract(data, sniff(data, document.filename))
    text = normalise_text(raw)
    if not text:
        raise not_found("The document has no text")
    return text
