"""Knowledge retrieval for one question (spec §9.5), over the database's full-text index.

1. Lexical candidates: the question's content words as prefix stems, ranked by bm25 (SQLite
   FTS5) or ts_rank_cd (PostgreSQL), 5×top_k of them, from the assistant's own chunks; when it
   has none that match, from the owner's tenant-global chunks (assistant_id IS NULL).
2. Q&A pairs searched the same way (a few), rendered "Q: …\\nA: …", merged by score.
3. Optional re-ranking by embeddings (`embedder`: texts → vectors) blended with lexical rank.
4. Diversity: a chunk too similar (token Jaccard > 0.7) to one already chosen is dropped.
5. Packed to a token budget (≈ chars/4). Side effect: usage counters of the entries used.

Synchronous: run it in a thread (an actor, or `anyio.to_thread.run_sync`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy.orm import Session

from server.store import fts, knowledge_search
from server.store import knowledge as knowledge_store
from server.store.knowledge_search import ChunkHit, ScopeCensus

log = logging.getLogger(__name__)

Embedder = Callable[[Sequence[str]], Sequence[Sequence[float]]]
T = TypeVar("T")

DEFAULT_TOP_K = 5
DEFAULT_TOKEN_BUDGET = 1500
QA_LIMIT = 3
CANDIDATE_FACTOR = 5
MAX_JACCARD = 0.7
LEXICAL_WEIGHT = 0.3
CHARS_PER_TOKEN = 4


@dataclasses.dataclass(frozen=True, slots=True)
class Snippet:
    text: str
    doc_type: str | None
    score: float
    chunk_id: int
    doc_id: int | None
    knowledge_id: int | None
    qa_id: int | None
    token_count: int


def retrieve(
    session: Session,
    *,
    owner_id: int,
    assistant_id: int | None,
    question: str,
    top_k: int = DEFAULT_TOP_K,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    embedder: Embedder | None = None,
    qa_limit: int = QA_LIMIT,
    track_usage: bool = True,
) -> list[Snippet]:
    """The knowledge snippets to ground an answer to `question`, best first."""
    terms = fts.query_terms(question)
    if not terms or top_k <= 0:
        return []
    census = knowledge_search.scope_census(session, owner_id, assistant_id)
    documents = _scoped_search(session, census, terms, CANDIDATE_FACTOR * top_k)
    pairs = _scoped_search(session, census, terms, qa_limit, qa=True)
    candidates = sorted(documents + pairs, key=lambda hit: -_weighted(hit))
    if embedder is not None:
        candidates = _reranked(question, candidates, embedder)
    rank = {hit.id: index for index, hit in enumerate(candidates)}
    chosen = diversify([hit for hit in candidates if hit.qa_id is None], top_k) + diversify(
        [hit for hit in candidates if hit.qa_id is not None], qa_limit
    )
    chosen.sort(key=lambda hit: rank[hit.id])
    snippets = pack([_snippet(hit) for hit in chosen], token_budget)
    if track_usage:
        record_snippet_usage(session, owner_id, snippets)
    return snippets


def record_snippet_usage(session: Session, owner_id: int, snippets: Sequence[Snippet]) -> None:
    """Count a use of the knowledge behind each snippet (spec §9.5's side effect)."""
    if not snippets:
        return
    knowledge_store.record_usage(
        session,
        owner_id,
        knowledge_ids=[s.knowledge_id for s in snippets if s.knowledge_id is not None],
        doc_ids=[
            s.doc_id
            for s in snippets
            if s.doc_id is not None and s.knowledge_id is None and s.qa_id is None
        ],
        qa_ids=[s.qa_id for s in snippets if s.qa_id is not None],
    )


def _scoped_search(
    session: Session, census: ScopeCensus, terms: list[str], limit: int, *, qa: bool = False
) -> list[ChunkHit]:
    """The assistant's own chunks, else (none matched) the tenant-global ones."""
    owner_id, assistant_id = census.owner_id, census.assistant_id
    hits = knowledge_search.search_chunks(
        session, owner_id, assistant_id, terms, limit, qa=qa, census=census
    )
    if not hits and assistant_id is not None:
        hits = knowledge_search.search_chunks(
            session, owner_id, None, terms, limit, qa=qa, census=census
        )
    return hits


def _weighted(hit: ChunkHit) -> float:
    # importance 10 (the default) keeps the lexical score; 1 roughly halves it.
    return hit.score * (0.5 + max(1, min(hit.importance, 10)) / 20)


def _reranked(question: str, hits: list[ChunkHit], embedder: Embedder) -> list[ChunkHit]:
    try:
        return rerank_by_embedding(question, hits, [hit.text for hit in hits], embedder)
    except Exception:  # an embeddings outage must not take answers down: keep lexical order
        log.warning("embedding re-rank failed; using lexical order", exc_info=True)
        return hits


def _snippet(hit: ChunkHit) -> Snippet:
    return Snippet(
        text=hit.text,
        doc_type=hit.doc_type,
        score=_weighted(hit),
        chunk_id=hit.id,
        doc_id=hit.doc_id,
        knowledge_id=hit.knowledge_id,
        qa_id=hit.qa_id,
        token_count=hit.token_count or estimate_tokens(hit.text),
    )


# --- pure steps --------------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    return max(1, (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)


def jaccard(left: set[str], right: set[str]) -> float:
    if not left and not right:
        return 1.0
    return len(left & right) / len(left | right)


def diversify(
    hits: Sequence[ChunkHit], limit: int, max_jaccard: float = MAX_JACCARD
) -> list[ChunkHit]:
    """Greedy in rank order: skip a hit whose word set is too close to a chosen one's."""
    chosen: list[ChunkHit] = []
    chosen_words: list[set[str]] = []
    for hit in hits:
        if len(chosen) >= limit:
            break
        words = set(fts.tokenize(hit.text))
        if any(jaccard(words, other) > max_jaccard for other in chosen_words):
            continue
        chosen.append(hit)
        chosen_words.append(words)
    return chosen


def pack(snippets: Sequence[Snippet], token_budget: int) -> list[Snippet]:
    """Snippets in order while they fit the budget; a first snippet too big alone is cut."""
    packed: list[Snippet] = []
    used = 0
    for snippet in snippets:
        if used + snippet.token_count <= token_budget:
            packed.append(snippet)
            used += snippet.token_count
        elif not packed and token_budget > 0:
            text = snippet.text[: token_budget * CHARS_PER_TOKEN]
            packed.append(
                dataclasses.replace(snippet, text=text, token_count=estimate_tokens(text))
            )
            used = token_budget
    return packed


def cosine(left: Sequence[float], right: Sequence[float]) -> float:
    dot = sum(a * b for a, b in zip(left, right, strict=True))
    norm = math.sqrt(sum(a * a for a in left)) * math.sqrt(sum(b * b for b in right))
    return dot / norm if norm else 0.0


def rerank_by_embedding(
    question: str,
    candidates: Sequence[T],
    texts: Sequence[str],
    embedder: Embedder,
    *,
    lexical_weight: float = LEXICAL_WEIGHT,
) -> list[T]:
    """Candidates (given in lexical rank order) re-ordered by a blend of the cosine similarity
    of their text to the question and their lexical rank (1.0 for the first, falling linearly).
    """
    if len(candidates) != len(texts):
        raise ValueError("one text per candidate")
    if len(candidates) < 2:
        return list(candidates)
    vectors = list(embedder([question, *texts]))
    if len(vectors) != len(texts) + 1:
        raise ValueError("the embedder returned a vector count that does not match")
    query = vectors[0]
    count = len(candidates)
    blended = [
        (lexical_weight * (1 - rank / count) + (1 - lexical_weight) * cosine(query, vector), rank)
        for rank, vector in enumerate(vectors[1:])
    ]
    blended.sort(key=lambda pair: (-pair[0], pair[1]))
    return [candidates[rank] for _score, rank in blended]
