"""Helpers of the documents and knowledge door tests: money, uploads, small real files, and
what the store and the uploads directory hold afterwards."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import docx
import httpx
from fpdf import FPDF
from sqlalchemy import func, select
from starlette.testclient import TestClient

from server.ai.retrieval import Snippet, retrieve
from server.context import Services
from server.store import billing as billing_store
from server.store import documents as doc_store
from server.store.documents import DocumentRow
from server.store.models import Assistant, BalanceTransaction

PRICE = Decimal("5.00")
UPLOADS = "uploads"


def fund(services: Services, user_id: int, amount: str = "100.00") -> None:
    with services.db.write() as session:
        billing_store.ensure_balance_row(session, user_id)
        billing_store.apply_delta(session, user_id, Decimal(amount))


def balance(services: Services, user_id: int) -> Decimal:
    with services.db.read() as session:
        return billing_store.get_balance(session, user_id)


def ledger_types(services: Services, user_id: int) -> list[str]:
    with services.db.read() as session:
        rows = session.execute(
            select(BalanceTransaction.transaction_type)
            .where(BalanceTransaction.user_id == user_id)
            .order_by(BalanceTransaction.id)
        )
        return [kind for (kind,) in rows]


def upload(
    client: TestClient,
    headers: dict[str, str],
    data: bytes,
    filename: str = "guide.txt",
    *,
    assistant_id: int | None = None,
    path: str = "/api/documents",
) -> httpx.Response:
    fields = {"assistant_id": str(assistant_id)} if assistant_id is not None else None
    return client.post(path, files={"file": (filename, data, "application/octet-stream")},
                       data=fields, headers=headers)


def make_pdf(pages: list[str]) -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for page in pages:
        pdf.add_page()
        if page:
            pdf.multi_cell(0, 8, page)
    return bytes(pdf.output())


def make_docx(paragraphs: list[str]) -> bytes:
    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def document_row(services: Services, owner_id: int, doc_id: int) -> DocumentRow | None:
    with services.db.read() as session:
        return doc_store.get_owned_document(session, doc_id, owner_id)


def stored_files(services: Services) -> list[Path]:
    root = services.settings.data_dir / UPLOADS
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


def search(
    services: Services, owner_id: int, assistant_id: int | None, question: str
) -> list[Snippet]:
    with services.db.read() as session:
        return retrieve(session, owner_id=owner_id, assistant_id=assistant_id,
                        question=question, track_usage=False)


def knowledge_version(services: Services, assistant_id: int) -> int:
    with services.db.read() as session:
        return session.execute(
            select(Assistant.knowledge_version).where(Assistant.id == assistant_id)
        ).scalar_one()


def count_rows(services: Services, model: Any, *conditions: Any) -> int:
    with services.db.read() as session:
        query = select(func.count()).select_from(model)
        for condition in conditions:
            query = query.where(condition)
        return session.execute(query).scalar_one()
