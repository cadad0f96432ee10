"""Row locks for the account flows that must not race (refresh rotation, code attempts,
single-use reset tokens, logout revocations).

On PostgreSQL `SELECT ... FOR UPDATE` makes concurrent requests for one account queue behind
each other, so a check-then-write (is this refresh token already revoked? is this the fifth
wrong code?) sees the previous request's committed result. SQLite ignores `FOR UPDATE`; its
write transactions already hold the database write lock (`BEGIN IMMEDIATE`).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.store import users as user_store
from server.store.models import User
from server.store.users import UserRecord


def lock_user(session: Session, user_id: int) -> UserRecord | None:
    """Lock the user's row for the rest of the transaction and return its current values."""
    row = session.execute(
        select(User)
        .where(User.id == user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None:
        return None
    return user_store.get_user(session, user_id)
