"""Alembic environment: runs against the engine the server hands over, or DATABASE_URL."""

from __future__ import annotations

from alembic import context

from server.store.fts import include_name, include_object
from server.store.models import Base

config = context.config
target_metadata = Base.metadata


def _engine():  # type: ignore[no-untyped-def]
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    from server.config import Settings
    from server.store.db import make_engine

    return make_engine(Settings.from_env().database_url)


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            # The full-text index (migration 0002) lives outside the models.
            include_name=include_name,
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `python -m server migrate`")
run_migrations_online()
