"""Document ingestion: size cap, type check, text extraction, chunking, indexing.

`extract_document(data, max_bytes=…)` turns uploaded (or fetched) bytes into clean text or
refuses them (413 too large, 415 not an allowed type, 400 unreadable or without text).
`chunk_text(text)` cuts text into the retrieval chunks of spec §9.8: paragraph-aware, about
800 characters, a 50-character overlap, fragments under 50 characters skipped.
`index_text(session, …)` chunks a text and makes it the chunks of one source in the store.

All of it is synchronous and CPU-bound: call it from a thread, not from the event loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from sqlalchemy.orm import Session

from server.ai.extract import DocKind, extract, sniff
from server.errors import AppError, ErrorCode
from server.store import knowledge as knowledge_store
from server.store.knowledge import ChunkIn

CHUNK_TARGET_CHARS = 800
CHUNK_OVERLAP_CHARS = 50
CHUNK_MIN_CHARS = 50
CHARS_PER_TOKEN = 4


@dataclasses.dataclass(frozen=True, slots=True)
class ExtractedDocument:
    kind: DocKind
    mime_type: str
    text: str
    size: int
    pages: int | None
    text_sha256: str


def check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise AppError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"The file is too large: the limit is {max_bytes // (1024 * 1024) or max_bytes}"
            + (" MiB" if max_bytes >= 1024 * 1024 else " bytes"),
        )


def extract_document(
    data: bytes, *, max_bytes: int, filename: str | None = None
) -> ExtractedDocument:
    """Check and extract an uploaded file; the result's text is normalised and non-empty."""
    check_size(len(data), max_bytes)
    if not data:
        raise AppError(ErrorCode.EMPTY_DOCUMENT, "The file is empty", status=400)
    sniffed = sniff(data, filename)
    raw, pages = extract(data, sniffed)
    text = normalise_text(raw)
    if not text:
        raise AppError(
            ErrorCode.EMPTY_DOCUMENT, "No text could be extracted from the document", status=400
        )
    return ExtractedDocument(
        kind=sniffed.kind,
        mime_type=sniffed.mime_type,
        text=text,
        size=len(data),
        pages=pages,
        text_sha256=hashlib.sha256(text.encode()).hexdigest(),
    )


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalise_text(text: str) -> str:
    """One space between words, no trailing spaces, at most one blank line in a row."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


# --- chunking ---------------------------------------------------------------------------------

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?…;])\s+")


def _hard_split(text: str, limit: int) -> list[str]:
    """Cut text longer than `limit` at the last space before it (mid-word if there is none)."""
    pieces: list[str] = []
    while len(text) > limit:
        # Aim for pieces of equal size, so that no tiny remainder is left at the end.
        goal = -(-len(text) // -(-len(text) // limit))
        cut = text.rfind(" ", 0, goal + 1)
        if cut <= goal // 2:
            cut = text.rfind(" ", 0, limit + 1)
        if cut <= 0:
            cut = limit
        pieces.append(text[:cut].strip())
        text = text[cut:].strip()
    if text:
        pieces.append(text)
    return pieces


def _units(text: str, limit: int) -> list[tuple[str, str]]:
    """(separator before it, piece) pieces no longer than `limit`, largest structure first."""
    units: list[tuple[str, str]] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        separator = "\n\n"
        if len(paragraph) <= limit:
            units.append((separator, paragraph))
            continue
        for line in paragraph.split("\n"):
            for sentence in _SENTENCE_END.split(line.strip()):
                for piece in _hard_split(sentence, limit):
                    units.append((separator, piece))
                    separator = " "
            separator = "\n"
    return units


def _overlap_tail(text: str, size: int) -> str:
    if len(text) <= size:
        return text
    tail = text[-size:]
    if not text[-size - 1].isspace():
        space = tail.find(" ")
        if space != -1:
            tail = tail[space + 1 :]
    return tail.strip()


def chunk_text(
    text: str,
    *,
    target_chars: int = CHUNK_TARGET_CHARS,
    overlap_chars: int = CHUNK_OVERLAP_CHARS,
    min_chars: int = CHUNK_MIN_CHARS,
) -> list[ChunkIn]:
    """Paragraph-aware chunks of at most `target_chars`, each repeating the previous chunk's
    last `overlap_chars` (cut at a word) for context. A fragment shorter than `min_chars` never
    makes a chunk of its own: it joins its neighbour (only a text that short altogether is one
    short chunk, so a brief confirmed answer stays findable).
    """
    text = normalise_text(text)
    if not text:
        return []
    body_limit = max(1, target_chars - overlap_chars - 1)
    bodies: list[str] = []
    current = ""
    for separator, unit in _units(text, body_limit):
        if not current:
            current = unit
        elif len(current) + len(separator) + len(unit) <= body_limit:
            current += separator + unit
        else:
            bodies.append(current)
            current = unit
    if current:
        bodies.append(current)
    bodies = _absorb_fragments(bodies, min_chars, body_limit)
    chunks: list[ChunkIn] = []
    for index, body in enumerate(bodies):
        chunk = body if index == 0 else f"{_overlap_tail(bodies[index - 1], overlap_chars)} {body}"
        chunks.append(
            ChunkIn(
                index=index,
                text=chunk,
                chunk_hash=hashlib.sha256(chunk.encode()).hexdigest(),
                token_count=estimate_tokens(chunk),
            )
        )
    return chunks


def _absorb_fragments(bodies: list[str], min_chars: int, limit: int) -> list[str]:
    # A fragment under `min_chars` is not worth a chunk of its own (spec §9.8 skips them), but
    # it may be the one line with a phone number: glue it to a neighbour that has room instead
    # of losing it. With no room on either side it stays, and the overlap prefix it gets as a
    # chunk makes it long enough.
    merged: list[str] = []
    for index, body in enumerate(bodies):
        if len(body) < min_chars and len(bodies) > 1:
            if merged and len(merged[-1]) + 1 + len(body) <= limit:
                merged[-1] = f"{merged[-1]}\n{body}"
                continue
            following = index + 1
            if following < len(bodies) and len(body) + 1 + len(bodies[following]) <= limit:
                bodies[following] = f"{body}\n{bodies[following]}"
                continue
        merged.append(body)
    return merged


def estimate_tokens(text: str) -> int:
    return max(1, (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)


def index_text(
    session: Session,
    *,
    owner_id: int,
    text: str,
    assistant_id: int | None = None,
    doc_id: int | None = None,
    knowledge_id: int | None = None,
    doc_type: str | None = None,
    importance: int = 10,
    source: str = "document",
) -> int:
    """Chunk a text and make it the indexed chunks of one source; returns the chunk count."""
    return knowledge_store.replace_chunks_for(
        session,
        owner_id=owner_id,
        chunks=chunk_text(text),
        assistant_id=assistant_id,
        doc_id=doc_id,
        knowledge_id=knowledge_id,
        doc_type=doc_type,
        importance=importance,
        source=source,
    )
