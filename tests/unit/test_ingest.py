"""Ingestion: type sniffing on content, extraction from real generated files, chunking rules."""

from __future__ import annotations

import hashlib
import io
import itertools
import zipfile

import docx
import pytest
from fpdf import FPDF

from server.ai import extract as extract_module
from server.ai.extract import DocKind, decode_text, sniff, visible_text
from server.ai.ingest import chunk_text, extract_document, normalise_text
from server.errors import AppError, ErrorCode

MAX = 20 * 1024 * 1024


def make_pdf(pages: list[str]) -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for page in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, page)
    return bytes(pdf.output())


def make_docx() -> bytes:
    document = docx.Document()
    document.add_heading("Price list", level=1)
    document.add_paragraph("Delivery inside the city costs 300 roubles.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Item"
    table.cell(0, 1).text = "Price"
    table.cell(1, 0).text = "Gift box"
    table.cell(1, 1).text = "5 EUR"
    document.add_paragraph("Prices include VAT.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


ARTICLE = (
    "Our bakery on Green Street bakes sourdough bread every morning from locally milled rye "
    "and wheat flour. The starter is twelve years old and is fed twice a day. Loaves are ready "
    "at seven o'clock, and the last batch comes out of the oven at noon. "
)

HTML_PAGE = f"""<!DOCTYPE html>
<html><head><title>Bakery</title><style>body {{ color: red }}</style>
<script>var tracking = "SCRIPT-TEXT";</script></head>
<body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/shop">NAVIGATION-LINK Shop</a></li>
<li><a href="/about">About us</a></li></ul></nav>
<main><article><h1>How we bake</h1>
<p>{ARTICLE}</p>
<p>{ARTICLE.replace("sourdough", "rye")}</p>
<p>Every Friday we also bake cinnamon buns with cardamom, following an old Swedish recipe.</p>
</article></main>
<footer><p>FOOTER-TEXT Copyright 2024 Bakery Ltd. All rights reserved.</p>
<p>Privacy policy | Cookie settings | Terms</p></footer>
</body></html>
"""


# --- sniffing ------------------------------------------------------------------------------


def test_pdf_renamed_to_txt_is_sniffed_as_pdf() -> None:
    data = make_pdf(["The warranty lasts two years."])
    assert sniff(data, "notes.txt").kind is DocKind.PDF


def test_renamed_pdf_is_extracted_as_pdf() -> None:
    data = make_pdf(["The warranty lasts two years."])
    extracted = extract_document(data, max_bytes=MAX, filename="notes.txt")
    assert extracted.kind is DocKind.PDF
    assert extracted.mime_type == "application/pdf"
    assert "warranty lasts two years" in extracted.text


def test_docx_is_sniffed_as_docx_whatever_its_name() -> None:
    assert sniff(make_docx(), "image.png").kind is DocKind.DOCX


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + bytes(200), "setup.pdf"),
        (b"\x7fELF\x02\x01\x01" + bytes(100), "tool.txt"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "picture.txt"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(64), "photo.md"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(64), "old.doc"),
        (bytes(range(256)) * 4, "random.txt"),
    ],
    ids=["exe", "elf", "png", "jpeg", "legacy-doc", "binary"],
)
def test_binary_files_are_refused_with_415(data: bytes, name: str) -> None:
    with pytest.raises(AppError) as caught:
        extract_document(data, max_bytes=MAX, filename=name)
    assert caught.value.status == 415
    assert caught.value.code is ErrorCode.UNSUPPORTED_MEDIA_TYPE


def test_plain_zip_archive_is_refused_with_415() -> None:
    data = make_zip({"readme.txt": b"hello there"})
    with pytest.raises(AppError) as caught:
        extract_document(data, max_bytes=MAX, filename="document.docx")
    assert caught.value.status == 415


def test_damaged_zip_is_refused_with_415() -> None:
    with pytest.raises(AppError) as caught:
        sniff(b"PK\x03\x04" + b"not really a zip" * 10)
    assert caught.value.status == 415


def test_docx_that_inflates_too_much_is_refused_with_413(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(extract_module, "MAX_DOCX_UNCOMPRESSED_BYTES", 10_000)
    data = make_zip({"word/document.xml": b"<w:document/>" + b" " * 50_000})
    with pytest.raises(AppError) as caught:
        sniff(data)
    assert caught.value.status == 413


def test_xml_document_is_refused_with_415() -> None:
    with pytest.raises(AppError) as caught:
        sniff(b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>')
    assert caught.value.status == 415


def test_html_is_recognised_by_markup_not_by_name() -> None:
    assert sniff(HTML_PAGE.encode(), "page.txt").kind is DocKind.HTML


def test_markdown_is_recognised_by_name_or_by_its_marks() -> None:
    assert sniff(b"Plain words only.", "guide.md").kind is DocKind.MARKDOWN
    marked = b"# Title\n\n- one\n- two\n\n## Section\n\nText."
    assert sniff(marked, "guide.txt").kind is DocKind.MARKDOWN
    assert sniff(b"Just a note about opening hours.", "note.txt").kind is DocKind.TEXT


def test_file_over_the_size_cap_is_refused_with_413() -> None:
    with pytest.raises(AppError) as caught:
        extract_document(b"a" * 1001, max_bytes=1000)
    assert caught.value.status == 413
    assert caught.value.code is ErrorCode.PAYLOAD_TOO_LARGE


def test_document_without_text_is_refused_with_a_clear_error() -> None:
    with pytest.raises(AppError) as caught:
        extract_document(make_pdf(["", ""]), max_bytes=MAX)
    assert caught.value.status == 400
    assert caught.value.code is ErrorCode.EMPTY_DOCUMENT


def test_whitespace_only_text_file_is_refused_as_empty() -> None:
    with pytest.raises(AppError) as caught:
        extract_document(b" \n\n \t \n", max_bytes=MAX, filename="a.txt")
    assert caught.value.code is ErrorCode.EMPTY_DOCUMENT


def test_broken_pdf_is_refused_as_unreadable() -> None:
    with pytest.raises(AppError) as caught:
        extract_document(b"%PDF-1.7\n" + b"garbage " * 100, max_bytes=MAX)
    assert caught.value.status == 400
    assert caught.value.code in {ErrorCode.UNREADABLE_DOCUMENT, ErrorCode.EMPTY_DOCUMENT}


# --- decoding ------------------------------------------------------------------------------


def test_utf8_text_is_decoded() -> None:
    assert decode_text("Доставка — 300 ₽".encode()) == "Доставка — 300 ₽"


def test_cp1251_russian_text_is_decoded() -> None:
    assert decode_text("Привет, мир! Доставка по городу.".encode("cp1251")) == (
        "Привет, мир! Доставка по городу."
    )


def test_latin1_text_is_decoded() -> None:
    assert decode_text("Café crème, déjà vu".encode("latin-1")) == "Café crème, déjà vu"


def test_utf16_text_with_bom_is_decoded() -> None:
    assert decode_text("Hello, world".encode("utf-16")) == "Hello, world"


# --- extraction ------------------------------------------------------------------------------


def test_pdf_text_is_extracted_from_every_page() -> None:
    pages = [
        f"Page {n}: the {word} chapter." for n, word in enumerate(["first", "second", "third"], 1)
    ]
    extracted = extract_document(make_pdf(pages), max_bytes=MAX)
    assert extracted.pages == 3
    for page in pages:
        assert page in extracted.text


def test_docx_paragraphs_and_tables_are_extracted_in_order() -> None:
    text = extract_document(make_docx(), max_bytes=MAX).text
    assert "Delivery inside the city costs 300 roubles." in text
    assert "Gift box | 5 EUR" in text
    assert text.index("Price list") < text.index("Gift box") < text.index("Prices include VAT.")


def test_html_main_content_is_kept_and_boilerplate_dropped() -> None:
    extracted = extract_document(HTML_PAGE.encode(), max_bytes=MAX, filename="page.html")
    assert extracted.kind is DocKind.HTML
    assert "twelve years old" in extracted.text
    assert "cinnamon buns" in extracted.text
    for boilerplate in ("NAVIGATION-LINK", "FOOTER-TEXT", "SCRIPT-TEXT", "color: red"):
        assert boilerplate not in extracted.text


def test_visible_text_fallback_skips_scripts_and_styles() -> None:
    html = "<div><script>alert(1)</script><style>p{}</style><p>Hello</p><p>World</p></div>"
    assert visible_text(html) == "Hello\nWorld"


def test_tiny_html_fragment_falls_back_to_visible_text() -> None:
    html = "<html><body><p>Open 9-18</p></body></html>"
    assert extract_document(html.encode(), max_bytes=MAX).text == "Open 9-18"


def test_extracted_text_hash_is_sha256_of_the_text() -> None:
    extracted = extract_document(b"Opening hours: 9 to 18.", max_bytes=MAX)
    assert extracted.text_sha256 == hashlib.sha256(extracted.text.encode()).hexdigest()


# --- chunking --------------------------------------------------------------------------------

LONG_TEXT = "\n\n".join(
    f"Section {n}. " + " ".join(f"word{n}x{i}" for i in range(20 + 9 * n)) + "." for n in range(15)
)


def test_chunks_are_at_most_800_chars() -> None:
    chunks = chunk_text(LONG_TEXT)
    assert len(chunks) > 3
    assert all(len(chunk.text) <= 800 for chunk in chunks)


def test_each_chunk_after_the_first_starts_with_the_previous_chunks_tail() -> None:
    chunks = chunk_text(LONG_TEXT)
    for previous, chunk in itertools.pairwise(chunks):
        overlap = chunk.text.split(" ", 3)[:2]  # the first words of the chunk
        assert " ".join(overlap) in previous.text[-60:]


def test_no_text_is_lost_by_chunking() -> None:
    joined = " ".join(chunk.text for chunk in chunk_text(LONG_TEXT))
    for word in LONG_TEXT.split():
        assert word in joined


def test_short_paragraphs_are_not_split() -> None:
    paragraphs = [f"Paragraph {n} " + "lorem " * 20 for n in range(12)]
    chunks = chunk_text("\n\n".join(paragraphs))
    for paragraph in paragraphs:
        assert any(paragraph.strip() in chunk.text for chunk in chunks)


def test_no_chunk_under_50_chars_when_there_are_several() -> None:
    text = ("A long paragraph about returns. " * 24) + "\n\nTel: 123"
    chunks = chunk_text(text)
    assert len(chunks) > 1
    assert all(len(chunk.text) >= 50 for chunk in chunks)
    assert "Tel: 123" in chunks[-1].text


def test_a_short_text_is_one_chunk() -> None:
    [chunk] = chunk_text("Open 9-18")
    assert chunk.text == "Open 9-18"


def test_chunk_hash_and_token_count() -> None:
    for chunk in chunk_text(LONG_TEXT):
        assert chunk.chunk_hash == hashlib.sha256(chunk.text.encode()).hexdigest()
        assert chunk.token_count == -(-len(chunk.text) // 4)


def test_chunk_indexes_are_consecutive() -> None:
    assert [chunk.index for chunk in chunk_text(LONG_TEXT)] == list(
        range(len(chunk_text(LONG_TEXT)))
    )


def test_a_paragraph_without_spaces_is_hard_split() -> None:
    chunks = chunk_text("x" * 2000)
    assert all(len(chunk.text) <= 800 for chunk in chunks)
    assert sum(chunk.text.count("x") for chunk in chunks) >= 2000


def test_normalise_text_collapses_spaces_and_blank_lines() -> None:
    assert normalise_text("a  \t b\r\n\r\n\r\n\r\nc\x00") == "a b\n\nc"
