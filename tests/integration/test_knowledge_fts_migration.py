"""Migration 0002 (the full-text index) on SQLite and PostgreSQL: the models still match the
migrated schema, and a downgrade/upgrade cycle rebuilds the index over existing rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from server.ai.ingest import index_text
from server.ai.retrieval import retrieve
from server.context import Services
from server.store.db import alembic_config
from server.store.fts import include_name, include_object
from server.store.models import Assistant, Base, Document


def test_models_match_the_migrated_schema(services: Services) -> None:
    with services.db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_name": include_name,
                "include_object": include_object,
                "compare_type": True,
            },
        )
        assert compare_metadata(context, Base.metadata) == []


def test_downgrade_and_upgrade_rebuild_the_index(
    services: Services, make_user: Callable[..., Any]
) -> None:
    owner = make_user()
    with services.db.write() as session:
        assistant = Assistant(user_id=owner.id, name="bot")
        document = Document(user_id=owner.id, filename="kayaks.txt")
        session.add_all([assistant, document])
        session.flush()
        assistant_id = assistant.id
        index_text(
            session,
            owner_id=owner.id,
            text="Kayaks are rented by the hour.",
            assistant_id=assistant_id,
            doc_id=document.id,
        )
    config = alembic_config(services.db.engine)
    try:
        command.downgrade(config, "0001")
    finally:
        command.upgrade(config, "head")
    with services.db.read() as session:
        found = retrieve(
            session,
            owner_id=owner.id,
            assistant_id=assistant_id,
            question="kayak rental",
            track_usage=False,
        )
    assert [snippet.text for snippet in found] == ["Kayaks are rented by the hour."]
