"""full-text index over knowledge_embeddings.chunk_text

SQLite: an FTS5 external-content table `knowledge_fts` over the view `knowledge_fts_source`,
kept in step by insert/update/delete triggers on knowledge_embeddings (they also fire for ON
DELETE CASCADE deletes). Besides the text it indexes one *scope token* per row (owner,
assistant or "g" for tenant-global, documents or Q&A), so that a search intersects with its
scope inside the index instead of ranking other tenants' rows. Queries are prefix terms of
3-6 letters, so FTS5 keeps prefix indexes for those lengths. `knowledge_fts_vocab`
(fts5vocab) gives documents per term for the search's selectivity estimates.
PostgreSQL: a generated STORED `tsvector` column (config 'simple': the content is Russian and
English, so no language-specific stemming; queries use prefix terms instead) with a GIN index.

None of these objects is declared in the ORM models; `server/store/fts.py` tells Alembic's
comparison to ignore them. Caution for later migrations: a SQLite batch (copy-and-move)
rebuild of knowledge_embeddings drops these triggers -- re-create them and run the 'rebuild'
command.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _scope(row: str) -> str:
    """A row's scope token, o{user}a{assistant|g}{d|q} (server/store/fts.py scope_token)."""
    return (
        f"'o' || {row}user_id || 'a' || coalesce({row}assistant_id, 'g')"
        f" || CASE WHEN {row}qa_id IS NULL THEN 'd' ELSE 'q' END"
    )


_SQLITE_UP = [
    f"""CREATE VIEW knowledge_fts_source AS
        SELECT id, chunk_text, {_scope("")} AS scope FROM knowledge_embeddings""",
    """CREATE VIRTUAL TABLE knowledge_fts USING fts5(
        chunk_text,
        scope,
        content='knowledge_fts_source',
        content_rowid='id',
        tokenize='unicode61 remove_diacritics 2',
        prefix='3 4 5 6'
    )""",
    f"""CREATE TRIGGER knowledge_fts_after_insert AFTER INSERT ON knowledge_embeddings BEGIN
        INSERT INTO knowledge_fts(rowid, chunk_text, scope)
        VALUES (new.id, new.chunk_text, {_scope("new.")});
    END""",
    f"""CREATE TRIGGER knowledge_fts_after_delete AFTER DELETE ON knowledge_embeddings BEGIN
        INSERT INTO knowledge_fts(knowledge_fts, rowid, chunk_text, scope)
        VALUES ('delete', old.id, old.chunk_text, {_scope("old.")});
    END""",
    f"""CREATE TRIGGER knowledge_fts_after_update
    AFTER UPDATE OF chunk_text, user_id, assistant_id, qa_id ON knowledge_embeddings BEGIN
        INSERT INTO knowledge_fts(knowledge_fts, rowid, chunk_text, scope)
        VALUES ('delete', old.id, old.chunk_text, {_scope("old.")});
        INSERT INTO knowledge_fts(rowid, chunk_text, scope)
        VALUES (new.id, new.chunk_text, {_scope("new.")});
    END""",
    "INSERT INTO knowledge_fts(knowledge_fts) VALUES ('rebuild')",
    # Documents per term and column, read by the search to tell selective terms from common.
    "CREATE VIRTUAL TABLE knowledge_fts_vocab USING fts5vocab(knowledge_fts, col)",
]

_SQLITE_DOWN = [
    "DROP TABLE IF EXISTS knowledge_fts_vocab",
    "DROP TRIGGER IF EXISTS knowledge_fts_after_update",
    "DROP TRIGGER IF EXISTS knowledge_fts_after_delete",
    "DROP TRIGGER IF EXISTS knowledge_fts_after_insert",
    "DROP TABLE IF EXISTS knowledge_fts",
    "DROP VIEW IF EXISTS knowledge_fts_source",
]

_POSTGRES_UP = [
    """ALTER TABLE knowledge_embeddings ADD COLUMN chunk_tsv tsvector
        GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, coalesce(chunk_text, ''))) STORED""",
    # fastupdate off: searches must not scan a long pending list after a bulk import.
    """CREATE INDEX ix_knowledge_embeddings_chunk_tsv ON knowledge_embeddings
        USING gin (chunk_tsv) WITH (fastupdate = off)""",
]

_POSTGRES_DOWN = [
    "DROP INDEX IF EXISTS ix_knowledge_embeddings_chunk_tsv",
    "ALTER TABLE knowledge_embeddings DROP COLUMN IF EXISTS chunk_tsv",
]


def _run(statements: list[str]) -> None:
    for statement in statements:
        op.execute(statement)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _run(_SQLITE_UP)
    else:
        _run(_POSTGRES_UP)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _run(_SQLITE_DOWN)
    else:
        _run(_POSTGRES_DOWN)
