"""Documents doors: upload (size, type on content, charge and refund, knowledge + index),
list, delete, text, and summaries (offline extractive, and through an LLM)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import pytest
from assistant_data import create_assistant
from document_data import (
    PRICE,
    balance,
    count_rows,
    document_row,
    fund,
    knowledge_version,
    ledger_types,
    make_docx,
    make_pdf,
    search,
    stored_files,
    upload,
)
from fakes.openai_server import FakeOpenAI, fail, reply
from starlette.testclient import TestClient

from server.context import Services
from server.store.models import BalanceTransaction, Document, KnowledgeChunk, UserKnowledge
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]

GUIDE = (
    "Our warehouse ships parcels every weekday before noon. Returns are accepted within "
    "thirty days when the zebracorn seal is intact. Call the hotline for help."
)


@pytest.fixture
def funded(user: UserRecord, services: Services) -> UserRecord:
    fund(services, user.id)
    return user


@pytest.fixture
def headers(funded: UserRecord, auth_headers: Headers) -> dict[str, str]:
    return auth_headers(funded)


# --- upload -----------------------------------------------------------------------------------


def test_upload_returns_document_and_keeps_file_under_a_relative_key(
    client: TestClient, services: Services, funded: UserRecord, headers: dict[str, str]
) -> None:
    response = upload(client, headers, GUIDE.encode(), "../../etc/Shipping guide.txt")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "user_id", "filename", "size", "upload_date"}
    assert body["user_id"] == funded.id and body["size"] == len(GUIDE)
    assert body["filename"] == "Shipping guide.txt" and body["upload_date"].endswith("Z")
    row = document_row(services, funded.id, body["id"])
    assert row is not None and row.mime_type == "text/plain"
    assert row.original_filename == "../../etc/Shipping guide.txt"
    assert row.storage_key is not None
    assert row.storage_key.startswith(f"users/{funded.id}/documents/")
    assert row.storage_key.endswith(".txt")
    assert row.doc_hash == hashlib.md5(GUIDE.encode()).hexdigest()
    root = services.settings.data_dir / "uploads"
    assert (root / row.storage_key).read_bytes() == GUIDE.encode()


def test_control_characters_in_the_file_name_are_dropped(
    client: TestClient, services: Services, funded: UserRecord, headers: dict[str, str]
) -> None:
    boundary = "bound4567"
    raw = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
           f'filename="da\x00ta\x07.txt"\r\n\r\n{GUIDE}\r\n--{boundary}--\r\n').encode()
    response = client.post(
        "/api/documents", content=raw,
        headers=headers | {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 200, response.text
    row = document_row(services, funded.id, response.json()["id"])
    assert row is not None and (row.filename, row.original_filename) == ("data.txt", "data.txt")


def test_upload_charges_document_upload_linked_to_the_document(
    client: TestClient, services: Services, funded: UserRecord, headers: dict[str, str]
) -> None:
    before = balance(services, funded.id)
    doc_id = upload(client, headers, GUIDE.encode()).json()["id"]
    assert balance(services, funded.id) == before - PRICE
    assert count_rows(services, BalanceTransaction,
                      BalanceTransaction.transaction_type == "document_upload",
                      BalanceTransaction.related_id == doc_id) == 1


def test_upload_without_balance_is_402_and_stores_nothing(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    response = upload(client, auth_headers(user), GUIDE.encode())
    assert response.status_code == 402
    detail = response.json()["detail"]
    assert detail["error"] == "insufficient_balance" and detail["needsTopUp"] is True
    assert count_rows(services, Document) == 0
    assert stored_files(services) == []


def test_pdf_renamed_to_txt_is_stored_and_read_as_a_pdf(
    client: TestClient, services: Services, funded: UserRecord, headers: dict[str, str]
) -> None:
    response = upload(client, headers, make_pdf(["The warranty lasts two years."]), "notes.txt")
    assert response.status_code == 200, response.text
    row = document_row(services, funded.id, response.json()["id"])
    assert row is not None and row.mime_type == "application/pdf"
    assert row.storage_key is not None and row.storage_key.endswith(".pdf")
    text = client.get(f"/api/documents/{row.id}/text", headers=headers)
    assert text.status_code == 200
    assert "warranty lasts two years" in text.json()["text"]


def test_docx_text_is_extracted(
    client: TestClient, funded: UserRecord, headers: dict[str, str]
) -> None:
    data = make_docx(["Delivery inside the city costs 300 roubles.", "Prices include VAT."])
    doc_id = upload(client, headers, data, "prices.docx").json()["id"]
    text = client.get(f"/api/documents/{doc_id}/text", headers=headers).json()["text"]
    assert text == "Delivery inside the city costs 300 roubles.\n\nPrices include VAT."


@pytest.mark.parametrize(
    ("data", "filename"),
    [(b"MZ\x90\x00" + b"\x00" * 200, "manual.pdf"), (b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "a.txt")],
    ids=["executable-named-pdf", "image-named-txt"],
)
def test_disallowed_type_is_415_and_not_charged(
    client: TestClient, services: Services, funded: UserRecord, headers: dict[str, str],
    data: bytes, filename: str,
) -> None:
    response = upload(client, headers, data, filename)
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert ledger_types(services, funded.id) == []
    assert stored_files(services) == []


def test_missing_file_part_is_422(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/api/documents", data={"assistant_id": ""}, headers=headers,
                           files={"other": ("a.txt", b"hello", "text/plain")})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


def test_a_pdf_without_text_is_refused_and_refunded(
    client: TestClient, services: Services, funded: UserRecord, headers: dict[str, str]
) -> None:
    before = balance(services, funded.id)
    response = upload(client, headers, make_pdf([""]), "blank.pdf")
    assert response.status_code == 400
    assert response.json()["code"] == "empty_document"
    assert balance(services, funded.id) == before
    assert ledger_types(services, funded.id) == ["document_upload", "refund"]
    assert count_rows(services, Document) == 0
    assert stored_files(services) == []


def test_storage_failure_is_503_and_refunded(
    client: TestClient, services: Services, funded: UserRecord, headers: dict[str, str]
) -> None:
    blocker = services.settings.data_dir / "uploads"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the uploads directory should be")
    response = upload(client, headers, GUIDE.encode())
    assert response.status_code == 503 and response.json()["code"] == "service_unavailable"
    assert ledger_types(services, funded.id) == ["document_upload", "refund"]
    assert count_rows(services, Document) == 0


class TestSmallUploadCap:
    CAP = 2000

    @pytest.fixture
    def settings_env(self) -> dict[str, str]:
        return {"MAX_UPLOAD_BYTES": str(self.CAP)}

    def test_declared_oversized_upload_is_413_and_not_charged(
        self, client: TestClient, services: Services, funded: UserRecord,
        headers: dict[str, str],
    ) -> None:
        response = upload(client, headers, b"a" * (self.CAP + 1))
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"
        assert ledger_types(services, funded.id) == []

    def test_streamed_upload_without_length_is_cut_off_with_413(
        self, client: TestClient, headers: dict[str, str]
    ) -> None:
        boundary = "bound0123"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"big.txt\"\r\nContent-Type: text/plain\r\n\r\n").encode()

        def body() -> Iterator[bytes]:
            yield head
            for _ in range(200):
                yield b"b" * 1024
            yield f"\r\n--{boundary}--\r\n".encode()

        response = client.post(
            "/api/documents", content=body(),
            headers=headers | {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 413

    def test_upload_just_under_the_cap_is_accepted(
        self, client: TestClient, headers: dict[str, str]
    ) -> None:
        assert upload(client, headers, b"word " * (self.CAP // 5)).status_code == 200


# --- upload into an assistant ---------------------------------------------------------------


@pytest.mark.parametrize("via", ["form", "path"])
def test_upload_for_an_assistant_indexes_an_original_entry(
    client: TestClient, services: Services, funded: UserRecord, headers: dict[str, str], via: str,
) -> None:
    assistant_id = create_assistant(client, headers)["id"]
    version = knowledge_version(services, assistant_id)
    if via == "form":
        response = upload(client, headers, GUIDE.encode(), assistant_id=assistant_id)
    else:
        response = upload(client, headers, GUIDE.encode(),
                          path=f"/api/assistants/{assistant_id}/documents")
    assert response.status_code == 200, response.text
    doc_id = response.json()["id"]
    assert count_rows(services, UserKnowledge, UserKnowledge.doc_id == doc_id,
                      UserKnowledge.assistant_id == assistant_id,
                      UserKnowledge.type == "original") == 1
    [hit] = search(services, funded.id, assistant_id, "zebracorn seal")
    assert hit.doc_id == doc_id and "zebracorn" in hit.text
    assert knowledge_version(services, assistant_id) == version + 1
    linked = client.get(f"/api/assistants/{assistant_id}/documents", headers=headers).json()
    assert [document["id"] for document in linked] == [doc_id]


def test_upload_without_an_assistant_is_not_indexed(
    client: TestClient, services: Services, funded: UserRecord, headers: dict[str, str]
) -> None:
    upload(client, headers, GUIDE.encode())
    assert count_rows(services, UserKnowledge) == 0
    assert search(services, funded.id, None, "zebracorn") == []


def test_eleventh_upload_within_five_minutes_is_429(
    client: TestClient, headers: dict[str, str]
) -> None:
    statuses = [upload(client, headers, GUIDE.encode()).status_code for _ in range(11)]
    assert statuses == [200] * 10 + [429]


# --- list --------------------------------------------------------------------------------------


def test_list_is_newest_first_with_items_and_documents(
    client: TestClient, headers: dict[str, str]
) -> None:
    ids = [upload(client, headers, f"{GUIDE} copy {n}".encode()).json()["id"] for n in range(3)]
    first = client.get("/api/documents?limit=2", headers=headers).json()
    assert [d["id"] for d in first["items"]] == ids[::-1][:2]
    assert first["documents"] == first["items"]
    assert (first["total"], first["page"], first["pages"], first["limit"]) == (3, 1, 2, 2)
    assert "doc_hash" in first["items"][0]
    second = client.get("/api/documents?limit=2&page=2", headers=headers).json()
    assert [d["id"] for d in second["items"]] == [ids[0]]


def test_list_of_an_assistant_names_each_document_once(
    client: TestClient, funded: UserRecord, headers: dict[str, str]
) -> None:
    assistant_id = create_assistant(client, headers)["id"]
    doc_id = upload(client, headers, GUIDE.encode(), assistant_id=assistant_id).json()["id"]
    upload(client, headers, b"Another document that is not linked to the assistant at all.")
    confirm = {"doc_id": doc_id, "content": "Extra fact.", "type": "original",
               "assistant_id": assistant_id}
    assert client.post("/api/knowledge/confirm", json=confirm, headers=headers).status_code == 200
    listed = client.get(f"/api/documents?assistant_id={assistant_id}", headers=headers).json()
    assert [d["id"] for d in listed["items"]] == [doc_id] and listed["total"] == 1


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "page=0", "assistant_id=x"])
def test_list_refuses_bad_paging(client: TestClient, headers: dict[str, str], query: str) -> None:
    assert client.get(f"/api/documents?{query}", headers=headers).status_code == 422


# --- delete and text ---------------------------------------------------------------------------


def test_delete_removes_knowledge_chunks_file_and_bumps_every_assistant(
    client: TestClient, services: Services, funded: UserRecord, headers: dict[str, str]
) -> None:
    assistant_id = create_assistant(client, headers)["id"]
    other_id = create_assistant(client, headers, name="Other")["id"]
    doc_id = upload(client, headers, GUIDE.encode(), assistant_id=assistant_id).json()["id"]
    versions = (knowledge_version(services, assistant_id), knowledge_version(services, other_id))

    response = client.delete(f"/api/documents/{doc_id}", headers=headers)

    assert response.status_code == 200 and response.json() == {"ok": True}
    assert document_row(services, funded.id, doc_id) is None
    assert count_rows(services, UserKnowledge) == 0 and count_rows(services, KnowledgeChunk) == 0
    assert search(services, funded.id, assistant_id, "zebracorn") == []
    assert stored_files(services) == []
    assert knowledge_version(services, assistant_id) == versions[0] + 1
    assert knowledge_version(services, other_id) == versions[1] + 1
    assert client.delete(f"/api/documents/{doc_id}", headers=headers).status_code == 404


def test_text_of_a_document_whose_file_is_gone_is_404(
    client: TestClient, services: Services, headers: dict[str, str]
) -> None:
    doc_id = upload(client, headers, GUIDE.encode()).json()["id"]
    for path in stored_files(services):
        path.unlink()
    response = client.get(f"/api/documents/{doc_id}/text", headers=headers)
    assert response.status_code == 404 and response.json()["code"] == "not_found"


# --- summaries without any LLM key --------------------------------------------------------------

PRICE_LIST = "\n\n".join(
    f"Section {n}. The price of plan {n} is {n * 10} USD per month. Extra seats cost 5 USD each. "
    + "Filler sentence about the service. " * 60
    for n in range(1, 4)
)


def test_offline_summary_is_extractive_and_names_its_doc_type(
    client: TestClient, services: Services, headers: dict[str, str]
) -> None:
    doc_id = upload(client, headers, PRICE_LIST.encode(), "prices.txt").json()["id"]
    response = client.get(f"/api/documents/{doc_id}/summary", headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["method"] == "extractive" and body["doc_type"] == "pricing"
    overall, *parts = body["summaries"]
    assert overall["chunk"] == 0 and overall["is_overall"] is True
    assert [part["chunk"] for part in parts] == list(range(1, len(parts) + 1))
    assert parts[0]["summary"].startswith("Section 1. The price of plan 1 is 10 USD per month.")
    flat = " ".join(PRICE_LIST.split())
    assert all(part["summary"].split("…")[0].rstrip() in flat for part in parts)  # quotes only
    assert count_rows(services, UserKnowledge) == 0  # not stored: a later key gives a real one


def test_offline_analysis_of_a_short_text_is_one_quoted_part(
    client: TestClient, headers: dict[str, str]
) -> None:
    doc_id = upload(client, headers, GUIDE.encode()).json()["id"]
    body = client.post(f"/api/analyze-document/{doc_id}", headers=headers).json()
    assert body == {
        "summaries": [{"chunk": 1, "summary": GUIDE.rsplit(" Call", 1)[0]}],
        "doc_type": "document",
        "method": "extractive",
    }


def test_summary_of_an_unknown_document_is_404(client: TestClient, headers: dict[str, str]) -> None:
    assert client.get("/api/documents/999/summary", headers=headers).status_code == 404
    assert client.post("/api/analyze-document/999", headers=headers).status_code == 404


# --- summaries through an LLM (the fake, over a real socket) -----------------------------------


class TestWithModel:
    @pytest.fixture
    def fake(self) -> Iterator[FakeOpenAI]:
        with FakeOpenAI() as server:
            yield server

    @pytest.fixture
    def settings_env(self, fake: FakeOpenAI) -> dict[str, str]:
        return {"OPENAI_API_KEY": "sk-docs", "OPENAI_BASE_URL": fake.base_url}

    def test_summary_is_generated_once_stored_and_reused(
        self, client: TestClient, services: Services, headers: dict[str, str], fake: FakeOpenAI
    ) -> None:
        doc_id = upload(client, headers, GUIDE.encode()).json()["id"]
        summary = "Parcels ship on weekdays; returns within 30 days."
        fake.enqueue(reply(summary), reply("faq"))
        first = client.get(f"/api/documents/{doc_id}/summary", headers=headers)
        assert first.status_code == 200, first.text
        assert first.json() == {
            "summaries": [{"chunk": 1, "summary": summary}],
            "doc_type": "faq",
            "method": "llm",
        }
        assert len(fake.requests) == 2
        assert fake.requests[0].messages[-1]["content"] == GUIDE
        second = client.get(f"/api/documents/{doc_id}/summary", headers=headers).json()
        assert len(fake.requests) == 2
        assert second["summaries"] == first.json()["summaries"] and second["method"] == "stored"
        assert count_rows(services, UserKnowledge, UserKnowledge.type == "summary",
                          UserKnowledge.assistant_id.is_(None)) == 1

    def test_long_document_takes_at_most_five_calls(
        self, client: TestClient, services: Services, headers: dict[str, str], fake: FakeOpenAI
    ) -> None:
        long_text = ("A sentence about the delivery terms of the shop. " * 50 + "\n\n") * 200
        doc_id = upload(client, headers, long_text.encode()).json()["id"]
        body = client.post(f"/api/analyze-document/{doc_id}", headers=headers).json()
        assert len(fake.requests) == 5
        assert [part["chunk"] for part in body["summaries"]] == [0, 1, 2, 3]
        assert body["summaries"][0]["is_overall"] is True
        assert body["doc_type"] == "document"  # the fake's answer is not a label: keyword guess
        assert count_rows(services, UserKnowledge) == 0  # analysis is never stored

    def test_model_failure_is_503_and_nothing_is_stored(
        self, client: TestClient, services: Services, headers: dict[str, str], fake: FakeOpenAI
    ) -> None:
        doc_id = upload(client, headers, GUIDE.encode()).json()["id"]
        fake.script("sk-docs", fail(500))
        response = client.get(f"/api/documents/{doc_id}/summary", headers=headers)
        assert response.status_code == 503
        assert response.json()["code"] == "service_unavailable"
        assert count_rows(services, UserKnowledge) == 0
