"""Pure parts of retrieval: query building, diversity, budget packing, embedding re-rank."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from server.ai.retrieval import Snippet, cosine, diversify, pack, rerank_by_embedding
from server.store.fts import fts5_match, include_object, pg_tsquery, query_terms, stem, tokenize
from server.store.knowledge import ChunkHit
from server.store.knowledge_search import coordination_score, split_terms


def hit(chunk_id: int, text: str, score: float = 1.0) -> ChunkHit:
    return ChunkHit(chunk_id, text, 1, 1, chunk_id, None, None, 10, len(text) // 4 + 1, score)


def snippet(chunk_id: int, tokens: int) -> Snippet:
    return Snippet("x" * tokens * 4, None, 1.0, chunk_id, None, None, None, tokens)


# --- query building ---------------------------------------------------------------------------


def test_tokenize_drops_stop_words_short_tokens_and_punctuation() -> None:
    assert tokenize("What is the price of a Tent, please?") == ["price", "tent"]
    assert tokenize("Сколько стоит доставка в Москву?") == [
        "сколько",
        "стоит",
        "доставка",
        "москву",
    ]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("opening", "open"),
        ("hours", "hour"),
        ("shipping", "ship"),
        ("policies", "polic"),
        ("policy", "polic"),
        ("delivery", "delive"),
        ("цена", "цен"),
        ("цены", "цен"),
        ("доставки", "достав"),
        ("доставку", "достав"),
        ("2024", "2024"),
    ],
)
def test_stems_let_inflected_forms_share_a_prefix(word: str, expected: str) -> None:
    assert stem(word) == expected


def test_query_terms_are_distinct_stems() -> None:
    assert query_terms("Delivery? delivery! DELIVERIES") == ["delive"]


@pytest.mark.parametrize(
    "question",
    ['a" OR b', "NEAR(x y)", "col:value", "-x ^y", "x* & y | !z", "'); DROP TABLE x; --", '"'],
)
def test_no_query_syntax_reaches_the_database(question: str) -> None:
    for term in query_terms(question):
        assert term.isalnum()
    match = fts5_match(query_terms(question))
    assert all(part.startswith('"') and part.endswith('"*') for part in match.split(" OR ") if part)
    assert set(pg_tsquery(query_terms(question))) <= set("abcdefghijklmnopqrstuvwxyz0123456789:*| ")


def test_match_expressions_or_the_prefix_terms() -> None:
    assert fts5_match(["достав", "цен"]) == '"достав"* OR "цен"*'
    assert pg_tsquery(["достав", "цен"]) == "достав:* | цен:*"
    assert fts5_match([]) == "" and pg_tsquery(["?!"]) == ""


def test_schema_comparison_skips_the_fulltext_objects() -> None:
    assert not include_object(None, "knowledge_fts_data", "table", True, None)
    assert not include_object(None, "chunk_tsv", "column", True, None)
    assert not include_object(None, "ix_knowledge_embeddings_chunk_tsv", "index", True, None)
    assert include_object(None, "knowledge_embeddings", "table", True, None)


# --- diversity and budget -------------------------------------------------------------------


def test_near_duplicates_are_dropped_in_rank_order() -> None:
    text = "the warranty on bicycles lasts two years from purchase"
    hits = [hit(1, text), hit(2, text + " indeed"), hit(3, "bicycles are serviced for free")]
    assert [h.id for h in diversify(hits, 5)] == [1, 3]


def test_diversify_stops_at_the_limit() -> None:
    hits = [hit(n, f"topic{n} words{n} unique{n}") for n in range(10)]
    assert [h.id for h in diversify(hits, 3)] == [0, 1, 2]


def test_pack_keeps_order_and_skips_what_does_not_fit() -> None:
    packed = pack([snippet(1, 300), snippet(2, 900), snippet(3, 200)], 600)
    assert [s.chunk_id for s in packed] == [1, 3]


def test_pack_cuts_a_first_snippet_larger_than_the_budget() -> None:
    [only] = pack([snippet(1, 2000)], 100)
    assert only.token_count <= 100
    assert len(only.text) == 400


# --- embedding re-rank ------------------------------------------------------------------------


def fake_embedder(texts: Sequence[str]) -> list[list[float]]:
    """Two-dimensional 'meaning': how much a text is about money vs about tents."""
    return [[float(t.count("refund") + t.count("money")), float(t.count("tent"))] for t in texts]


def test_cosine() -> None:
    assert cosine([1.0, 0.0], [1.0, 0.0]) == pytest.approx(1.0)
    assert cosine([1.0, 0.0], [0.0, 1.0]) == pytest.approx(0.0)
    assert cosine([0.0, 0.0], [1.0, 1.0]) == 0.0


def test_rerank_moves_the_semantically_closest_candidate_up() -> None:
    candidates = ["tent poles and tent pegs", "refund of money to the card"]
    ranked = rerank_by_embedding("money back please", candidates, candidates, fake_embedder)
    assert ranked == ["refund of money to the card", "tent poles and tent pegs"]


def test_rerank_keeps_lexical_order_between_equally_close_candidates() -> None:
    candidates = ["refund policy", "refund rules"]
    assert rerank_by_embedding("refund", candidates, candidates, fake_embedder) == candidates


def test_rerank_weight_one_keeps_the_lexical_order() -> None:
    candidates = ["tent", "refund"]
    ranked = rerank_by_embedding(
        "refund", candidates, candidates, fake_embedder, lexical_weight=1.0
    )
    assert ranked == candidates


def test_rerank_refuses_a_wrong_vector_count() -> None:
    with pytest.raises(ValueError):
        rerank_by_embedding("q", ["a", "b"], ["a", "b"], lambda texts: [[1.0]])


# --- term tiers and the fill score ----------------------------------------------------------


def test_split_terms_keeps_the_rarest_within_the_budget() -> None:
    frequencies = {"kazan": 3.0, "order": 900.0, "deliv": 400.0, "status": 5000.0}
    tiers = split_terms(
        ["order", "kazan", "deliv", "status"], frequencies, budget=500, rankable_max=1000
    )
    assert tiers.selective == ["kazan", "deliv"]
    assert tiers.rankable == ["order"]
    assert tiers.very_common == ["status"]


def test_split_terms_treats_unknown_terms_as_rare() -> None:
    assert split_terms(["new"], {}, budget=10).selective == ["new"]


def test_coordination_score_counts_prefix_matches_once() -> None:
    assert coordination_score(
        "Delivery, deliveries and доставка", ["delive", "достав", "tent"]
    ) == (pytest.approx(2 / (1 + math.log1p(len("Delivery, deliveries and доставка") / 800))))
    assert coordination_score("undelivered", ["delive"]) == 0.0
