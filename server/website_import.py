"""Import one web page into the knowledge base (spec §4.3 ingest-website, §4.5 import-website).

The page is fetched by `server/ai/fetch.py` under its SSRF policy (private, loopback and
link-local targets refused after resolution unless ALLOW_PRIVATE_FETCH; 400 `fetch_refused`),
a size cap and a deadline (upstream failures are 502 `fetch_failed`). Its type is sniffed on
content like an upload (HTML main text, plain text, PDF, DOCX); fewer than MIN_TEXT_CHARS of
text is refused (400). Both doors charge `document_upload`, like an upload: the balance is
checked before anything is fetched (402), the atomic charge happens once the text is known,
and it is refunded if storing or indexing then fails. The text is saved as a file under the
owner's uploads (`.txt` for import-website, `.md` for ingest-website) and becomes a document,
plus an indexed `original` knowledge entry when an assistant is named.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import anyio
import httpx

from server.admin_users import remove_stored_files
from server.ai.fetch import FetchResult, fetch_url
from server.ai.ingest import extract_document
from server.assistants import access_assistant
from server.billing import do_charge, do_refund
from server.context import Services
from server.documents import (
    DOCUMENT_UPLOAD,
    StoredFile,
    check_affordable,
    save_document,
    store_file,
    uploads_root,
)
from server.errors import ErrorCode, bad_request
from server.store.documents import DocumentRow

MAX_PAGE_BYTES = 2 * 1024 * 1024
FETCH_TIMEOUT_SECS = 20.0
MIN_TEXT_CHARS = 100
WEBSITE = "website"  # doc_type of import-website
WEBSITE_SINGLE = "website_single"  # doc_type of ingest-website


@dataclasses.dataclass(frozen=True, slots=True)
class ImportedPage:
    document: DocumentRow
    url: str  # the final URL, after redirects
    chars_indexed: int


async def do_import_website(
    services: Services,
    owner_id: int,
    url: str,
    *,
    assistant_id: int | None,
    doc_type: str = WEBSITE,
) -> ImportedPage:
    """Check (404 assistant, 402 balance), fetch, then store and index in a thread."""
    await anyio.to_thread.run_sync(_check_allowed, services, owner_id, assistant_id)
    page = await fetch_url(
        url,
        allow_private=services.settings.allow_private_fetch,
        max_bytes=MAX_PAGE_BYTES,
        timeout_secs=FETCH_TIMEOUT_SECS,
    )
    return await anyio.to_thread.run_sync(
        _save_page, services, owner_id, page, assistant_id, doc_type
    )


def _check_allowed(services: Services, owner_id: int, assistant_id: int | None) -> None:
    with services.db.read() as session:
        if assistant_id is not None:
            access_assistant(session, owner_id, assistant_id)
        check_affordable(session, owner_id, DOCUMENT_UPLOAD)


def page_text(page: FetchResult) -> str:
    text = extract_document(page.content, max_bytes=MAX_PAGE_BYTES).text
    if len(text) < MIN_TEXT_CHARS:
        raise bad_request(
            f"The page has too little text to import (under {MIN_TEXT_CHARS} characters)",
            ErrorCode.EMPTY_DOCUMENT,
        )
    return text


def page_filename(url: str, doc_type: str) -> str:
    """`website_{host}_{timestamp}.txt` (import) or `{host}_{md5 of the URL}.md` (ingest)."""
    host = (httpx.URL(url).host or "page").replace(":", "_")
    if doc_type == WEBSITE_SINGLE:
        digest = hashlib.md5(url.encode(), usedforsecurity=False).hexdigest()[:10]
        return f"{host}_{digest}.md"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    return f"website_{host}_{stamp}.txt"


def _save_page(
    services: Services, owner_id: int, page: FetchResult, assistant_id: int | None, doc_type: str
) -> ImportedPage:
    text = page_text(page)
    data = text.encode()
    filename = page_filename(page.url, doc_type)
    extension = filename.rsplit(".", 1)[1]
    paid = do_charge(services.db, owner_id, DOCUMENT_UPLOAD)
    root = uploads_root(services.settings)
    key: str | None = None
    try:
        key = store_file(root, owner_id, data, extension)
        mime_type = "text/markdown" if extension == "md" else "text/plain"
        stored = StoredFile(key, filename, page.url[:255], mime_type, len(data))
        document = save_document(services, owner_id, stored, text, assistant_id=assistant_id,
                                 doc_type=doc_type, paid=paid)
    except BaseException:
        do_refund(services.db, paid, "the page could not be added")
        if key is not None:
            remove_stored_files(root, [key])
        raise
    return ImportedPage(document, page.url, len(text))
