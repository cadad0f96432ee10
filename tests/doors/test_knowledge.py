"""Knowledge doors: confirm, list, statistics, usage tracking, edit with re-indexing, delete,
and the service-only dump of an assistant's knowledge."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from assistant_data import create_assistant
from credentials import SERVICE_TOKEN
from document_data import count_rows, fund, knowledge_version, search, upload
from starlette.testclient import TestClient

from server.context import Services
from server.store.models import KnowledgeChunk, UserKnowledge
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]


@pytest.fixture
def headers(user: UserRecord, services: Services, auth_headers: Headers) -> dict[str, str]:
    fund(services, user.id)
    return auth_headers(user)


@pytest.fixture
def assistant_id(client: TestClient, headers: dict[str, str]) -> int:
    return create_assistant(client, headers, system_prompt="Be kind.")["id"]


@pytest.fixture
def doc_id(client: TestClient, headers: dict[str, str]) -> int:
    response = upload(client, headers, b"A plain document about the opening hours of the shop.")
    assert response.status_code == 200, response.text
    return response.json()["id"]


def confirm(client: TestClient, headers: dict[str, str], **fields: Any) -> Any:
    return client.post("/api/knowledge/confirm", json=fields, headers=headers)


def entry(services: Services, knowledge_id: int) -> UserKnowledge:
    with services.db.read() as session:
        row = session.get(UserKnowledge, knowledge_id)
        assert row is not None
        session.expunge(row)
        return row


# --- confirm -----------------------------------------------------------------------------------


def test_confirmed_entry_is_indexed_for_its_assistant_and_bumps_its_version(
    client: TestClient, services: Services, user: UserRecord, headers: dict[str, str],
    assistant_id: int, doc_id: int,
) -> None:
    version = knowledge_version(services, assistant_id)
    response = confirm(client, headers, doc_id=doc_id, content="Parking is free on Sundays.",
                       type="original", assistant_id=assistant_id, importance=7)
    assert response.status_code == 200
    knowledge_id = response.json()["id"]
    assert response.json() == {"ok": True, "id": knowledge_id}
    [hit] = search(services, user.id, assistant_id, "parking sundays")
    assert hit.knowledge_id == knowledge_id and hit.doc_type == "confirmed_knowledge"
    assert knowledge_version(services, assistant_id) == version + 1
    stored = entry(services, knowledge_id)
    assert (stored.importance, stored.doc_type) == (7, "confirmed_knowledge")
    assert stored.type == "original"


def test_tenant_global_entry_bumps_every_assistant_and_is_the_fallback(
    client: TestClient, services: Services, user: UserRecord, headers: dict[str, str],
    assistant_id: int, doc_id: int,
) -> None:
    other = create_assistant(client, headers, name="Other")["id"]
    before = [knowledge_version(services, a) for a in (assistant_id, other)]
    confirm(client, headers, doc_id=doc_id, content="Gift wrapping costs two euros.",
            type="original", doc_type="pricing")
    after = [knowledge_version(services, a) for a in (assistant_id, other)]
    assert after == [version + 1 for version in before]
    [hit] = search(services, user.id, other, "gift wrapping")
    assert hit.doc_type == "pricing"


def test_summary_entry_is_listed_parsed_and_indexed_by_its_words(
    client: TestClient, services: Services, user: UserRecord, headers: dict[str, str],
    assistant_id: int, doc_id: int,
) -> None:
    summaries = [{"chunk": 1, "summary": "Deliveries reach Lisbon within two days."}]
    confirm(client, headers, doc_id=doc_id, content=json.dumps(summaries), type="summary",
            assistant_id=assistant_id)
    [item] = client.get("/api/knowledge/confirmed", headers=headers).json()["items"]
    assert item["content"] == summaries and item["type"] == "summary"
    [hit] = search(services, user.id, assistant_id, "lisbon deliveries")
    assert hit.text == "Deliveries reach Lisbon within two days."


@pytest.mark.parametrize(
    "change",
    [{"importance": 0}, {"importance": 11}, {"type": "fallback"}, {"content": "   "},
     {"content": ""}, {"doc_id": 2**40}, {"surprise": 1}],
    ids=lambda change: next(iter(change)) + "=" + repr(next(iter(change.values()))),
)
def test_confirm_refuses_bad_fields_with_422(
    client: TestClient, headers: dict[str, str], doc_id: int, change: dict[str, Any]
) -> None:
    body = {"doc_id": doc_id, "content": "Fact.", "type": "original"} | change
    assert confirm(client, headers, **body).status_code == 422


def test_confirm_for_an_unknown_document_is_404(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = confirm(client, headers, doc_id=4242, content="Fact.", type="original")
    assert response.status_code == 404 and response.json()["detail"] == "Document not found"


# --- list and statistics -----------------------------------------------------------------------


def test_confirmed_list_is_id_descending_paged_and_filtered_by_assistant(
    client: TestClient, headers: dict[str, str], assistant_id: int, doc_id: int
) -> None:
    ids = [confirm(client, headers, doc_id=doc_id, content=f"Fact number {n}.", type="original",
                   assistant_id=assistant_id if n % 2 else None).json()["id"] for n in range(4)]
    page = client.get("/api/knowledge/confirmed?limit=3", headers=headers).json()
    assert [item["id"] for item in page["items"]] == ids[::-1][:3]
    assert (page["total"], page["page"], page["pages"], page["limit"]) == (4, 1, 2, 3)
    first = page["items"][0]
    assert set(first) == {"id", "doc_id", "type", "content", "doc_type", "importance",
                          "last_used", "usage_count", "assistant_id"}
    mine = client.get(f"/api/knowledge/confirmed?assistant_id={assistant_id}",
                      headers=headers).json()
    assert [item["id"] for item in mine["items"]] == [ids[3], ids[1]]


def test_stats_cover_every_entry_not_only_the_top_five(
    client: TestClient, headers: dict[str, str], doc_id: int
) -> None:
    contents = [f"Entry {n} " + "x" * n for n in range(7)]
    for n, content in enumerate(contents):
        confirm(client, headers, doc_id=doc_id, content=content, type="original",
                importance=n + 1, doc_type="faq" if n < 3 else None)
    client.post("/api/knowledge/track-usage", json=["Entry 6"], headers=headers)
    stats = client.get("/api/knowledge/stats", headers=headers).json()
    assert stats["total_documents"] == 7
    assert stats["total_content_length"] == sum(len(content) for content in contents)
    assert stats["avg_importance"] == 4.0
    assert stats["document_types"] == {"faq": 3, "confirmed_knowledge": 4}
    assert len(stats["most_used"]) == 5
    top = stats["most_used"][0]
    assert top["usage_count"] == 1 and top["filename"] == "guide.txt"
    assert top["last_used"].endswith("Z")


def test_stats_of_an_empty_account_are_zero(client: TestClient, headers: dict[str, str]) -> None:
    assert client.get("/api/knowledge/stats", headers=headers).json() == {
        "total_documents": 0, "most_used": [], "document_types": {},
        "total_content_length": 0, "avg_importance": 0.0,
    }


# --- usage tracking ------------------------------------------------------------------------------


def test_track_usage_counts_entries_containing_or_contained_in_each_text(
    client: TestClient, services: Services, headers: dict[str, str], doc_id: int
) -> None:
    long_id = confirm(client, headers, doc_id=doc_id, content="We open at nine and close at six.",
                      type="original").json()["id"]
    short_id = confirm(client, headers, doc_id=doc_id, content="Cash only.",
                       type="original").json()["id"]
    texts = ["open at nine", "Answer: Cash only. Thanks!", "unrelated words", ""]
    response = client.post("/api/knowledge/track-usage", json=texts, headers=headers)
    assert response.status_code == 200
    assert response.json()["updated_count"] == 2
    assert entry(services, long_id).usage_count == 1
    assert entry(services, short_id).usage_count == 1
    assert entry(services, short_id).last_used is not None


def test_track_usage_of_an_empty_array_only_says_so(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.post("/api/knowledge/track-usage", json=[], headers=headers)
    assert response.status_code == 200 and set(response.json()) == {"message"}


@pytest.mark.parametrize(
    "body",
    [{"texts": ["a"]}, "text", [1, 2], ["x"] * 101, ["y" * 10_001], None],
    ids=["object", "string", "numbers", "101-items", "long-item", "no-body"],
)
def test_track_usage_needs_an_array_of_short_strings(
    client: TestClient, headers: dict[str, str], body: Any
) -> None:
    if body is None:
        response = client.post("/api/knowledge/track-usage", headers=headers)
    else:
        response = client.post("/api/knowledge/track-usage", json=body, headers=headers)
    assert response.status_code == 422, response.text


# --- edit and delete -----------------------------------------------------------------------------


def test_edit_reindexes_so_old_words_are_gone_and_new_ones_found(
    client: TestClient, services: Services, user: UserRecord, headers: dict[str, str],
    assistant_id: int, doc_id: int,
) -> None:
    knowledge_id = confirm(client, headers, doc_id=doc_id, content="The hotline is 555-0101.",
                           type="original", assistant_id=assistant_id, importance=4,
                           doc_type="contacts").json()["id"]
    version = knowledge_version(services, assistant_id)
    response = client.put(f"/api/knowledge/{knowledge_id}", headers=headers, json={
        "doc_id": doc_id, "content": "Write to the mailbox help@shop.example.",
        "type": "original", "assistant_id": assistant_id})
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert search(services, user.id, assistant_id, "hotline") == []
    [hit] = search(services, user.id, assistant_id, "mailbox")
    assert hit.knowledge_id == knowledge_id and hit.doc_type == "contacts"
    stored = entry(services, knowledge_id)
    assert (stored.importance, stored.doc_type) == (4, "contacts")
    assert knowledge_version(services, assistant_id) == version + 1


def test_edit_moves_an_entry_to_another_assistant(
    client: TestClient, services: Services, user: UserRecord, headers: dict[str, str],
    assistant_id: int, doc_id: int,
) -> None:
    other = create_assistant(client, headers, name="Other")["id"]
    knowledge_id = confirm(client, headers, doc_id=doc_id, content="Bikes rent for ten euros.",
                           type="original", assistant_id=assistant_id).json()["id"]
    client.put(f"/api/knowledge/{knowledge_id}", headers=headers, json={
        "content": "Bikes rent for ten euros.", "type": "original", "assistant_id": other,
        "importance": 9, "doc_type": "pricing"})
    stored = entry(services, knowledge_id)
    assert (stored.assistant_id, stored.importance, stored.doc_type) == (other, 9, "pricing")
    assert count_rows(services, KnowledgeChunk, KnowledgeChunk.knowledge_id == knowledge_id,
                      KnowledgeChunk.assistant_id == other) == 1
    [hit] = search(services, user.id, other, "bikes")
    assert hit.knowledge_id == knowledge_id


def test_delete_removes_the_entry_and_its_chunks(
    client: TestClient, services: Services, user: UserRecord, headers: dict[str, str],
    assistant_id: int, doc_id: int,
) -> None:
    knowledge_id = confirm(client, headers, doc_id=doc_id, content="Umbrellas are free to borrow.",
                           type="original", assistant_id=assistant_id).json()["id"]
    response = client.delete(f"/api/knowledge/{knowledge_id}", headers=headers)
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert count_rows(services, UserKnowledge, UserKnowledge.id == knowledge_id) == 0
    assert count_rows(services, KnowledgeChunk, KnowledgeChunk.knowledge_id == knowledge_id) == 0
    assert search(services, user.id, assistant_id, "umbrellas") == []
    assert client.delete(f"/api/knowledge/{knowledge_id}", headers=headers).status_code == 404


# --- the service dump ----------------------------------------------------------------------------


def test_service_reads_the_prompt_and_knowledge_of_the_first_active_assistant(
    client: TestClient, user: UserRecord, headers: dict[str, str], assistant_id: int, doc_id: int,
) -> None:
    create_assistant(client, headers, name="Later")
    confirm(client, headers, doc_id=doc_id, content="Dogs are welcome.", type="original",
            assistant_id=assistant_id, doc_type="faq")
    service = {"X-Service-Token": SERVICE_TOKEN}
    response = client.get(f"/api/user-knowledge/{user.id}", headers=service)
    assert response.status_code == 200
    assert response.json() == {"system_prompt": "Be kind.",
                               "documents": ["[faq]\nDogs are welcome."]}
    named = client.get(f"/api/user-knowledge/{user.id}?assistant_id={assistant_id}",
                       headers=service)
    assert named.json() == response.json()


def test_service_dump_refuses_another_users_assistant_and_users_without_one(
    client: TestClient, make_user: Callable[..., UserRecord], user: UserRecord,
    assistant_id: int,
) -> None:
    service = {"X-Service-Token": SERVICE_TOKEN}
    stranger = make_user()
    assert client.get(f"/api/user-knowledge/{stranger.id}?assistant_id={assistant_id}",
                      headers=service).status_code == 404
    assert client.get(f"/api/user-knowledge/{stranger.id}", headers=service).status_code == 404
