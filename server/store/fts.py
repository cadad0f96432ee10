"""The full-text index over knowledge chunks: object names and query building.

Migration 0002 builds the index outside the ORM models (SQLite: an FTS5 external-content table
kept in step by triggers; PostgreSQL: a generated `tsvector` column with a GIN index), so
Alembic's model comparison must not see those objects: `include_name`/`include_object` below
are wired into `migrations/env.py` and are what any schema-diff test passes too.

Query building turns a visitor's question into prefix terms. Only unicode letters and digits
ever reach the database, each quoted, so no user-controlled FTS syntax can be injected.
"""

from __future__ import annotations

import re
from typing import Any

FTS_TABLE = "knowledge_fts"  # SQLite FTS5 virtual table (plus its shadow tables)
FTS_VOCAB = "knowledge_fts_vocab"  # SQLite fts5vocab table: documents per term
FTS_SOURCE = "knowledge_fts_source"  # SQLite view the FTS5 table indexes
TSV_COLUMN = "chunk_tsv"  # PostgreSQL generated column on knowledge_embeddings
TSV_INDEX = "ix_knowledge_embeddings_chunk_tsv"

MAX_QUERY_TERMS = 16
MAX_STEM_CHARS = 6
MIN_STEM_CHARS = 3

# --- schema comparison hooks ---------------------------------------------------------------


def scope_token(owner_id: int, assistant_id: int | None, qa: bool) -> str:
    """The token migration 0002 indexes in the SQLite `scope` column of every chunk."""
    return f"o{owner_id}a{assistant_id if assistant_id is not None else 'g'}{'q' if qa else 'd'}"


def is_fts_object(name: str | None) -> bool:
    return bool(name) and (
        name == FTS_TABLE or name.startswith(FTS_TABLE + "_") or name in {TSV_COLUMN, TSV_INDEX}
    )


def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    """Alembic hook (before reflection): skip the FTS virtual/shadow tables."""
    return not (type_ == "table" and is_fts_object(name))


def include_object(
    _obj: Any, name: str | None, type_: str, _reflected: bool, _compare: Any
) -> bool:
    """Alembic hook (after reflection): skip the FTS tables, column and index."""
    return not (type_ in {"table", "column", "index"} and is_fts_object(name))


# --- query building ------------------------------------------------------------------------

# The FTS5 unicode61 tokenizer and our own split agree: a token is a run of letters/digits;
# "_" and punctuation separate tokens.
_WORD = re.compile(r"[^\W_]+", re.UNICODE)

_STOP_EN = frozenset(
    """a about above after again all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has
    have having he her here hers him his how i if in into is it its itself just me more most my
    no nor not now of off on once only or other our ours out over own please same she should so
    some such than that the their theirs them then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you
    your yours hello hi thanks thank tell know want need get""".split()
)
_STOP_RU = frozenset(
    """а без более бы был была были было быть в вам вас весь во вот все всего всех вы где да даже
    для до его ее её если есть еще ещё же за здесь и из или им их к как ко когда кто ли либо мне
    может можно мой мы на над надо наш не него нее неё нет ни них но ну о об однако он она они
    оно от очень по под при про с со так также такой там те тем то того тоже той только том ты у
    уже хотя чего чей чем что чтобы чье чья эта эти это этот я здравствуйте привет спасибо
    подскажите скажите пожалуйста хочу хотел хотела меня мои моя нам нас""".split()
)
STOP_WORDS = _STOP_EN | _STOP_RU

# Endings stripped before truncation so that inflected forms share a prefix
# ("цена"/"цены"/"цену" → "цен", "opening"/"open" → "open", "policies"/"policy" → "polic").
_CYRILLIC_TAIL = set("аеёиоуыэюяйь")
_LATIN_SUFFIXES = ("ing", "ies", "ied", "es", "ed", "ly", "s", "y")


def tokenize(text: str) -> list[str]:
    """Lower-cased content words of a text, without stop words and one-letter tokens."""
    return [
        word for word in _WORD.findall(text.lower()) if len(word) > 1 and word not in STOP_WORDS
    ]


def stem(word: str) -> str:
    """A truncated stem for prefix matching: cheap, language-agnostic enough for RU and EN."""
    if word.isdigit():
        return word
    if _is_cyrillic(word):
        stripped = word
        for _ in range(2):
            if len(stripped) > MIN_STEM_CHARS and stripped[-1] in _CYRILLIC_TAIL:
                stripped = stripped[:-1]
        return stripped[:MAX_STEM_CHARS]
    return _latin_stem(word)[:MAX_STEM_CHARS]


def _latin_stem(word: str) -> str:
    for suffix in _LATIN_SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= MIN_STEM_CHARS:
            stem = word[: -len(suffix)]
            # "shipping" → "shipp" → "ship", so that "ship" and "shipped" match too.
            if len(stem) > MIN_STEM_CHARS and stem[-1] == stem[-2] and stem[-1] not in "aeiou":
                stem = stem[:-1]
            return stem
    return word


def _is_cyrillic(word: str) -> bool:
    return any("\u0400" <= char <= "\u04ff" for char in word)


def query_terms(question: str) -> list[str]:
    """Distinct stems of the question's content words, in order of first appearance."""
    terms: list[str] = []
    for word in tokenize(question):
        term = stem(word)
        if len(term) > 1 and term not in terms:
            terms.append(term)
        if len(terms) >= MAX_QUERY_TERMS:
            break
    return terms


def safe_term(term: str) -> str:
    # Terms come from query_terms() and hold letters/digits only; filter again so that no
    # caller can pass FTS syntax through this module.
    return "".join(_WORD.findall(term.lower()))


def fts5_match(terms: list[str]) -> str:
    """`"term"* OR "other"*` for SQLite FTS5 MATCH; empty when nothing is searchable."""
    safe = [safe_term(term) for term in terms]
    return " OR ".join(f'"{term}"*' for term in safe if term)


def pg_tsquery(terms: list[str]) -> str:
    """`term:* | other:*` for PostgreSQL to_tsquery('simple', …); empty when nothing to search."""
    safe = [safe_term(term) for term in terms]
    return " | ".join(f"{term}:*" for term in safe if term)
