"""Accounts in the store: users, token revocations, balances rows, audit entries.

Every function takes an open session and returns plain frozen dataclasses, never ORM rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from server.store.models import (
    Assistant,
    AuditLog,
    Dialog,
    DialogMessage,
    Document,
    OpenAIToken,
    TelegramToken,
    TokenRevocation,
    User,
    UserBalance,
)
from server.store.types import utcnow


@dataclasses.dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    email: str
    hashed_password: str
    role: str
    status: str
    first_name: str | None
    created_at: dt.datetime
    last_activity: dt.datetime | None
    is_email_confirmed: bool
    email_code_hash: str | None
    email_code_expires: dt.datetime | None
    email_code_attempts: int
    password_reset_hash: str | None
    password_reset_expires: dt.datetime | None
    token_version: int
    onboarding_completed: bool
    onboarding_step: int
    onboarding_started_at: dt.datetime | None
    onboarding_completed_at: dt.datetime | None
    onboarding_skipped: bool
    first_bot_created: bool
    first_message_sent: bool
    tutorial_tips_shown: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


_FIELDS = [f.name for f in dataclasses.fields(UserRecord)]


def _record(row: User) -> UserRecord:
    values: dict[str, Any] = {name: getattr(row, name) for name in _FIELDS}
    values["tutorial_tips_shown"] = tuple(row.tutorial_tips_shown or ())
    return UserRecord(**values)


def get_user(session: Session, user_id: int) -> UserRecord | None:
    row = session.get(User, user_id)
    return _record(row) if row is not None else None


def get_user_by_email(session: Session, email: str) -> UserRecord | None:
    row = session.execute(select(User).where(User.email == email.lower())).scalar_one_or_none()
    return _record(row) if row is not None else None


def get_user_by_reset_hash(session: Session, reset_hash: str) -> UserRecord | None:
    row = session.execute(
        select(User).where(User.password_reset_hash == reset_hash)
    ).scalar_one_or_none()
    return _record(row) if row is not None else None


def email_exists(session: Session, email: str, *, except_user_id: int | None = None) -> bool:
    query = select(User.id).where(User.email == email.lower())
    if except_user_id is not None:
        query = query.where(User.id != except_user_id)
    return session.execute(query).first() is not None


def create_user(session: Session, **fields: Any) -> UserRecord:
    """Insert a user and its zero balance row; the caller has checked the e-mail is free."""
    fields["email"] = fields["email"].lower()
    row = User(**fields)
    session.add(row)
    session.flush()
    session.add(UserBalance(user_id=row.id))
    session.flush()
    return _record(row)


def update_user(session: Session, user_id: int, **fields: Any) -> UserRecord | None:
    row = session.get(User, user_id)
    if row is None:
        return None
    for name, value in fields.items():
        if not hasattr(User, name):
            raise AttributeError(name)
        setattr(row, name, value)
    session.flush()
    return _record(row)


def bump_token_version(session: Session, user_id: int) -> None:
    """Invalidate every token issued to the user so far."""
    session.execute(
        update(User).where(User.id == user_id).values(token_version=User.token_version + 1)
    )


def record_email_code_attempt(session: Session, user_id: int) -> int:
    """Atomically count one wrong code; returns the attempts so far."""
    session.execute(
        update(User)
        .where(User.id == user_id)
        .values(email_code_attempts=User.email_code_attempts + 1)
    )
    return session.execute(select(User.email_code_attempts).where(User.id == user_id)).scalar_one()


def delete_user(session: Session, user_id: int) -> bool:
    """Delete the account; its tenant rows go by ON DELETE CASCADE, pointers become NULL."""
    result = session.execute(delete(User).where(User.id == user_id))
    return result.rowcount == 1


def list_document_storage_keys(session: Session, user_id: int) -> list[str]:
    rows = session.execute(
        select(Document.storage_key).where(
            Document.user_id == user_id, Document.storage_key.is_not(None)
        )
    )
    return [key for (key,) in rows]


# --- revocations ----------------------------------------------------------------------------


def revoke_token(
    session: Session, jti: str, user_id: int | None, token_type: str, expires_at: dt.datetime
) -> None:
    if session.get(TokenRevocation, jti) is None:
        session.add(
            TokenRevocation(jti=jti, user_id=user_id, token_type=token_type, expires_at=expires_at)
        )
        session.flush()


def is_token_revoked(session: Session, jti: str) -> bool:
    return session.get(TokenRevocation, jti) is not None


def purge_expired_revocations(session: Session) -> int:
    result = session.execute(delete(TokenRevocation).where(TokenRevocation.expires_at < utcnow()))
    return result.rowcount or 0


# --- balances, legacy tokens, audit ---------------------------------------------------------


def get_or_create_balance(session: Session, user_id: int) -> Decimal:
    row = session.execute(
        select(UserBalance).where(UserBalance.user_id == user_id)
    ).scalar_one_or_none()
    if row is None:
        row = UserBalance(user_id=user_id)
        session.add(row)
        session.flush()
    return Decimal(row.balance)


def set_legacy_tokens(
    session: Session, user_id: int, ai_token: str | None, telegram_token: str | None
) -> None:
    for model, value in ((OpenAIToken, ai_token), (TelegramToken, telegram_token)):
        if not value:
            continue
        row = session.execute(select(model).where(model.user_id == user_id)).scalar_one_or_none()
        if row is None:
            session.add(model(user_id=user_id, token=value))
        else:
            row.token = value
    session.flush()


def add_audit(
    session: Session,
    action: str,
    *,
    user_id: int | None = None,
    success: bool = True,
    ip: str | None = None,
    **details: Any,
) -> None:
    session.add(AuditLog(user_id=user_id, action=action, success=success, ip=ip, details=details))


# --- admin listing ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class UserStats:
    total_dialogs: int
    total_messages: int
    total_assistants: int
    total_documents: int
    last_activity: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class UserPage:
    users: tuple[tuple[UserRecord, UserStats], ...]
    total: int


def list_users_detailed(
    session: Session, *, page: int, limit: int, search: str | None, status: str | None
) -> UserPage:
    query = select(User)
    if search:
        pattern = f"%{search.lower()}%"
        query = query.where(
            or_(func.lower(User.email).like(pattern), func.lower(User.first_name).like(pattern))
        )
    if status:
        query = query.where(User.status == status)
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(
        query.order_by(User.id.desc()).offset((page - 1) * limit).limit(limit)
    ).scalars().all()
    ids = [row.id for row in rows]
    stats = _stats_for(session, ids)
    return UserPage(
        users=tuple((_record(row), stats[row.id]) for row in rows),
        total=total,
    )


def _count_by_user(session: Session, column: Any, ids: list[int]) -> dict[int, int]:
    rows = session.execute(select(column, func.count()).where(column.in_(ids)).group_by(column))
    return {user_id: count for user_id, count in rows}


def _stats_for(session: Session, ids: list[int]) -> dict[int, UserStats]:
    if not ids:
        return {}
    dialogs = _count_by_user(session, Dialog.user_id, ids)
    assistants = _count_by_user(session, Assistant.user_id, ids)
    documents = _count_by_user(session, Document.user_id, ids)
    messages = dict(
        session.execute(
            select(Dialog.user_id, func.count(DialogMessage.id))
            .join(DialogMessage, DialogMessage.dialog_id == Dialog.id)
            .where(Dialog.user_id.in_(ids))
            .group_by(Dialog.user_id)
        ).all()
    )
    newest = dict(
        session.execute(
            select(Dialog.user_id, func.max(Dialog.started_at))
            .where(Dialog.user_id.in_(ids))
            .group_by(Dialog.user_id)
        ).all()
    )
    return {
        user_id: UserStats(
            total_dialogs=dialogs.get(user_id, 0),
            total_messages=messages.get(user_id, 0),
            total_assistants=assistants.get(user_id, 0),
            total_documents=documents.get(user_id, 0),
            last_activity=_aware(newest.get(user_id)),
        )
        for user_id in ids
    }


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # Aggregates bypass the column type, so SQLite hands back naive (UTC) values.
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# --- own-account helpers (profile, onboarding) -------------------------------------------------


def get_balance(session: Session, user_id: int) -> Decimal | None:
    """The balance, or None when the account has no balance row yet."""
    value = session.execute(
        select(UserBalance.balance).where(UserBalance.user_id == user_id)
    ).scalar_one_or_none()
    return Decimal(value) if value is not None else None


def add_tutorial_tip(
    session: Session, user_id: int, tip_id: str, *, max_tips: int
) -> tuple[str, ...] | None:
    """Append `tip_id` once; the row lock keeps concurrent saves from losing each other.

    Returns the tips afterwards, or None for an unknown user. Raises `OverflowError` when the
    list is full and `tip_id` is new (the caller turns that into a refusal).
    """
    row = session.execute(
        select(User).where(User.id == user_id).with_for_update()
    ).scalar_one_or_none()
    if row is None:
        return None
    tips = list(row.tutorial_tips_shown or ())
    if tip_id not in tips:
        if len(tips) >= max_tips:
            raise OverflowError(max_tips)
        # A new list object, so the JSON column is seen as changed.
        row.tutorial_tips_shown = [*tips, tip_id]
        session.flush()
    return tuple(row.tutorial_tips_shown)
