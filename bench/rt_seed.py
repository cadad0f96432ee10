"""Backends and tenants for the full-path scenarios of bench/realtime.py.

`backend()` yields a fresh database (a SQLite file, or a scratch PostgreSQL database created
here and dropped on exit) migrated with `python -m server migrate`. `seed()` writes owners, one
widget-enabled assistant each and their guests' dialogs straight through the store modules, and
mints what the clients present: the assistant's site token (as its embed code does) and the
owner's access JWT (signed with the SECRET_KEY the server is started with).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, text

from bench.rt_common import PYTHON, child_env, run_checked
from server.security import ACCESS, SiteTokens, TokenService
from server.store import assistants as assistant_store
from server.store import billing as billing_store
from server.store import dialogs as dialog_store
from server.store import users as user_store
from server.store.db import Database, normalise_url

SECRET_KEY = "bench-secret-" + "k" * 40
SITE_SECRET = "bench-site-" + "s" * 40
DOMAIN = "bench.example"
ORIGIN = f"https://{DOMAIN}"
TOKEN_MINUTES = 24 * 60


@dataclass(frozen=True, slots=True)
class Backend:
    name: str  # "sqlite" | "pg"
    database_url: str
    redis_url: str | None

    @property
    def label(self) -> str:
        return "SQLite + in-process bus" if self.name == "sqlite" else "PostgreSQL + Redis"


@contextlib.contextmanager
def backend(name: str, workdir: Path, pg_admin_url: str, redis_url: str) -> Iterator[Backend]:
    if name == "sqlite":
        path = workdir / f"replyx-{uuid.uuid4().hex[:8]}.db"
        chosen = Backend(name, f"sqlite:///{path}", None)
        _migrate(chosen)
        yield chosen
        return
    admin_url = normalise_url(pg_admin_url)
    scratch = f"replyx_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{scratch}"'))
    try:
        chosen = Backend(name, admin_url.rsplit("/", 1)[0] + "/" + scratch, redis_url)
        _migrate(chosen)
        yield chosen
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)'))
        admin.dispose()


def _migrate(chosen: Backend) -> None:
    env = child_env(DATABASE_URL=chosen.database_url, SECRET_KEY=SECRET_KEY,
                    SITE_SECRET=SITE_SECRET, LOG_LEVEL="WARNING")
    run_checked([PYTHON, "-m", "server", "migrate"], env)


def server_env(chosen: Backend, port: int, data_dir: Path, sockets: int,
               extra: dict[str, str], openai: tuple[str, str] | None = None) -> dict[str, str]:
    """The server's environment: our secrets, no rate limits, room for `sockets` sockets, and
    operators who stay online for the whole run without heartbeats."""
    env = child_env(
        DATABASE_URL=chosen.database_url, SECRET_KEY=SECRET_KEY, SITE_SECRET=SITE_SECRET,
        HOST="127.0.0.1", PORT=str(port), DATA_DIR=str(data_dir), AUTO_MIGRATE="false",
        RATE_LIMIT_ENABLED="false", LOG_LEVEL="WARNING", LOG_FORMAT="text",
        WS_MAX_CONNECTIONS=str(sockets + 100), OPERATOR_OFFLINE_THRESHOLD_SECONDS="86400",
    )
    if chosen.redis_url:
        env["REDIS_URL"] = chosen.redis_url
    if openai is not None:
        env["OPENAI_API_KEY"], env["OPENAI_BASE_URL"] = openai
    env.update(extra)
    return env


@dataclass(frozen=True, slots=True)
class SeededDialog:
    id: int
    owner_id: int
    guest_id: str
    site_token: str
    operator_token: str

    def visitor_url(self, ws_base: str) -> str:
        return (f"{ws_base}/ws/site/dialogs/{self.id}?site_token={quote(self.site_token)}"
                f"&guest_id={quote(self.guest_id)}")

    def operator_url(self, ws_base: str) -> str:
        return f"{ws_base}/ws/dialogs/{self.id}?token={quote(self.operator_token)}"

    def feed_url(self, ws_base: str) -> str:
        return f"{ws_base}/ws/operator?token={quote(self.operator_token)}"


def seed(database_url: str, owners: int, dialogs_per_owner: int, *,
         funds: Decimal | None = None) -> list[SeededDialog]:
    """`owners` tenants with one assistant and `dialogs_per_owner` guest dialogs each."""
    tokens = TokenService(SECRET_KEY, TOKEN_MINUTES, 1)
    site_tokens = SiteTokens(SITE_SECRET)
    database = Database(database_url)
    seeded: list[SeededDialog] = []
    try:
        with database.write() as session:
            if funds is not None:
                billing_store.seed_missing_prices(session)
            for n in range(owners):
                owner = user_store.create_user(
                    session, email=f"owner{n}@{DOMAIN}", hashed_password="no-login",
                    first_name=f"Operator {n}", is_email_confirmed=True)
                if funds is not None:
                    billing_store.ensure_balance_row(session, owner.id)
                    billing_store.apply_delta(session, owner.id, funds)
                assistant = assistant_store.create_assistant(
                    session, owner.id, name=f"Bench assistant {n}", is_active=True,
                    website_integration_enabled=True, allowed_domains=DOMAIN)
                site_token = site_tokens.mint(owner.id, assistant.id, assistant.allowed_domains,
                                              assistant.widget_version)
                jwt = tokens.issue(owner.id, owner.email, owner.token_version, ACCESS).token
                for g in range(dialogs_per_owner):
                    guest = f"guest-{n}-{g}"
                    dialog_id = dialog_store.get_or_create_guest_dialog(
                        session, owner.id, guest, "web", assistant.id)
                    seeded.append(SeededDialog(dialog_id, owner.id, guest, site_token, jwt))
    finally:
        database.dispose()
    return seeded
