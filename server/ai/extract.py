"""What an uploaded file really is, and its text.

The type is sniffed from the bytes, never taken from the file name or the client's MIME type
(a PDF renamed to `.txt` is a PDF; an executable renamed to `.pdf` is refused). Allowed: PDF,
DOCX, HTML, plain text and Markdown; anything else is a 415. Parsers are well-kept libraries:
pypdf (page by page), python-docx (paragraphs and tables in document order), trafilatura for the
main content of an HTML page with a plain visible-text fallback.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import logging
import re
import unicodedata
import zipfile
from html.parser import HTMLParser

from server.errors import AppError, ErrorCode

log = logging.getLogger(__name__)

# A DOCX is a zip: refuse one that inflates beyond this (a "zip bomb").
MAX_DOCX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024
_SNIFF_CHARS = 4096


class DocKind(enum.StrEnum):
    PDF = "pdf"
    DOCX = "docx"
    HTML = "html"
    MARKDOWN = "markdown"
    TEXT = "text"


MIME_TYPES = {
    DocKind.PDF: "application/pdf",
    DocKind.DOCX: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    DocKind.HTML: "text/html",
    DocKind.MARKDOWN: "text/markdown",
    DocKind.TEXT: "text/plain",
}

# Well-known binary signatures, refused with a name so the client learns why.
_BINARY_MAGIC = (
    (b"MZ", "an executable"),
    (b"\x7fELF", "an executable"),
    (b"\x89PNG", "an image"),
    (b"\xff\xd8\xff", "an image"),
    (b"GIF8", "an image"),
    (b"\xd0\xcf\x11\xe0", "a legacy Office file (.doc/.xls); save it as DOCX"),
    (b"\x1f\x8b", "a compressed archive"),
    (b"7z\xbc\xaf", "a compressed archive"),
    (b"Rar!", "a compressed archive"),
)

_HTML_STRONG = re.compile(r"<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>]", re.IGNORECASE)
_HTML_TAG = re.compile(
    r"<(?:p|div|span|a|h[1-6]|ul|ol|li|table|tr|td|br|article|section)\b", re.IGNORECASE
)
_MARKDOWN_HINT = re.compile(r"^(?:#{1,6} |[-*] |\d+\. |```|> )", re.MULTILINE)


@dataclasses.dataclass(frozen=True, slots=True)
class Sniffed:
    kind: DocKind
    text: str | None  # decoded text for the textual kinds; None for PDF/DOCX

    @property
    def mime_type(self) -> str:
        return MIME_TYPES[self.kind]


def unsupported(detail: str) -> AppError:
    return AppError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, detail)


def sniff(data: bytes, filename: str | None = None) -> Sniffed:
    """The kind of a file from its content; `filename` only tells Markdown from plain text."""
    if b"%PDF-" in data[:1024]:
        return Sniffed(DocKind.PDF, None)
    if data.startswith(b"PK\x03\x04"):
        _check_docx(data)
        return Sniffed(DocKind.DOCX, None)
    for magic, what in _BINARY_MAGIC:
        if data.startswith(magic):
            raise unsupported(f"Unsupported file type: the file is {what}")
    text = decode_text(data)
    if text is None:
        raise unsupported("Unsupported file type: allowed are PDF, DOCX, TXT, MD and HTML")
    head = text[:_SNIFF_CHARS].lstrip()
    if _looks_like_html(head):
        return Sniffed(DocKind.HTML, text)
    if head.startswith("<?xml") or head.lower().startswith("<svg"):
        raise unsupported("Unsupported file type: XML documents are not accepted")
    name = (filename or "").lower()
    if name.endswith((".md", ".markdown")) or len(_MARKDOWN_HINT.findall(head)) >= 3:
        return Sniffed(DocKind.MARKDOWN, text)
    return Sniffed(DocKind.TEXT, text)


def _looks_like_html(head: str) -> bool:
    if _HTML_STRONG.search(head):
        return True
    return head.startswith("<") and len(_HTML_TAG.findall(head)) >= 5


def _check_docx(data: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError) as exc:
        raise unsupported("Unsupported file type: a damaged zip archive") from exc
    if "word/document.xml" not in names:
        raise unsupported("Unsupported file type: a zip archive that is not a DOCX document")
    if inflated > MAX_DOCX_UNCOMPRESSED_BYTES:
        raise AppError(ErrorCode.PAYLOAD_TOO_LARGE, "The document expands to too much data")


# --- text decoding ----------------------------------------------------------------------------


def decode_text(data: bytes) -> str | None:
    """Decode text (UTF-8/UTF-16 with BOM, UTF-8, then cp1251 or latin-1); None if binary."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return _printable_or_none(data.decode("utf-16"))
        except UnicodeDecodeError:
            return None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b"\x00" in data[:65536]:
        return None
    try:
        return _printable_or_none(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    return _printable_or_none(_decode_single_byte(data))


def _decode_single_byte(data: bytes) -> str:
    # cp1251 when the high bytes form Cyrillic words (Russian saved by Windows); latin-1
    # otherwise: Western text read as cp1251 shows single Cyrillic letters inside Latin words.
    try:
        candidate = data.decode("cp1251")
    except UnicodeDecodeError:
        return data.decode("latin-1")
    cyrillic_words = mixed_words = 0
    for word in _LETTERS.findall(candidate):
        has_cyrillic = any("\u0400" <= char <= "\u04ff" for char in word)
        if has_cyrillic and any(char.isascii() for char in word):
            mixed_words += 1
        elif has_cyrillic:
            cyrillic_words += 1
    return candidate if cyrillic_words > mixed_words else data.decode("latin-1")


_LETTERS = re.compile(r"[^\W\d_]+")


def _printable_or_none(text: str) -> str | None:
    sample = text[:100_000]
    if not sample:
        return text
    controls = sum(
        1
        for char in sample
        if char not in "\t\n\r\f\v" and unicodedata.category(char) in {"Cc", "Cs", "Co", "Cn"}
    )
    return text if controls / len(sample) <= 0.02 else None


# --- extraction -----------------------------------------------------------------------------


def unreadable(detail: str) -> AppError:
    return AppError(ErrorCode.UNREADABLE_DOCUMENT, detail, status=400)


def pdf_pages(data: bytes) -> list[str]:
    """Text of each page of a PDF."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise unreadable("The PDF is password-protected")
        return [page.extract_text() or "" for page in reader.pages]
    except AppError:
        raise
    except Exception as exc:  # untrusted input: any parser failure is the file's fault
        log.info("unreadable PDF", extra={"error": repr(exc)})
        raise unreadable("The PDF could not be read") from exc


def docx_text(data: bytes) -> str:
    """Paragraphs and tables of a DOCX body, in document order (tables as `a | b` rows)."""
    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
        blocks: list[str] = []
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                blocks.append(_table_text(item))
            else:
                blocks.append(item.text)
    except Exception as exc:  # untrusted input: any parser failure is the file's fault
        log.info("unreadable DOCX", extra={"error": repr(exc)})
        raise unreadable("The DOCX document could not be read") from exc
    return "\n\n".join(block for block in blocks if block.strip())


def _table_text(table: object) -> str:
    rows: list[str] = []
    for row in table.rows:  # type: ignore[attr-defined]
        cells: list[str] = []
        for cell in row.cells:
            value = cell.text.strip()
            # Merged cells repeat the same cell object's text; keep it once.
            if value and (not cells or cells[-1] != value):
                cells.append(value)
        if cells:
            rows.append(" | ".join(cells))
    return "\n".join(rows)


def html_text(html: str) -> str:
    """The main content of a page (trafilatura); all visible text when it finds none."""
    import trafilatura

    try:
        main = trafilatura.extract(html, include_comments=False, include_tables=True)
    except Exception as exc:  # noqa: BLE001 -- a parser failure falls back to plain text
        log.info("trafilatura failed", extra={"error": repr(exc)})
        main = None
    if main and main.strip():
        return main
    return visible_text(html)


_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "title", "iframe"})
_BLOCK_TAGS = frozenset(
    "p div br li ul ol h1 h2 h3 h4 h5 h6 tr table section article header footer nav main "
    "blockquote pre form dt dd".split()
)


class _VisibleText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def extract(data: bytes, sniffed: Sniffed) -> tuple[str, int | None]:
    """(text, page count for PDFs) of an already sniffed file."""
    if sniffed.kind is DocKind.PDF:
        pages = pdf_pages(data)
        return "\n\n".join(page.strip() for page in pages if page.strip()), len(pages)
    if sniffed.kind is DocKind.DOCX:
        return docx_text(data), None
    assert sniffed.text is not None
    if sniffed.kind is DocKind.HTML:
        return html_text(sniffed.text), None
    return sniffed.text, None
