"""Shared fixtures: every store and door test runs on SQLite and on PostgreSQL.

PostgreSQL comes from TEST_DATABASE_URL (a scratch database is created per test session and
dropped at the end); Redis from TEST_REDIS_URL. Without them those parameters are skipped
with a reason that names the missing variable; CI sets both so nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from starlette.testclient import TestClient

from credentials import DEFAULT_PASSWORD, SERVICE_TOKEN
from server.app import create_app
from server.config import Settings
from server.context import Services, build_services
from server.security import ACCESS, REFRESH
from server.store import users as user_store
from server.store.db import Database, normalise_url
from server.store.models import Base
from server.store.users import UserRecord


TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")


# --- databases ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (much faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    database = Database(f"sqlite:///{path}")
    database.migrate()
    database.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    if not TEST_DATABASE_URL:
        pytest.skip("PostgreSQL not configured: set TEST_DATABASE_URL")
    base = normalise_url(TEST_DATABASE_URL)
    name = f"replyx_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + "/" + name
    database = Database(url)
    database.migrate()
    database.dispose()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


RESTART_SEQUENCES = text(
    "SELECT setval(c.oid, 1, false) FROM pg_class c"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind = 'S' AND n.nspname = current_schema()"
)


def _truncate_postgres(url: str) -> None:
    """Empty every table and restart the ids at 1, as TRUNCATE ... RESTART IDENTITY would.

    Row-by-row DELETE (children first) is several times faster than TRUNCATE on these tiny
    tables: TRUNCATE creates new relation files and syncs them, ~0.3 s per test here.
    """
    engine = create_engine(url)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
        connection.execute(RESTART_SEQUENCES)
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "replyx.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_database")
    _truncate_postgres(url)
    return url


@pytest.fixture(params=["memory", "redis"])
def redis_url(request: pytest.FixtureRequest) -> str | None:
    """None for the in-process storage/bus, a Redis URL for the shared one."""
    if request.param == "memory":
        return None
    if not TEST_REDIS_URL:
        pytest.skip("Redis not configured: set TEST_REDIS_URL")
    return TEST_REDIS_URL


# --- settings, services, app -------------------------------------------------------------------


def make_settings(tmp_path: Path, database_url: str, **env: str) -> Settings:
    values = {
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-key-" + "x" * 32,
        "SITE_SECRET": "test-site-secret-" + "y" * 32,
        "SERVICE_API_TOKEN": SERVICE_TOKEN,
        "ARGON2_TIME_COST": "1",
        "ARGON2_MEMORY_KIB": "1024",
        "ARGON2_PARALLELISM": "1",
        "AUTO_MIGRATE": "false",
        "LOG_FORMAT": "text",
        "PUBLIC_URL": "http://testserver",
    }
    values.update(env)
    return Settings.from_env(values)


@pytest.fixture
def settings_env() -> dict[str, str]:
    """Extra environment for the app under test; a test overrides it to change settings."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, db_url: str, settings_env: dict[str, str]) -> Settings:
    return make_settings(tmp_path, db_url, **settings_env)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings, rate_limit_prefix=f"test:{uuid.uuid4().hex}")
    yield built
    built.db.dispose()


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    app = create_app(services=services)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


# --- accounts ---------------------------------------------------------------------------------


@pytest.fixture
def make_user(services: Services) -> Callable[..., UserRecord]:
    """Create an account straight in the store (confirmed, active unless told otherwise)."""
    counter = iter(range(1, 1_000_000))

    def make(
        email: str | None = None,
        password: str = DEFAULT_PASSWORD,
        role: str = "user",
        status: str = "active",
        confirmed: bool = True,
        **fields: Any,
    ) -> UserRecord:
        address = email or f"user{next(counter)}-{uuid.uuid4().hex[:6]}@example.com"
        with services.db.write() as session:
            return user_store.create_user(
                session,
                email=address,
                hashed_password=services.hasher.hash(password),
                role=role,
                status=status,
                is_email_confirmed=confirmed,
                **fields,
            )

    return make


@pytest.fixture
def auth_headers(services: Services) -> Callable[[UserRecord], dict[str, str]]:
    """Bearer headers with a fresh access token for a user."""

    def headers(user: UserRecord) -> dict[str, str]:
        issued = services.tokens.issue(user.id, user.email, user.token_version, ACCESS)
        return {"Authorization": f"Bearer {issued.token}"}

    return headers


@pytest.fixture
def refresh_token_for(services: Services) -> Callable[[UserRecord], str]:
    def token(user: UserRecord) -> str:
        return services.tokens.issue(user.id, user.email, user.token_version, REFRESH).token

    return token


@pytest.fixture
def user(make_user: Callable[..., UserRecord]) -> UserRecord:
    return make_user()


@pytest.fixture
def admin(make_user: Callable[..., UserRecord]) -> UserRecord:
    return make_user(role="admin")
