"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine

from server.store.db import Database, alembic_config, make_engine
from server.store.fts import include_name, include_object
from server.store.models import Base


def schema_differences(engine: Engine) -> list[Any]:
    """Alembic's autogenerate diff between the live database and the models."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "include_name": include_name,
                "include_object": include_object,
            },
        )
        return compare_metadata(context, Base.metadata)


@pytest.fixture
def empty_db_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all, of the same kind as `db_url`."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"replyx_empty_{uuid.uuid4().hex[:10]}"
    admin = create_engine(db_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield db_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_migrated_schema_equals_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


def test_migration_history_has_exactly_one_head() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    assert len(script.get_bases()) == 1


def test_every_revision_follows_exactly_one_other() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    for revision in script.walk_revisions():
        assert not isinstance(revision.down_revision, (tuple, list)), revision.revision


def test_upgrade_from_empty_then_downgrade_to_base_and_up_again(empty_db_url: str) -> None:
    database = Database(empty_db_url)
    try:
        database.migrate()
        assert schema_differences(database.engine) == []
        command.downgrade(alembic_config(database.engine), "base")
        leftover = set(inspect(database.engine).get_table_names()) - {"alembic_version"}
        assert leftover == set()
        database.migrate()
        assert schema_differences(database.engine) == []
    finally:
        database.dispose()
