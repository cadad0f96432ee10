"""Ingestion throughput for a 200-page text PDF: extract + chunk + index, in pages per second.

    .venv/bin/python bench/ingest_pdf.py [--pages 200] [--runs 3] [--database-url URL]

Generates the PDF with fpdf2 (deterministic text, ~2,400 characters a page), then for each run
times the three stages separately on a fresh migrated database (a temporary SQLite file unless
--database-url names a scratch database): `extract_document` (type sniffing + pypdf),
`chunk_text`, and `replace_chunks_for` (rows + full-text index, one transaction).
Prints the median of each stage and the end-to-end pages/second.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from fpdf import FPDF

from server.ai.ingest import chunk_text, extract_document
from server.store import knowledge as knowledge_store
from server.store.db import Database
from server.store.models import Assistant, Document, User

WORDS = (
    "delivery order parcel courier warehouse refund return warranty repair tent backpack jacket "
    "payment card invoice customer support phone email store opening hours weekend discount "
    "club points gift certificate size chart measure chest waist rental deposit stove sleeping "
    "bag membrane waterproof wash detergent zipper seam pole workshop price business days free "
    "international customs tracking number carrier website privacy personal data season sales"
).split()


def make_text(rng: random.Random, paragraphs: int, sentences: int) -> str:
    blocks = []
    for _ in range(paragraphs):
        sentence_list = []
        for _ in range(sentences):
            words = rng.choices(WORDS, k=rng.randint(8, 16))
            sentence_list.append(" ".join(words).capitalize() + ".")
        blocks.append(" ".join(sentence_list))
    return "\n\n".join(blocks)


def make_pdf(pages: int) -> bytes:
    rng = random.Random(42)
    pdf = FPDF()
    pdf.set_auto_page_break(False)
    pdf.set_font("Helvetica", size=9)
    for number in range(pages):
        pdf.add_page()
        pdf.multi_cell(0, 4.2, f"Section {number + 1}\n\n" + make_text(rng, 4, 6))
    return bytes(pdf.output())


def seed_owner(database: Database) -> tuple[int, int, int]:
    with database.write() as session:
        user = User(email=f"bench-{time.time_ns()}@example.com", hashed_password="-")
        session.add(user)
        session.flush()
        assistant = Assistant(user_id=user.id, name="bench")
        document = Document(user_id=user.id, filename="bench.pdf")
        session.add_all([assistant, document])
        session.flush()
        return user.id, assistant.id, document.id


def run_once(data: bytes, database: Database) -> dict[str, float]:
    owner_id, assistant_id, doc_id = seed_owner(database)
    started = time.perf_counter()
    extracted = extract_document(data, max_bytes=50 * 1024 * 1024, filename="bench.pdf")
    extracted_at = time.perf_counter()
    chunks = chunk_text(extracted.text)
    chunked_at = time.perf_counter()
    with database.write() as session:
        knowledge_store.replace_chunks_for(
            session, owner_id=owner_id, chunks=chunks, assistant_id=assistant_id, doc_id=doc_id
        )
    indexed_at = time.perf_counter()
    return {
        "pages": float(extracted.pages or 0),
        "chars": float(len(extracted.text)),
        "chunks": float(len(chunks)),
        "extract": extracted_at - started,
        "chunk": chunked_at - extracted_at,
        "index": indexed_at - chunked_at,
        "total": indexed_at - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    data = make_pdf(args.pages)
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite:///{Path(scratch) / 'bench.db'}"
        database = Database(url)
        database.migrate()
        results = [run_once(data, database) for _ in range(args.runs)]
        database.dispose()

    first = results[0]
    median = {key: statistics.median(r[key] for r in results) for key in first}
    backend = "sqlite" if url.startswith("sqlite") else "postgresql"
    print(
        f"PDF: {args.pages} pages, {len(data) / 1024:.0f} KiB, {first['chars']:.0f} chars of text, "
        f"{first['chunks']:.0f} chunks; database: {backend}; median of {args.runs} runs"
    )
    print(f"{'stage':<10}{'seconds':>10}{'pages/s':>12}")
    for stage in ("extract", "chunk", "index", "total"):
        seconds = median[stage]
        print(f"{stage:<10}{seconds:>10.3f}{first['pages'] / seconds:>12.1f}")


if __name__ == "__main__":
    main()
