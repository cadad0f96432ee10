"""PostgreSQL's own statistics about the knowledge index, for the search's term selectivity.

ANALYZE keeps, per tsvector column, the most common lexemes and the fraction of rows holding
each (`pg_stats.most_common_elems`); summing those of a prefix estimates how many rows a prefix
term matches. Read once and cached for a while per database.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
import threading
import time

from sqlalchemy import text
from sqlalchemy.orm import Session

from server.store import fts

PG_STATS_TTL_SECS = 120.0
PG_NO_STATS_TTL_SECS = 10.0
PG_ANALYZE_RETRY_SECS = 600.0
PG_ANALYZE_MIN_ROWS = 1000


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclasses.dataclass(frozen=True, slots=True)
class _PgStats:
    total_rows: float
    lexemes: list[str]  # sorted
    cumulative: list[float]  # cumulative[i] = sum of frequencies of lexemes[:i]
    expires_at: float

    @property
    def available(self) -> bool:
        return self.total_rows > 0 and bool(self.lexemes)

    def rows(self, prefix: str) -> float:
        """Estimated rows containing a lexeme that starts with `prefix` (0 when not common)."""
        start = bisect.bisect_left(self.lexemes, prefix)
        end = bisect.bisect_left(self.lexemes, prefix_end(prefix))
        return min(1.0, self.cumulative[end] - self.cumulative[start]) * self.total_rows


_pg_stats_cache: dict[str, _PgStats] = {}
_pg_analysed_at: dict[str, float] = {}
_pg_lock = threading.Lock()


def pg_lexeme_stats(session: Session) -> _PgStats | None:
    """The planner's lexeme statistics of the index (cached), or None when there are none.

    A large table that was never analysed (just bulk-imported, autovacuum not yet round) is
    analysed here, at most once per PG_ANALYZE_RETRY_SECS: without statistics the planner
    also picks poor plans for these queries.
    """
    key = str(session.get_bind().url)
    now = time.monotonic()
    cached = _pg_stats_cache.get(key)
    if cached is None or cached.expires_at <= now:
        cached = _read_pg_stats(session, now)
        if not cached.available and _pg_worth_analysing(session, key, now):
            session.execute(text("ANALYZE knowledge_embeddings"))
            cached = _read_pg_stats(session, now)
        with _pg_lock:
            _pg_stats_cache[key] = cached
    return cached if cached.available else None


def _pg_worth_analysing(session: Session, key: str, now: float) -> bool:
    with _pg_lock:
        if now - _pg_analysed_at.get(key, -math.inf) < PG_ANALYZE_RETRY_SECS:
            return False
        _pg_analysed_at[key] = now
    rows = session.execute(
        text("SELECT count(*) FROM (SELECT 1 FROM knowledge_embeddings LIMIT :n) AS sample"),
        {"n": PG_ANALYZE_MIN_ROWS},
    ).scalar_one()
    return int(rows) >= PG_ANALYZE_MIN_ROWS


def _read_pg_stats(session: Session, now: float) -> _PgStats:
    row = session.execute(
        text(
            "SELECT c.reltuples AS total, s.most_common_elems::text::text[] AS lexemes,"
            " s.most_common_elem_freqs AS freqs"
            " FROM pg_class AS c LEFT JOIN pg_stats AS s ON s.schemaname = current_schema()"
            f" AND s.tablename = 'knowledge_embeddings' AND s.attname = '{fts.TSV_COLUMN}'"
            " WHERE c.oid = to_regclass('knowledge_embeddings')"
        )
    ).first()
    if row is None or not row.lexemes or not row.total or row.total <= 0:
        return _PgStats(0.0, [], [0.0], now + PG_NO_STATS_TTL_SECS)
    pairs = sorted(zip(row.lexemes, row.freqs[: len(row.lexemes)], strict=True))
    return _PgStats(
        total_rows=float(row.total),
        lexemes=[lexeme for lexeme, _freq in pairs],
        cumulative=[0.0, *itertools.accumulate(float(freq) for _lexeme, freq in pairs)],
        expires_at=now + PG_STATS_TTL_SECS,
    )
