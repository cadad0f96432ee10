"""Retrieval over the full-text index, on SQLite and PostgreSQL: index kept in step with every
create/edit/delete, owner and assistant scoping, the tenant-global fallback, Q&A merging,
diversity, the token budget and usage counters."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from server.ai.ingest import index_text
from server.ai.retrieval import Snippet, retrieve
from server.context import Services
from server.store import knowledge as knowledge_store
from server.store import knowledge_search
from server.store.models import (
    Assistant,
    Document,
    KnowledgeChunk,
    QaKnowledge,
    User,
    UserKnowledge,
)


@dataclasses.dataclass(frozen=True)
class Tenant:
    user_id: int
    assistant_id: int
    other_assistant_id: int


@pytest.fixture
def make_tenant(services: Services, make_user: Callable[..., Any]) -> Callable[[], Tenant]:
    def make() -> Tenant:
        user = make_user()
        with services.db.write() as session:
            first = Assistant(user_id=user.id, name="Shop bot")
            second = Assistant(user_id=user.id, name="HR bot")
            session.add_all([first, second])
            session.flush()
            return Tenant(user.id, first.id, second.id)

    return make


@pytest.fixture
def tenant(make_tenant: Callable[[], Tenant]) -> Tenant:
    return make_tenant()


def add_knowledge(
    session: Session,
    owner_id: int,
    assistant_id: int | None,
    content: str,
    *,
    doc_type: str = "document",
    importance: int = 10,
) -> UserKnowledge:
    document = Document(user_id=owner_id, filename="doc.txt", size=len(content))
    session.add(document)
    session.flush()
    entry = UserKnowledge(
        user_id=owner_id,
        assistant_id=assistant_id,
        doc_id=document.id,
        content=content,
        doc_type=doc_type,
        importance=importance,
    )
    session.add(entry)
    session.flush()
    index_text(
        session,
        owner_id=owner_id,
        text=content,
        assistant_id=assistant_id,
        doc_id=document.id,
        knowledge_id=entry.id,
        doc_type=doc_type,
        importance=importance,
    )
    return entry


def add_qa(
    session: Session, owner_id: int, assistant_id: int | None, question: str, answer: str
) -> QaKnowledge:
    pair = QaKnowledge(
        user_id=owner_id, assistant_id=assistant_id, question=question, answer=answer
    )
    session.add(pair)
    session.flush()
    knowledge_store.index_qa(session, pair.id)
    return pair


def ask(services: Services, tenant: Tenant, question: str, **options: Any) -> list[Snippet]:
    options.setdefault("assistant_id", tenant.assistant_id)
    with services.db.write() as session:
        return retrieve(session, owner_id=tenant.user_id, question=question, **options)


def texts(snippets: list[Snippet]) -> list[str]:
    return [snippet.text for snippet in snippets]


def raw_index_matches(session: Session, word: str) -> int:
    """How many chunks the database's own index (not our query code) matches for a word."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("INSERT INTO knowledge_fts(knowledge_fts) VALUES ('integrity-check')"))
        query = "SELECT count(*) FROM knowledge_fts WHERE knowledge_fts MATCH :word"
    else:
        query = (
            "SELECT count(*) FROM knowledge_embeddings"
            " WHERE chunk_tsv @@ to_tsquery('simple', :word)"
        )
    return int(session.execute(text(query), {"word": word}).scalar_one())


# --- the index stays in step -------------------------------------------------------------------


def test_indexed_knowledge_is_found_by_its_words(services: Services, tenant: Tenant) -> None:
    with services.db.write() as session:
        add_knowledge(session, tenant.user_id, tenant.assistant_id, "Delivery takes two days.")
    assert texts(ask(services, tenant, "How long does delivery take?")) == [
        "Delivery takes two days."
    ]


def test_russian_inflections_match_by_prefix(services: Services, tenant: Tenant) -> None:
    with services.db.write() as session:
        add_knowledge(
            session,
            tenant.user_id,
            tenant.assistant_id,
            "Стоимость доставки по городу — 300 рублей.",
        )
    assert len(ask(services, tenant, "Сколько стоит доставка?")) == 1


def test_edited_knowledge_is_found_by_new_words_not_old(services: Services, tenant: Tenant) -> None:
    with services.db.write() as session:
        entry = add_knowledge(
            session, tenant.user_id, tenant.assistant_id, "We ship with Pelican couriers."
        )
        entry_id, doc_id = entry.id, entry.doc_id
    with services.db.write() as session:
        index_text(
            session,
            owner_id=tenant.user_id,
            text="We ship with Albatross couriers.",
            assistant_id=tenant.assistant_id,
            doc_id=doc_id,
            knowledge_id=entry_id,
        )
    assert ask(services, tenant, "pelican") == []
    assert texts(ask(services, tenant, "albatross")) == ["We ship with Albatross couriers."]
    with services.db.read() as session:
        assert raw_index_matches(session, "pelican") == 0
        assert raw_index_matches(session, "albatross") == 1


def test_unchanged_chunks_keep_their_rows_on_reindex(services: Services, tenant: Tenant) -> None:
    content = "\n\n".join(
        f"Paragraph {n} about topic{n}. " + "filler words here " * 30 for n in range(6)
    )

    def rows(session: Session, entry_id: int) -> dict[str, int]:
        query = select(KnowledgeChunk.chunk_hash, KnowledgeChunk.id).where(
            KnowledgeChunk.knowledge_id == entry_id
        )
        return {str(chunk_hash): row_id for chunk_hash, row_id in session.execute(query)}

    with services.db.write() as session:
        entry = add_knowledge(session, tenant.user_id, tenant.assistant_id, content)
        before = rows(session, entry.id)
        index_text(
            session,
            owner_id=tenant.user_id,
            text=content.replace("topic5", "topicfive"),
            assistant_id=tenant.assistant_id,
            doc_id=entry.doc_id,
            knowledge_id=entry.id,
        )
        after = rows(session, entry.id)
    unchanged = before.keys() & after.keys()
    assert len(before) > 2
    assert len(unchanged) == len(before) - 1 == len(after) - 1
    assert all(before[chunk_hash] == after[chunk_hash] for chunk_hash in unchanged)


@pytest.mark.parametrize("how", ["store", "entry", "document", "assistant", "owner"])
def test_deleted_knowledge_is_not_found(services: Services, tenant: Tenant, how: str) -> None:
    with services.db.write() as session:
        entry = add_knowledge(
            session, tenant.user_id, tenant.assistant_id, "Gift wrapping is free."
        )
        entry_id, doc_id = entry.id, entry.doc_id
    with services.db.write() as session:
        if how == "store":
            knowledge_store.delete_chunks_for(
                session, owner_id=tenant.user_id, knowledge_id=entry_id
            )
        elif how == "entry":  # ON DELETE CASCADE
            session.execute(delete(UserKnowledge).where(UserKnowledge.id == entry_id))
        elif how == "document":
            session.execute(delete(Document).where(Document.id == doc_id))
        elif how == "assistant":
            session.execute(delete(Assistant).where(Assistant.id == tenant.assistant_id))
        else:
            session.execute(delete(User).where(User.id == tenant.user_id))
    assert ask(services, tenant, "gift wrapping") == []
    with services.db.read() as session:
        assert raw_index_matches(session, "wrapping") == 0


def test_document_delete_removes_all_its_chunks(services: Services, tenant: Tenant) -> None:
    with services.db.write() as session:
        entry = add_knowledge(
            session, tenant.user_id, tenant.assistant_id, "Parking is behind the shop."
        )
        removed = knowledge_store.delete_chunks_for(
            session, owner_id=tenant.user_id, doc_id=entry.doc_id
        )
        assert removed == 1
        assert knowledge_store.count_chunks(session, tenant.user_id) == 0


# --- scoping ------------------------------------------------------------------------------------


def test_another_tenants_chunks_are_never_returned(
    services: Services, make_tenant: Callable[[], Tenant]
) -> None:
    mine, theirs = make_tenant(), make_tenant()
    with services.db.write() as session:
        add_knowledge(
            session, theirs.user_id, theirs.assistant_id, "Secret discount code SUNFLOWER."
        )
        add_knowledge(session, theirs.user_id, None, "Global secret: SUNFLOWER is the code.")
    assert ask(services, mine, "sunflower discount code") == []
    assert len(ask(services, theirs, "sunflower discount code")) == 1


def test_another_assistants_chunks_are_not_returned(services: Services, tenant: Tenant) -> None:
    with services.db.write() as session:
        add_knowledge(
            session, tenant.user_id, tenant.other_assistant_id, "Vacation policy: 28 days."
        )
    assert ask(services, tenant, "vacation policy") == []
    assert (
        len(ask(services, tenant, "vacation policy", assistant_id=tenant.other_assistant_id)) == 1
    )


def test_tenant_global_knowledge_is_the_fallback(services: Services, tenant: Tenant) -> None:
    with services.db.write() as session:
        add_knowledge(session, tenant.user_id, None, "Our office address is 5 Harbour Road.")
    assert texts(ask(services, tenant, "office address")) == [
        "Our office address is 5 Harbour Road."
    ]


def test_global_knowledge_is_not_mixed_in_when_the_assistant_has_matches(
    services: Services, tenant: Tenant
) -> None:
    with services.db.write() as session:
        add_knowledge(session, tenant.user_id, None, "Old office address: 1 Mill Lane.")
        add_knowledge(
            session, tenant.user_id, tenant.assistant_id, "The shop address is 7 Quay Street."
        )
    assert texts(ask(services, tenant, "address")) == ["The shop address is 7 Quay Street."]


# --- Q&A, diversity, budget, usage ------------------------------------------------------------


def test_qa_pairs_are_merged_and_rendered(services: Services, tenant: Tenant) -> None:
    with services.db.write() as session:
        add_knowledge(
            session, tenant.user_id, tenant.assistant_id, "Refunds reach the card in 5 days."
        )
        add_qa(
            session,
            tenant.user_id,
            tenant.assistant_id,
            "Can I get a refund?",
            "Yes, within 14 days.",
        )
    snippets = ask(services, tenant, "refund")
    assert "Q: Can I get a refund?\nA: Yes, within 14 days." in texts(snippets)
    assert "Refunds reach the card in 5 days." in texts(snippets)
    [pair] = [snippet for snippet in snippets if snippet.qa_id is not None]
    assert pair.doc_type == "qa_knowledge"


def test_inactive_qa_pairs_are_not_returned(services: Services, tenant: Tenant) -> None:
    with services.db.write() as session:
        pair = add_qa(
            session, tenant.user_id, tenant.assistant_id, "Do you sell kites?", "Yes, red kites."
        )
        pair.is_active = False
        session.flush()
        knowledge_store.index_qa(session, pair.id)
    assert ask(services, tenant, "kites") == []


def test_near_duplicate_chunks_are_returned_once(services: Services, tenant: Tenant) -> None:
    base = "The warranty on all bicycles lasts two years from the date of purchase."
    with services.db.write() as session:
        add_knowledge(session, tenant.user_id, tenant.assistant_id, base)
        add_knowledge(session, tenant.user_id, tenant.assistant_id, base + " Thank you.")
        add_knowledge(
            session, tenant.user_id, tenant.assistant_id, "Bicycles are serviced for free."
        )
    found = texts(ask(services, tenant, "bicycles warranty"))
    assert len(found) == 2
    assert "Bicycles are serviced for free." in found


def test_snippets_fit_the_token_budget(services: Services, tenant: Tenant) -> None:
    with services.db.write() as session:
        for n in range(8):
            add_knowledge(
                session,
                tenant.user_id,
                tenant.assistant_id,
                f"Tariff {n}: " + " ".join(f"tariff detail{n}x{i}" for i in range(60)),
            )
    snippets = ask(services, tenant, "tariff", top_k=8, token_budget=500)
    assert snippets
    assert sum(snippet.token_count for snippet in snippets) <= 500
    assert len(ask(services, tenant, "tariff", top_k=8, token_budget=5000)) > len(snippets)


def test_retrieval_counts_usage_of_the_entries_used(services: Services, tenant: Tenant) -> None:
    with services.db.write() as session:
        entry = add_knowledge(session, tenant.user_id, tenant.assistant_id, "Returns are free.")
        pair = add_qa(session, tenant.user_id, tenant.assistant_id, "Are returns free?", "Yes.")
        entry_id, pair_id = entry.id, pair.id
    ask(services, tenant, "returns")
    ask(services, tenant, "returns")
    with services.db.read() as session:
        entry_row = session.get(UserKnowledge, entry_id)
        pair_row = session.get(QaKnowledge, pair_id)
        assert entry_row is not None and pair_row is not None
        assert entry_row.usage_count == 2 and entry_row.last_used is not None
        assert pair_row.usage_count == 2 and pair_row.last_used is not None


def test_fts_syntax_in_the_question_is_harmless(services: Services, tenant: Tenant) -> None:
    with services.db.write() as session:
        add_knowledge(session, tenant.user_id, tenant.assistant_id, "Pickup point opens at noon.")
    question = "pickup\" OR * NEAR(a b) ^col: -x AND (noon) '; DROP TABLE users; -- :* & | !"
    assert texts(ask(services, tenant, question)) == ["Pickup point opens at noon."]


def test_question_without_content_words_finds_nothing(services: Services, tenant: Tenant) -> None:
    with services.db.write() as session:
        add_knowledge(session, tenant.user_id, tenant.assistant_id, "Anything at all.")
    assert ask(services, tenant, "what is the?! и в на") == []


# --- embeddings re-rank hook ----------------------------------------------------------------


def topic_embedder(texts: Any) -> list[list[float]]:
    return [
        [float("money" in t or "refund" in t.lower()), float("tent" in t.lower())] for t in texts
    ]


def test_embedder_reorders_the_lexical_candidates(services: Services, tenant: Tenant) -> None:
    with services.db.write() as session:
        add_knowledge(
            session,
            tenant.user_id,
            tenant.assistant_id,
            "Card payments: tent rental is paid by card, card only, card.",
        )
        add_knowledge(
            session, tenant.user_id, tenant.assistant_id, "A refund goes back to the card."
        )
    lexical = texts(ask(services, tenant, "card"))
    reranked = texts(ask(services, tenant, "card money", embedder=topic_embedder))
    assert lexical[0].startswith("Card payments")
    assert reranked[0] == "A refund goes back to the card."


def test_failing_embedder_falls_back_to_lexical_order(services: Services, tenant: Tenant) -> None:
    def broken(_texts: Any) -> list[list[float]]:
        raise ConnectionError("embeddings server down")

    with services.db.write() as session:
        add_knowledge(session, tenant.user_id, tenant.assistant_id, "Card payments are accepted.")
        add_knowledge(
            session, tenant.user_id, tenant.assistant_id, "Gift card balance never expires."
        )
    assert len(ask(services, tenant, "card", embedder=broken)) == 2


def test_reindexing_an_entry_for_another_assistant_moves_it(
    services: Services, tenant: Tenant
) -> None:
    with services.db.write() as session:
        entry = add_knowledge(
            session, tenant.user_id, tenant.assistant_id, "Lockers are on floor two."
        )
        index_text(
            session,
            owner_id=tenant.user_id,
            text="Lockers are on floor two.",
            assistant_id=tenant.other_assistant_id,
            doc_id=entry.doc_id,
            knowledge_id=entry.id,
        )
    assert ask(services, tenant, "lockers") == []
    assert len(ask(services, tenant, "lockers", assistant_id=tenant.other_assistant_id)) == 1


# --- bounded search: selective terms first, newest common matches as the fill -----------------


ORDER_TEXTS = [
    f"Order status: {detail}."
    for detail in (
        "paid orders ship within a day",
        "cancelled orders are refunded",
        "gift orders come wrapped",
        "bulk orders need a manager",
        "orders above fifty euros ship free",
        "weekend orders leave on monday",
        "preorders open a month ahead",
        "changed orders restart packing",
        "lost orders are resent",
        "split orders arrive separately",
    )
]


@pytest.fixture
def tiny_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Budgets a handful of rows wide, so that a small test corpus has 'common' words."""
    monkeypatch.setattr(knowledge_search, "SELECTIVE_BUDGET_ROWS", 3)
    monkeypatch.setattr(knowledge_search, "RANKABLE_MAX_ROWS", 5)


def test_rare_words_outrank_common_ones(
    services: Services, tenant: Tenant, tiny_budgets: None
) -> None:
    with services.db.write() as session:
        for content in ORDER_TEXTS:
            add_knowledge(session, tenant.user_id, tenant.assistant_id, content)
        add_knowledge(
            session, tenant.user_id, tenant.assistant_id, "An order to Kazan travels four days."
        )
    found = texts(ask(services, tenant, "order to Kazan", top_k=3))
    assert found[0] == "An order to Kazan travels four days."
    assert len(found) == 3


def test_only_common_words_still_find_the_newest_matches(
    services: Services, tenant: Tenant, tiny_budgets: None
) -> None:
    with services.db.write() as session:
        for content in ORDER_TEXTS:
            add_knowledge(session, tenant.user_id, tenant.assistant_id, content)
    found = texts(ask(services, tenant, "order status", top_k=3))
    assert len(found) == 3
    assert all(text.startswith("Order status") for text in found)


# --- one census of the scopes, the best rows picked inside the index --------------------------


def test_scope_census_names_exactly_the_scopes_that_hold_chunks(
    services: Services, make_tenant: Callable[[], Tenant]
) -> None:
    tenant, stranger = make_tenant(), make_tenant()
    with services.db.write() as session:
        add_knowledge(session, tenant.user_id, tenant.assistant_id, "Tents are waterproof.")
        add_qa(session, tenant.user_id, None, "Do you ship abroad?", "Yes, to the EU.")
        add_knowledge(session, stranger.user_id, None, "Someone else's global chunk.")
        add_qa(session, stranger.user_id, stranger.assistant_id, "Other?", "Not ours.")
    with services.db.read() as session:
        census = knowledge_search.scope_census(session, tenant.user_id, tenant.assistant_id)
        global_only = knowledge_search.scope_census(session, tenant.user_id, None)
    assert census.filled == {(tenant.assistant_id, False), (None, True)}
    assert global_only.filled == {(None, True)}


def test_tenant_global_qa_pairs_are_the_fallback(services: Services, tenant: Tenant) -> None:
    with services.db.write() as session:
        add_qa(session, tenant.user_id, None, "Where is the office?", "At 5 Harbour Road.")
    assert texts(ask(services, tenant, "office")) == [
        "Q: Where is the office?\nA: At 5 Harbour Road."
    ]


def test_a_small_limit_returns_the_head_of_the_full_ranking(
    services: Services, tenant: Tenant
) -> None:
    with services.db.write() as session:
        for n in range(12):
            # More mentions of "kayak", and shorter texts, rank higher; ids break the ties.
            words = " ".join(["kayak"] * (1 + n % 4) + ["paddle"] * (n % 3) + ["river"] * n)
            add_knowledge(session, tenant.user_id, tenant.assistant_id, f"{words}.")
    with services.db.read() as session:
        def ranked(limit: int) -> list[tuple[int, float]]:
            hits = knowledge_search.search_chunks(
                session, tenant.user_id, tenant.assistant_id, ["kayak", "paddl"], limit
            )
            return [(hit.id, hit.score) for hit in hits]

        everything = ranked(50)
        assert len(everything) == 12
        assert [score for _id, score in everything] == sorted(
            (score for _id, score in everything), reverse=True
        )
        for limit in (1, 3, 5):
            assert ranked(limit) == everything[:limit]
