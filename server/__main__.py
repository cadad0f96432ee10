"""Command line: `python -m server serve | migrate | create-admin`."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys

from server.config import load_settings
from server.errors import AppError, ConfigError
from server.logs import configure_logging

log = logging.getLogger("server")


def _serve(_args: argparse.Namespace) -> int:
    from server.actors.runtime import opt_out_of_futex_hash

    # Before any thread exists (DESIGN.md §4): many idle actor threads otherwise slow every
    # wake-up in the process on kernels with a per-process futex hash.
    opt_out_of_futex_hash()

    import uvicorn

    from server.app import create_app

    settings = load_settings()
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        # Our frames are at most 64 KiB (ws/protocol.py); without this, uvicorn would buffer
        # frames of up to 16 MiB before we could refuse them.
        ws_max_size=128 * 1024,
        log_config=None,
        proxy_headers=False,
    )
    return 0


def _migrate(_args: argparse.Namespace) -> int:
    from server.store.db import Database

    settings = load_settings()
    database = Database(settings.database_url)
    database.migrate()
    database.dispose()
    print("database is at the latest schema")
    return 0


def _create_admin(args: argparse.Namespace) -> int:
    from server.context import build_services
    from server.security import check_password_strength
    from server.store import users as user_store

    password = args.password or os.environ.get("ADMIN_PASSWORD") or getpass.getpass("Password: ")
    check_password_strength(password)
    services = build_services(load_settings())
    if services.settings.auto_migrate:
        services.db.migrate()
    hashed = services.hasher.hash(password)
    email = args.email.strip().lower()
    with services.db.write() as session:
        existing = user_store.get_user_by_email(session, email)
        if existing is None:
            user = user_store.create_user(
                session,
                email=email,
                hashed_password=hashed,
                role="admin",
                status="active",
                first_name=args.first_name,
                is_email_confirmed=True,
            )
            verb = "created"
        else:
            user = user_store.update_user(
                session,
                existing.id,
                role="admin",
                status="active",
                is_email_confirmed=True,
                hashed_password=hashed,
            )
            user_store.bump_token_version(session, existing.id)
            verb = "promoted"
        assert user is not None
        user_store.add_audit(session, "create_admin", user_id=user.id, via="cli")
    services.db.dispose()
    print(f"admin {verb}: id={user.id} email={user.email}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description="ReplyX server")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP/WebSocket server").set_defaults(run=_serve)
    commands.add_parser("migrate", help="upgrade the database schema").set_defaults(run=_migrate)
    admin = commands.add_parser("create-admin", help="create or promote an admin account")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", help="else $ADMIN_PASSWORD, else asked for")
    admin.add_argument("--first-name", default=None)
    admin.set_defaults(run=_create_admin)
    args = parser.parse_args(argv)
    settings_level = os.environ.get("LOG_LEVEL", "INFO").upper()
    configure_logging(settings_level, os.environ.get("LOG_FORMAT", "json").lower())
    try:
        return args.run(args)
    except (ConfigError, AppError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
