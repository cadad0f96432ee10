"""Every documents/knowledge door called with another tenant's document, knowledge entry or
assistant answers 404 and changes nothing: no row, chunk, file, version or balance moves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from assistant_data import create_assistant
from document_data import balance, fund, knowledge_version, stored_files, upload
from sqlalchemy import select
from starlette.testclient import TestClient

from server.context import Services
from server.store.models import Document, KnowledgeChunk, UserKnowledge
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]
FILE = {"file": ("guide.txt", b"Intruder text that must never be stored.", "text/plain")}


@dataclass(frozen=True)
class Ids:
    assistant: int  # the victim's
    doc: int
    knowledge: int
    own_doc: int  # the intruder's, to pair with a foreign assistant
    own_knowledge: int


# (method, path, JSON body, multipart) — {a}, {d}, {k}, {own_d}, {own_k} are filled from Ids.
CALLS: list[tuple[str, str, dict[str, Any] | None, bool]] = [
    ("GET", "/api/documents?assistant_id={a}", None, False),
    ("POST", "/api/documents", {"assistant_id": "{a}"}, True),
    ("POST", "/api/assistants/{a}/documents", None, True),
    ("POST", "/api/documents/import-website",
     {"url": "http://127.0.0.1:9/", "assistant_id": "{a}"}, False),
    ("POST", "/api/assistants/{a}/ingest-website", {"url": "http://127.0.0.1:9/"}, False),
    ("DELETE", "/api/documents/{d}", None, False),
    ("GET", "/api/documents/{d}/text", None, False),
    ("GET", "/api/documents/{d}/summary", None, False),
    ("POST", "/api/analyze-document/{d}", None, False),
    ("POST", "/api/knowledge/confirm", {"doc_id": "{d}", "content": "x", "type": "original"},
     False),
    ("POST", "/api/knowledge/confirm",
     {"doc_id": "{own_d}", "content": "x", "type": "original", "assistant_id": "{a}"}, False),
    ("GET", "/api/knowledge/confirmed?assistant_id={a}", None, False),
    ("PUT", "/api/knowledge/{k}", {"content": "hijacked", "type": "original"}, False),
    ("PUT", "/api/knowledge/{own_k}",
     {"content": "moved", "type": "original", "assistant_id": "{a}"}, False),
    ("DELETE", "/api/knowledge/{k}", None, False),
]
# Doors without a foreign id to try: they only ever see the caller's own rows.
OWN_ROWS_ONLY = {
    ("GET", "/api/documents"),
    ("POST", "/api/knowledge/track-usage"),
    ("GET", "/api/knowledge/stats"),
    ("GET", "/api/user-knowledge/{user_id}"),  # service auth: the caller names the tenant
}


def fill(value: Any, ids: Ids) -> Any:
    if isinstance(value, dict):
        return {key: fill(item, ids) for key, item in value.items()}
    if not isinstance(value, str):
        return value
    filled = value.format(a=ids.assistant, d=ids.doc, k=ids.knowledge, own_d=ids.own_doc,
                          own_k=ids.own_knowledge)
    return int(filled) if filled.isdigit() and value != filled else filled


def snapshot(services: Services, victim: UserRecord, ids: Ids) -> dict[str, Any]:
    with services.db.read() as session:
        documents = session.execute(select(Document.id, Document.user_id, Document.filename)
                                    .order_by(Document.id)).all()
        knowledge = session.execute(
            select(UserKnowledge.id, UserKnowledge.user_id, UserKnowledge.assistant_id,
                   UserKnowledge.content, UserKnowledge.usage_count).order_by(UserKnowledge.id)
        ).all()
        chunks = session.execute(
            select(KnowledgeChunk.user_id, KnowledgeChunk.assistant_id, KnowledgeChunk.chunk_text)
            .order_by(KnowledgeChunk.id)
        ).all()
    return {
        "documents": documents,
        "knowledge": knowledge,
        "chunks": chunks,
        "files": stored_files(services),
        "version": knowledge_version(services, ids.assistant),
        "victim_balance": balance(services, victim.id),
    }


def test_table_covers_every_documents_door(client: TestClient) -> None:
    served = {
        (endpoint.method, endpoint.path)
        for endpoint in client.app.state.endpoints  # type: ignore[attr-defined]
        if endpoint.module == "documents"
    }
    tried = {(method, path.split("?")[0]
              .replace("{a}", "{assistant_id}").replace("{d}", "{doc_id}")
              .replace("{own_k}", "{knowledge_id}").replace("{k}", "{knowledge_id}"))
             for method, path, _body, _multipart in CALLS}
    assert served == tried | OWN_ROWS_ONLY


@pytest.fixture
def scene(
    client: TestClient, services: Services, make_user: Callable[..., UserRecord],
    auth_headers: Headers,
) -> tuple[UserRecord, UserRecord, Ids]:
    victim, intruder = make_user(), make_user()
    for person in (victim, intruder):
        fund(services, person.id)
    victim_headers, intruder_headers = auth_headers(victim), auth_headers(intruder)
    assistant = create_assistant(client, victim_headers)["id"]
    doc = upload(client, victim_headers, b"The victim's secret opening hours are nine to five.",
                 assistant_id=assistant).json()["id"]
    knowledge = client.post("/api/knowledge/confirm", headers=victim_headers, json={
        "doc_id": doc, "content": "Victim fact.", "type": "original", "assistant_id": assistant,
    }).json()["id"]
    own_doc = upload(client, intruder_headers,
                     b"The intruder's own harmless document.").json()["id"]
    own_knowledge = client.post("/api/knowledge/confirm", headers=intruder_headers, json={
        "doc_id": own_doc, "content": "Intruder fact.", "type": "original",
    }).json()["id"]
    return victim, intruder, Ids(assistant, doc, knowledge, own_doc, own_knowledge)


def test_foreign_ids_are_not_found_and_nothing_changes(
    client: TestClient, services: Services, auth_headers: Headers,
    scene: tuple[UserRecord, UserRecord, Ids],
) -> None:
    victim, intruder, ids = scene
    before = snapshot(services, victim, ids)
    intruder_balance = balance(services, intruder.id)
    headers = auth_headers(intruder)

    for method, template, body, multipart in CALLS:
        url = fill(template, ids)
        if multipart:
            response = client.request(method, url, data=fill(body, ids), files=FILE,
                                      headers=headers)
        else:
            response = client.request(method, url, json=fill(body, ids), headers=headers)
        assert response.status_code == 404, (method, template, response.text)
        assert response.json()["code"] == "not_found"

    assert snapshot(services, victim, ids) == before
    assert balance(services, intruder.id) == intruder_balance  # nothing charged either


def test_usage_tracking_and_stats_never_touch_another_tenant(
    client: TestClient, services: Services, auth_headers: Headers,
    scene: tuple[UserRecord, UserRecord, Ids],
) -> None:
    victim, intruder, ids = scene
    before = snapshot(services, victim, ids)
    headers = auth_headers(intruder)
    tracked = client.post("/api/knowledge/track-usage", json=["Victim fact."], headers=headers)
    assert tracked.json()["updated_count"] == 0
    assert client.get("/api/knowledge/stats", headers=headers).json()["total_documents"] == 1
    listed = client.get("/api/documents", headers=headers).json()
    assert [document["id"] for document in listed["items"]] == [ids.own_doc]
    assert snapshot(services, victim, ids) == before
