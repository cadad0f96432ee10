"""Lexical search over the knowledge full-text index, with bounded work per question.

Ranking functions cost work per matched row (and FTS5's bm25 reads the whole row list of every
query term to weigh it), while an OR of prefix terms with one common word ("order", "заказ")
matches most of a large knowledge base. So a search first estimates each term's document
frequency from the database's own statistics (SQLite: the `fts5vocab` table, cached briefly;
PostgreSQL: the planner's `pg_stats` lexeme frequencies) and sorts the terms into three tiers:

* selective: the rarest terms, matching at most SELECTIVE_BUDGET_ROWS rows together. The rows
  they match are the candidates, ranked by bm25 / ts_rank_cd with the selective AND the
  rankable terms;
* rankable: the others matching at most RANKABLE_MAX_ROWS rows: they weigh in the ranking;
* very common: the rest (low weight anyway): only matched, never ranked by the database.

Only when the selective terms give fewer than `limit` hits, the newest rows matching the
non-selective terms fill up, scored by how many query terms they contain, below the others.
Scoping (owner, assistant or tenant-global, documents or Q&A) applies everywhere.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.orm import Session

from server.store import fts
from server.store.search_stats import pg_lexeme_stats, prefix_end

SELECTIVE_BUDGET_ROWS = 600
RANKABLE_MAX_ROWS = 3000
FILL_FACTOR = 1
SQLITE_FREQUENCY_TTL_SECS = 60.0
UNKNOWN = math.inf


@dataclasses.dataclass(frozen=True, slots=True)
class ChunkHit:
    id: int
    text: str
    assistant_id: int | None
    doc_id: int | None
    knowledge_id: int | None
    qa_id: int | None
    doc_type: str | None
    importance: int
    token_count: int
    score: float  # higher is better; comparable only within one search


@dataclasses.dataclass(frozen=True, slots=True)
class _Scope:
    owner_id: int
    assistant_id: int | None
    qa: bool

    def rows_sql(self, suffix: str = "") -> tuple[str, dict[str, Any]]:
        """(where, params) for the scope's rows of `ke` (not checking that a pair is active);
        `suffix` tells apart the parameters of several scopes in one statement."""
        params: dict[str, Any] = {f"owner{suffix}": self.owner_id}
        filters = [f"ke.user_id = :owner{suffix}"]
        if self.assistant_id is None:
            filters.append("ke.assistant_id IS NULL")
        else:
            filters.append(f"ke.assistant_id = :assistant{suffix}")
            params[f"assistant{suffix}"] = self.assistant_id
        filters.append("ke.qa_id IS NOT NULL" if self.qa else "ke.qa_id IS NULL")
        return " AND ".join(filters), params

    def sql(self) -> tuple[str, str, dict[str, Any]]:
        """(join, where, params) restricting `ke` to this scope (and Q&A to active pairs)."""
        where, params = self.rows_sql()
        if not self.qa:
            return "", where, params
        params["active"] = True
        join = "JOIN qa_knowledge AS qa ON qa.id = ke.qa_id AND qa.user_id = :owner"
        return join, f"{where} AND qa.is_active = :active", params


@dataclasses.dataclass(frozen=True, slots=True)
class TermTiers:
    selective: list[str]
    rankable: list[str]
    very_common: list[str]


def split_terms(
    terms: Sequence[str],
    frequencies: Mapping[str, float],
    budget: int = SELECTIVE_BUDGET_ROWS,
    rankable_max: int = RANKABLE_MAX_ROWS,
) -> TermTiers:
    """Sort terms into tiers by estimated matching rows (unknown terms count as rare)."""
    tiers = TermTiers([], [], [])
    total = 0.0
    for term in sorted(terms, key=lambda term: frequencies.get(term, 0.0)):
        rows = frequencies.get(term, 0.0)
        if total + rows <= budget:
            tiers.selective.append(term)
            total += rows
        elif rows <= rankable_max:
            tiers.rankable.append(term)
        else:
            tiers.very_common.append(term)
    return tiers


@dataclasses.dataclass(frozen=True, slots=True)
class ScopeCensus:
    """Which scopes of one owner hold any chunk: the assistant's documents and Q&A, and the
    tenant-global ones. One query answers for all of them (Q&A pairs and tenant-global chunks
    are often absent, and the indexes say so faster than a full-text search)."""

    owner_id: int
    assistant_id: int | None
    filled: frozenset[tuple[int | None, bool]]  # (assistant_id or None, qa) of non-empty scopes

    def covers(self, owner_id: int, assistant_id: int | None) -> bool:
        return owner_id == self.owner_id and assistant_id in (self.assistant_id, None)

    def has(self, assistant_id: int | None, qa: bool) -> bool:
        return (assistant_id, qa) in self.filled


def scope_census(session: Session, owner_id: int, assistant_id: int | None) -> ScopeCensus:
    """The census of the owner's scopes that a search for `assistant_id` may read."""
    holders = dict.fromkeys([assistant_id, None])
    scopes = [_Scope(owner_id, holder, qa) for holder in holders for qa in (False, True)]
    filled = _backend(session).filled(session, scopes)
    return ScopeCensus(owner_id, assistant_id, frozenset(
        (scope.assistant_id, scope.qa) for scope, full in zip(scopes, filled, strict=True) if full
    ))


def search_chunks(
    session: Session,
    owner_id: int,
    assistant_id: int | None,
    query_terms: Sequence[str],
    limit: int,
    *,
    qa: bool = False,
    census: ScopeCensus | None = None,
) -> list[ChunkHit]:
    """Best-ranked chunks of one owner matching any of the terms (prefix match).

    `assistant_id=None` searches the tenant-global rows (assistant_id IS NULL). `qa=False`
    searches document/knowledge chunks, `qa=True` only chunks of active Q&A pairs. `census`:
    the owner's `scope_census()` taken in this transaction (spares a query per search).
    """
    terms = list(dict.fromkeys(term for term in map(fts.safe_term, query_terms) if term))
    if not terms or limit <= 0:
        return []
    backend = _backend(session)
    scope = _Scope(owner_id, assistant_id, qa)
    if census is not None and census.covers(owner_id, assistant_id):
        if not census.has(assistant_id, qa):
            return []
    elif not backend.filled(session, [scope])[0]:
        return []
    frequencies = backend.frequencies(session, scope, terms)
    tiers = split_terms(terms, frequencies, SELECTIVE_BUDGET_ROWS, RANKABLE_MAX_ROWS)
    hits: list[ChunkHit] = []
    if tiers.selective:
        hits = backend.ranked(session, scope, tiers.selective, tiers.rankable, limit)
    others = tiers.rankable + tiers.very_common
    if len(hits) < limit and others:
        seen = {hit.id for hit in hits}
        newest = backend.newest(session, scope, others, limit * FILL_FACTOR)
        scored = [
            dataclasses.replace(hit, score=coordination_score(hit.text, terms))
            for hit in newest
            if hit.id not in seen
        ]
        scored.sort(key=lambda hit: -hit.score)
        hits += _ranked_below(hits, scored)
    return hits[:limit]


def coordination_score(text_: str, terms: Sequence[str]) -> float:
    """How many of the terms a text contains (as word prefixes), gently favouring short texts."""
    pattern = _prefix_pattern(tuple(terms))
    lowered = text_.lower()
    matched = {match.group(1) for match in pattern.finditer(lowered)}
    return len(matched) / (1.0 + math.log1p(len(lowered) / 800))


@functools.lru_cache(maxsize=256)
def _prefix_pattern(terms: tuple[str, ...]) -> re.Pattern[str]:
    # Longest first, so that "достав" wins over "дос" when both are terms.
    alternatives = "|".join(re.escape(term) for term in sorted(terms, key=len, reverse=True))
    return re.compile(rf"(?<![^\W_])({alternatives})")


def _ranked_below(better: list[ChunkHit], worse: list[ChunkHit]) -> list[ChunkHit]:
    """`worse` rescaled so that each scores below every hit of `better` (order kept)."""
    if not better or not worse:
        return worse
    floor = min(hit.score for hit in better)
    top = max(hit.score for hit in worse) or 1.0
    return [dataclasses.replace(hit, score=floor * 0.5 * hit.score / top) for hit in worse]


def _hits(rows: Sequence[Any], qa: bool) -> list[ChunkHit]:
    from server.store.knowledge import qa_chunk_text

    return [
        ChunkHit(
            id=row.id,
            text=qa_chunk_text(row.qa_question, row.qa_answer) if qa else row.chunk_text,
            assistant_id=row.assistant_id,
            doc_id=row.doc_id,
            knowledge_id=row.knowledge_id,
            qa_id=row.qa_id,
            doc_type=row.doc_type,
            importance=row.importance,
            token_count=row.token_count,
            score=float(row.score),
        )
        for row in rows
    ]


_COLUMNS = (
    "ke.id, ke.chunk_text, ke.assistant_id, ke.doc_id, ke.knowledge_id, ke.qa_id, ke.doc_type,"
    " ke.importance, ke.token_count"
)
_QA_COLUMNS = ", qa.question AS qa_question, qa.answer AS qa_answer"


def _columns(scope: _Scope) -> str:
    return _COLUMNS + (_QA_COLUMNS if scope.qa else "")


def _backend(session: Session) -> _Backend:
    return _SQLITE if session.get_bind().dialect.name == "sqlite" else _POSTGRES


@functools.lru_cache(maxsize=256)
def _sql(statement: str) -> TextClause:
    """A text() statement parsed once: the few shapes of SQL below repeat on every answer."""
    return text(statement)


class _Backend:
    def filled(self, session: Session, scopes: Sequence[_Scope]) -> list[bool]:
        """Per scope: does it hold any chunk? One statement for all of them (btree indexes)."""
        probes = []
        params: dict[str, Any] = {}
        for n, scope in enumerate(scopes):
            where, scope_params = scope.rows_sql(suffix=str(n))
            params.update(scope_params)
            probes.append(
                f"EXISTS (SELECT 1 FROM knowledge_embeddings AS ke WHERE {where}) AS s{n}"
            )
        row = session.execute(_sql("SELECT " + ", ".join(probes)), params).one()
        return [bool(value) for value in row]

    def frequencies(self, session: Session, scope: _Scope, terms: list[str]) -> dict[str, float]:
        """Estimated matching rows per term (math.inf: treat as very common)."""
        raise NotImplementedError

    def ranked(
        self, session: Session, scope: _Scope, selective: list[str], rankable: list[str], limit: int
    ) -> list[ChunkHit]:
        """Rows matching a selective term, ranked with the selective and rankable terms."""
        raise NotImplementedError

    def newest(
        self, session: Session, scope: _Scope, terms: list[str], count: int
    ) -> list[ChunkHit]:
        """The newest `count` rows matching any of the terms (score 0: ranked by the caller)."""
        raise NotImplementedError


# FTS5 joins start from the index ("CROSS JOIN" fixes SQLite's join order): probing the index
# once per row of knowledge_embeddings would re-run the whole MATCH for every row.
_SQLITE_FROM = (
    f"FROM {fts.FTS_TABLE} CROSS JOIN knowledge_embeddings AS ke ON ke.id = {fts.FTS_TABLE}.rowid"
)
_sqlite_frequency_cache: dict[tuple[str, str], tuple[float, float]] = {}
# The scope column only filters; it never adds to the score.
_BM25 = f"bm25({fts.FTS_TABLE}, 1.0, 0.0)"


def _scoped_match(scope: _Scope, terms: str) -> str:
    """An FTS5 query: the scope token (an index intersection) AND the terms in the text."""
    token = fts.scope_token(scope.owner_id, scope.assistant_id, scope.qa)
    return f'scope : "{token}" AND chunk_text : ({terms})'


class _Sqlite(_Backend):
    def filled(self, session: Session, scopes: Sequence[_Scope]) -> list[bool]:
        # One token lookup in the index per scope, whatever the table's size.
        probes = [
            f"(SELECT rowid FROM {fts.FTS_TABLE} WHERE {fts.FTS_TABLE} MATCH :s{n} LIMIT 1)"
            f" IS NOT NULL"
            for n in range(len(scopes))
        ]
        params = {
            f"s{n}": f'scope : "{fts.scope_token(scope.owner_id, scope.assistant_id, scope.qa)}"'
            for n, scope in enumerate(scopes)
        }
        row = session.execute(_sql("SELECT " + ", ".join(probes)), params).one()
        return [bool(value) for value in row]

    def frequencies(self, session: Session, scope: _Scope, terms: list[str]) -> dict[str, float]:
        # Rows per term across the whole index (summed over a prefix's expansions: an upper
        # bound). Counting reads the term's row list, so answers are kept for a minute.
        database = str(session.get_bind().url)
        now = time.monotonic()
        known: dict[str, float] = {}
        for term in terms:
            cached = _sqlite_frequency_cache.get((database, term))
            if cached is not None and cached[1] > now:
                known[term] = cached[0]
        missing = [term for term in terms if term not in known]
        if missing:
            parts = []
            params: dict[str, Any] = {}
            for n, term in enumerate(missing):
                parts.append(
                    f"SELECT {n} AS n, coalesce(sum(doc), 0) AS rows FROM {fts.FTS_VOCAB}"
                    f" WHERE col = 'chunk_text' AND term >= :lo{n} AND term < :hi{n}"
                )
                params[f"lo{n}"], params[f"hi{n}"] = term, prefix_end(term)
            for row in session.execute(_sql(" UNION ALL ".join(parts)), params):
                term = missing[row.n]
                known[term] = float(row.rows)
                _sqlite_frequency_cache[(database, term)] = (
                    known[term],
                    now + SQLITE_FREQUENCY_TTL_SECS,
                )
        if len(_sqlite_frequency_cache) > 50_000:
            _sqlite_frequency_cache.clear()
        return known

    def ranked(
        self, session: Session, scope: _Scope, selective: list[str], rankable: list[str], limit: int
    ) -> list[ChunkHit]:
        # "S AND (S OR R)" matches exactly the rows of S, and bm25 also weighs the R terms.
        terms = fts.fts5_match(selective)
        if rankable:
            terms = f"({terms}) AND ({terms} OR {fts.fts5_match(rankable)})"
        join, where, params = scope.sql()
        params.update(match=_scoped_match(scope, terms), limit=limit)
        if not join:
            # The scope token already restricts the index to the scope's rows, so the best
            # `limit` are picked inside the index and only they are read from the table
            # (the WHERE below re-checks them and never drops one).
            sql = (
                f"SELECT {_COLUMNS}, hits.score FROM (SELECT rowid AS id, -{_BM25} AS score"
                f" FROM {fts.FTS_TABLE} WHERE {fts.FTS_TABLE} MATCH :match"
                f" ORDER BY {_BM25}, rowid LIMIT :limit) AS hits"
                f" CROSS JOIN knowledge_embeddings AS ke ON ke.id = hits.id"
                f" WHERE {where} ORDER BY hits.score DESC, ke.id"
            )
        else:  # Q&A: the active flag lives in another table, so filter before the limit
            sql = (
                f"SELECT {_columns(scope)}, -{_BM25} AS score {_SQLITE_FROM} {join}"
                f" WHERE {fts.FTS_TABLE} MATCH :match AND {where}"
                f" ORDER BY {_BM25}, ke.id LIMIT :limit"
            )
        return _hits(session.execute(_sql(sql), params).all(), scope.qa)

    def newest(
        self, session: Session, scope: _Scope, terms: list[str], count: int
    ) -> list[ChunkHit]:
        join, where, params = scope.sql()
        params.update(match=_scoped_match(scope, fts.fts5_match(terms)), count=count)
        if not join:  # as in ranked(): the newest `count` are found in the index alone
            sql = (
                f"SELECT {_COLUMNS}, 0.0 AS score FROM (SELECT rowid AS id FROM {fts.FTS_TABLE}"
                f" WHERE {fts.FTS_TABLE} MATCH :match ORDER BY rowid DESC LIMIT :count) AS hits"
                f" CROSS JOIN knowledge_embeddings AS ke ON ke.id = hits.id"
                f" WHERE {where} ORDER BY ke.id DESC"
            )
        else:
            sql = (
                f"SELECT {_columns(scope)}, 0.0 AS score {_SQLITE_FROM} {join}"
                f" WHERE {fts.FTS_TABLE} MATCH :match AND {where}"
                f" ORDER BY {fts.FTS_TABLE}.rowid DESC LIMIT :count"
            )
        return _hits(session.execute(_sql(sql), params).all(), scope.qa)


class _Postgres(_Backend):
    def frequencies(self, session: Session, scope: _Scope, terms: list[str]) -> dict[str, float]:
        stats = pg_lexeme_stats(session)
        if stats is not None:
            return {term: stats.rows(term) for term in terms}
        # No planner statistics (a small table, or one analysed a moment ago without lexeme
        # statistics): one bounded probe instead.
        join, where, params = scope.sql()
        params.update(match=fts.pg_tsquery(terms), cap=SELECTIVE_BUDGET_ROWS + 1)
        probe = (
            f"SELECT count(*) FROM (SELECT 1 FROM knowledge_embeddings AS ke {join}"
            f" WHERE ke.{fts.TSV_COLUMN} @@ to_tsquery('simple', :match) AND {where}"
            f" LIMIT :cap) AS probe"
        )
        matched = int(session.execute(_sql(probe), params).scalar_one())
        return dict.fromkeys(terms, 0.0 if matched <= SELECTIVE_BUDGET_ROWS else UNKNOWN)

    def ranked(
        self, session: Session, scope: _Scope, selective: list[str], rankable: list[str], limit: int
    ) -> list[ChunkHit]:
        join, where, params = scope.sql()
        params.update(
            match=fts.pg_tsquery(selective),
            rank_query=fts.pg_tsquery(selective + rankable),
            limit=limit,
        )
        # Normalisation 1 of ts_rank_cd: divide by 1 + log(length), like bm25's length penalty.
        sql = (
            f"SELECT {_columns(scope)},"
            f" ts_rank_cd(ke.{fts.TSV_COLUMN}, to_tsquery('simple', :rank_query), 1) AS score"
            f" FROM knowledge_embeddings AS ke {join}"
            f" WHERE ke.{fts.TSV_COLUMN} @@ to_tsquery('simple', :match) AND {where}"
            f" ORDER BY score DESC, ke.id LIMIT :limit"
        )
        return _hits(session.execute(_sql(sql), params).all(), scope.qa)

    def newest(
        self, session: Session, scope: _Scope, terms: list[str], count: int
    ) -> list[ChunkHit]:
        join, where, params = scope.sql()
        params.update(match=fts.pg_tsquery(terms), count=count)
        sql = (
            f"SELECT {_columns(scope)}, 0.0 AS score FROM knowledge_embeddings AS ke {join}"
            f" WHERE ke.{fts.TSV_COLUMN} @@ to_tsquery('simple', :match) AND {where}"
            f" ORDER BY ke.id DESC LIMIT :count"
        )
        return _hits(session.execute(_sql(sql), params).all(), scope.qa)


_SQLITE = _Sqlite()
_POSTGRES = _Postgres()
