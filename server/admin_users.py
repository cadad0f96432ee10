"""Staff actions on accounts: create, list with stats, update, delete (spec §4.2).

Each `do_*` runs in one transaction and writes an audit row naming the acting admin. An admin
may not demote, block, deactivate or delete themselves (spec §10 S23: the last admin must not
lock everybody out). Changes that must end the target's sessions (password, e-mail, blocking)
bump its `token_version`, which every token carries.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from server.context import Services
from server.errors import AppError, ErrorCode, bad_request, not_found
from server.profiles import check_first_name, normalise_email
from server.security import check_password_strength
from server.store import users as user_store
from server.store.users import UserPage, UserRecord

log = logging.getLogger(__name__)

ROLES = ("user", "admin")
STATUSES = ("active", "inactive", "blocked")
# Spec §4.2 lets an account be created active or inactive; blocking is an edit.
CREATE_STATUSES = ("active", "inactive")
UPLOADS_DIR_NAME = "uploads"


@dataclasses.dataclass(frozen=True, slots=True)
class DeletedUser:
    id: int
    email: str


def _check_email(raw: str) -> str:
    address = normalise_email(raw)
    if address is None:
        raise bad_request("Invalid e-mail address", ErrorCode.INVALID_EMAIL)
    return address


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise bad_request(f"Invalid {field} {value!r}; expected one of: {', '.join(allowed)}")
    return value


def _optional_first_name(raw: str | None) -> str | None:
    # Admin forms send "" for "no name"; that clears it rather than being refused.
    if raw is None or not raw.strip():
        return None
    return check_first_name(raw)


def _email_taken() -> AppError:
    return bad_request("A user with this e-mail already exists", ErrorCode.EMAIL_TAKEN)


def do_create_user(
    services: Services,
    actor: UserRecord,
    *,
    email: str,
    password: str,
    first_name: str | None = None,
    role: str = "user",
    status: str = "active",
    ai_token: str | None = None,
    telegram_token: str | None = None,
    ip: str | None = None,
) -> UserRecord:
    """A ready-to-use account: e-mail confirmed, zero balance, optional legacy tokens."""
    address = _check_email(email)
    _check_choice("role", role, ROLES)
    _check_choice("status", status, CREATE_STATUSES)
    check_password_strength(password)
    name = _optional_first_name(first_name)
    hashed = services.hasher.hash(password)  # before the transaction: it is slow on purpose
    try:
        with services.db.write() as session:
            if user_store.email_exists(session, address):
                raise _email_taken()
            created = user_store.create_user(
                session,
                email=address,
                hashed_password=hashed,
                first_name=name,
                role=role,
                status=status,
                is_email_confirmed=True,
            )
            user_store.set_legacy_tokens(session, created.id, ai_token, telegram_token)
            user_store.add_audit(
                session, "admin_create_user", user_id=actor.id, ip=ip,
                target_user_id=created.id, email=address, role=role,
            )
    except IntegrityError as exc:
        # Another request registered the same address between our check and the insert.
        raise _email_taken() from exc
    return created


def list_users(
    services: Services, *, page: int, limit: int, search: str | None, status: str | None
) -> UserPage:
    with services.db.read() as session:
        return user_store.list_users_detailed(
            session, page=page, limit=limit, search=search or None, status=status or None
        )


def do_update_user(
    services: Services,
    actor: UserRecord,
    user_id: int,
    *,
    email: str | None = None,
    password: str | None = None,
    role: str | None = None,
    status: str | None = None,
    first_name: str | None = None,
    ip: str | None = None,
) -> UserRecord:
    """Change the supplied fields (None = unchanged; an empty password too, as the admin
    panel sends one when the password is left alone)."""
    if role is not None:
        _check_choice("role", role, ROLES)
    if status is not None:
        _check_choice("status", status, STATUSES)
    if user_id == actor.id and (
        (role is not None and role != "admin") or (status is not None and status != "active")
    ):
        raise bad_request(
            "Admins cannot demote, block or deactivate themselves",
            ErrorCode.SELF_ACTION_FORBIDDEN,
        )
    address = _check_email(email) if email is not None else None
    hashed = None
    if password:
        check_password_strength(password)
        hashed = services.hasher.hash(password)
    try:
        with services.db.write() as session:
            target = user_store.get_user(session, user_id)
            if target is None:
                raise not_found("User not found")
            fields, ends_sessions = _changes(target, address, hashed, role, status)
            if first_name is not None:
                fields["first_name"] = _optional_first_name(first_name)
            if "email" in fields and user_store.email_exists(
                session, fields["email"], except_user_id=user_id
            ):
                raise _email_taken()
            user_store.update_user(session, user_id, **fields)
            if ends_sessions:
                user_store.bump_token_version(session, user_id)
            user_store.add_audit(
                session, "admin_update_user", user_id=actor.id, ip=ip,
                target_user_id=user_id, fields=sorted(_audited_names(fields)),
            )
            updated = user_store.get_user(session, user_id)
    except IntegrityError as exc:
        raise _email_taken() from exc
    assert updated is not None  # we hold the row's transaction
    return updated


def _changes(
    target: UserRecord,
    address: str | None,
    hashed: str | None,
    role: str | None,
    status: str | None,
) -> tuple[dict[str, Any], bool]:
    """The column changes, and whether they must end the target's existing sessions."""
    fields: dict[str, Any] = {}
    ends_sessions = False
    if address is not None and address != target.email:
        fields["email"] = address
        ends_sessions = True
    if hashed is not None:
        fields["hashed_password"] = hashed
        ends_sessions = True
    if role is not None:
        fields["role"] = role
    if status is not None:
        fields["status"] = status
        ends_sessions = ends_sessions or (status != "active" and status != target.status)
    return fields, ends_sessions


def _audited_names(fields: dict[str, Any]) -> Iterable[str]:
    # Names only: the audit log never holds a password hash.
    return ("password" if name == "hashed_password" else name for name in fields)


def do_delete_user(
    services: Services, actor: UserRecord, user_id: int, *, ip: str | None = None
) -> DeletedUser:
    """Delete the account and all its data; other tenants' rows only lose their pointer.

    The schema does the cascade (ON DELETE CASCADE for tenant rows, SET NULL for pointers
    such as another tenant's dialog assigned to this operator). Stored document files go
    after the commit, so a rolled-back deletion never loses files.
    """
    if user_id == actor.id:
        raise bad_request("Admins cannot delete themselves", ErrorCode.SELF_ACTION_FORBIDDEN)
    with services.db.write() as session:
        target = user_store.get_user(session, user_id)
        if target is None:
            raise not_found("User not found")
        storage_keys = user_store.list_document_storage_keys(session, user_id)
        user_store.delete_user(session, user_id)
        user_store.add_audit(
            session, "admin_delete_user", user_id=actor.id, ip=ip,
            target_user_id=user_id, email=target.email, documents=len(storage_keys),
        )
    remove_stored_files(services.settings.data_dir / UPLOADS_DIR_NAME, storage_keys)
    return DeletedUser(id=target.id, email=target.email)


def remove_stored_files(uploads_dir: Path, storage_keys: Iterable[str]) -> None:
    """Remove files by storage key; a missing file is fine, a key outside the directory is
    never followed."""
    root = uploads_dir.resolve()
    for key in storage_keys:
        path = (root / key).resolve()
        if not path.is_relative_to(root) or path == root:
            log.warning("refusing to remove a storage key outside uploads", extra={"key": key})
            continue
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            # The account is already gone; an orphaned file is logged for the operator.
            log.warning("could not remove stored file", extra={"key": key, "error": str(exc)})
