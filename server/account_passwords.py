"""Password capabilities: change (signed in), forgot, validate and use a reset link.

Same habits as `server/accounts.py`: argon2 outside write transactions, a re-check under the
row lock inside. Every successful password change or reset bumps the account's token_version,
which ends every session issued so far (DESIGN.md §8).
"""

from __future__ import annotations

import datetime as dt

from server import account_mail
from server.accounts import (
    MAX_EMAIL_LENGTH,
    TokenPair,
    audit_failure,
    clean_email,
    issue_pair,
    send_mail,
)
from server.context import Services
from server.errors import AppError, ErrorCode
from server.security import check_password_strength, new_url_token, sha256_hex
from server.store import users as user_store
from server.store.credentials import lock_user
from server.store.types import utcnow
from server.store.users import UserRecord


def do_change_password(
    services: Services, *, user: UserRecord, current_password: str, new_password: str, ip: str
) -> TokenPair:
    """New hash, and every token issued so far dies; the caller gets a fresh pair."""
    if not services.hasher.verify(user.hashed_password, current_password):
        audit_failure(services, "change_password", user.id, ip,
                       reason=ErrorCode.INVALID_CREDENTIALS.value)
        raise AppError(
            ErrorCode.INVALID_CREDENTIALS, "Current password is incorrect", status=400
        )
    if new_password == current_password:
        raise AppError(
            ErrorCode.SAME_PASSWORD, "New password must differ from the current one", status=400
        )
    check_password_strength(new_password)
    new_hash = services.hasher.hash(new_password)
    with services.db.write() as session:
        current = lock_user(session, user.id)
        if current is None or current.hashed_password != user.hashed_password:
            raise AppError(ErrorCode.CONFLICT, "The password was changed meanwhile; sign in again")
        user_store.update_user(session, user.id, hashed_password=new_hash)
        user_store.bump_token_version(session, user.id)
        user_store.add_audit(session, "change_password", user_id=user.id, ip=ip)
        changed = lock_user(session, user.id)
    assert changed is not None
    return issue_pair(services, changed)


def do_forgot_password(services: Services, *, email: str, ip: str) -> None:
    """Mail a single-use reset link if the account exists; the caller learns nothing either way."""
    email = clean_email(email)
    if not email or len(email) > MAX_EMAIL_LENGTH:
        return
    with services.db.write() as session:
        user = user_store.get_user_by_email(session, email)
        if user is None:
            return
        token = new_url_token(32)
        ttl = services.settings.password_reset_ttl_secs
        user_store.update_user(
            session,
            user.id,
            password_reset_hash=sha256_hex(token),
            password_reset_expires=utcnow() + dt.timedelta(seconds=ttl),
        )
        link = f"{services.settings.frontend_url}/reset-password?token={token}"
        send_mail(services, session, user.email, account_mail.password_reset_mail(link, ttl))
        user_store.add_audit(session, "forgot_password", user_id=user.id, ip=ip)


def _reset_token_valid(user: UserRecord | None, reset_hash: str) -> bool:
    return (
        user is not None
        and user.password_reset_hash == reset_hash
        and user.password_reset_expires is not None
        and user.password_reset_expires > utcnow()
    )


def _invalid_reset_token() -> AppError:
    return AppError(ErrorCode.INVALID_RESET_TOKEN, "Invalid or expired reset token", status=400)


def do_validate_reset_token(services: Services, *, token: str) -> None:
    reset_hash = sha256_hex(token)
    with services.db.read() as session:
        user = user_store.get_user_by_reset_hash(session, reset_hash) if token else None
    if not _reset_token_valid(user, reset_hash):
        raise _invalid_reset_token()


def do_reset_password(services: Services, *, token: str, new_password: str, ip: str) -> None:
    """Set the password from a reset link: the link works once and every session ends."""
    do_validate_reset_token(services, token=token)
    check_password_strength(new_password)
    new_hash = services.hasher.hash(new_password)
    reset_hash = sha256_hex(token)
    with services.db.write() as session:
        found = user_store.get_user_by_reset_hash(session, reset_hash)
        user = lock_user(session, found.id) if found is not None else None
        if user is None or not _reset_token_valid(user, reset_hash):
            raise _invalid_reset_token()  # used by a concurrent request meanwhile
        user_store.update_user(
            session,
            user.id,
            hashed_password=new_hash,
            password_reset_hash=None,
            password_reset_expires=None,
        )
        user_store.bump_token_version(session, user.id)
        user_store.add_audit(session, "reset_password", user_id=user.id, ip=ip)
