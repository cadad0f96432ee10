"""Account capabilities: register, log in and out, refresh, e-mail confirmation.

Password changes and resets live in `server/account_passwords.py`, mail texts in
`server/account_mail.py`.

Each `do_*` function is synchronous (doors run it with `call.run`) and makes its change in one
`db.write()` transaction. Two habits run through the module:

* argon2 hashing happens outside write transactions, so SQLite writers never queue behind it;
  the write then re-reads the row under a lock and checks nothing moved meanwhile.
* a refusal that must leave a trace (an audit row, a counted wrong code, the session kill of a
  reused refresh token) is committed first and raised afterwards; raising inside `db.write()`
  would roll the trace back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import account_mail
from server.account_mail import Mail
from server.context import Services
from server.errors import AppError, ErrorCode
from server.security import (
    ACCESS,
    REFRESH,
    TokenClaims,
    check_password_strength,
    constant_time_equal,
    keyed_hash,
    new_numeric_code,
)
from server.store import users as user_store
from server.store.credentials import lock_user
from server.store.types import utcnow
from server.store.users import UserRecord

MAX_EMAIL_LENGTH = 255
MAX_FIRST_NAME_LENGTH = 100
_UNSAFE_CHARS = str.maketrans("", "", "<>\"'")
BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclasses.dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    user: UserRecord


def issue_pair(services: Services, user: UserRecord) -> TokenPair:
    access = services.tokens.issue(user.id, user.email, user.token_version, ACCESS)
    refresh = services.tokens.issue(user.id, user.email, user.token_version, REFRESH)
    return TokenPair(access.token, refresh.token, user)


# --- checks -----------------------------------------------------------------------------------


def clean_email(raw: str) -> str:
    """The form every e-mail is stored and looked up in: no markup characters, lower case."""
    return raw.translate(_UNSAFE_CHARS).strip().lower()


def check_email(raw: str) -> str:
    email = clean_email(raw)
    invalid = AppError(ErrorCode.INVALID_EMAIL, "Invalid e-mail address", status=400)
    if not email or len(email) > MAX_EMAIL_LENGTH:
        raise invalid
    try:
        info = validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise invalid from exc
    return info.normalized.lower()


def clean_first_name(raw: str | None) -> str | None:
    if raw is None:
        return None
    name = raw.translate(_UNSAFE_CHARS).strip()[:MAX_FIRST_NAME_LENGTH].strip()
    return name or None


def sign_in_refusal(user: UserRecord) -> AppError | None:
    """Why this account may not hold a session right now, or None."""
    if user.status == "blocked":
        return AppError(ErrorCode.ACCOUNT_BLOCKED, "Account is blocked")
    if user.status != "active":
        return AppError(ErrorCode.ACCOUNT_INACTIVE, "Account is not active")
    if not user.is_email_confirmed and not user.is_admin:
        return AppError(
            ErrorCode.EMAIL_NOT_CONFIRMED,
            "E-mail not confirmed; enter the code we sent you or request a new one",
        )
    return None


# --- shared pieces ------------------------------------------------------------------------------


def send_mail(services: Services, session: Session, to_addr: str, mail: Mail) -> None:
    services.mailer.enqueue(session, to_addr, mail.subject, mail.body, mail.kind)


def _code_hash(services: Services, email: str, code: str) -> str:
    secret = services.settings.secret_key
    assert secret, "services are built with secrets"
    return keyed_hash(secret, email, code)


def _issue_email_code(services: Services, session: Session, user: UserRecord) -> None:
    """A fresh 6-digit code: only its keyed hash is stored; attempts start over."""
    code = new_numeric_code()
    ttl = services.settings.email_code_ttl_secs
    user_store.update_user(
        session,
        user.id,
        email_code_hash=_code_hash(services, user.email, code),
        email_code_expires=utcnow() + dt.timedelta(seconds=ttl),
        email_code_attempts=0,
    )
    send_mail(services, session, user.email, account_mail.confirmation_code_mail(code, ttl))


def audit_failure(services: Services, action: str, user_id: int | None, ip: str,
                   **details: object) -> None:
    with services.db.write() as session:
        user_store.add_audit(session, action, user_id=user_id, success=False, ip=ip, **details)


# --- registration and sessions ------------------------------------------------------------------


def do_register(
    services: Services, *, email: str, password: str, first_name: str | None, ip: str
) -> UserRecord:
    email = check_email(email)
    check_password_strength(password)
    hashed = services.hasher.hash(password)
    taken = AppError(ErrorCode.EMAIL_TAKEN, "Email already registered", status=400)
    try:
        with services.db.write() as session:
            if user_store.email_exists(session, email):
                raise taken
            user = user_store.create_user(
                session,
                email=email,
                hashed_password=hashed,
                first_name=clean_first_name(first_name),
                role="user",
                status="active",
                is_email_confirmed=False,
            )
            _issue_email_code(services, session, user)
            for admin_addr in services.settings.admin_notify_emails:
                notice = account_mail.admin_new_user_mail(user.email, user.first_name, user.id)
                send_mail(services, session, admin_addr, notice)
            user_store.add_audit(session, "register", user_id=user.id, ip=ip, email=email)
            created = user_store.get_user(session, user.id)
    except IntegrityError as exc:  # a concurrent registration of the same address won
        raise taken from exc
    assert created is not None
    return created


def do_login(services: Services, *, email: str, password: str, ip: str) -> TokenPair:
    email = clean_email(email)[:MAX_EMAIL_LENGTH]
    with services.db.read() as session:
        user = user_store.get_user_by_email(session, email) if email else None
    # verify(None, ...) checks against a dummy hash: unknown accounts cost the same time.
    if not services.hasher.verify(user.hashed_password if user else None, password) or not user:
        audit_failure(services, "login", user.id if user else None, ip, email=email,
                       reason=ErrorCode.INVALID_CREDENTIALS.value)
        raise AppError(
            ErrorCode.INVALID_CREDENTIALS, "Incorrect email or password", headers=BEARER_CHALLENGE
        )
    refusal = sign_in_refusal(user)
    if refusal is not None:
        audit_failure(services, "login", user.id, ip, email=email, reason=refusal.code.value)
        raise refusal
    new_hash = services.hasher.hash(password) if services.hasher.needs_rehash(
        user.hashed_password
    ) else None
    with services.db.write() as session:
        current = lock_user(session, user.id)
        if new_hash and current is not None and current.hashed_password == user.hashed_password:
            user_store.update_user(session, user.id, hashed_password=new_hash)
        user_store.add_audit(session, "login", user_id=user.id, ip=ip, email=email)
    return issue_pair(services, user)


def do_logout(
    services: Services, *, user: UserRecord, claims: TokenClaims, refresh_token: str | None,
    ip: str,
) -> None:
    """Revoke the presented access token, and the refresh token if the caller sent theirs."""
    refresh_claims: TokenClaims | None = None
    if refresh_token:
        try:
            refresh_claims = services.tokens.decode(refresh_token, REFRESH)
        except AppError:
            refresh_claims = None  # an expired or foreign refresh token: nothing to revoke
    with services.db.write() as session:
        lock_user(session, user.id)  # concurrent logouts queue instead of racing the insert
        user_store.revoke_token(session, claims.jti, user.id, ACCESS, claims.expires_at)
        if refresh_claims is not None and refresh_claims.user_id == user.id:
            user_store.revoke_token(
                session, refresh_claims.jti, user.id, REFRESH, refresh_claims.expires_at
            )
        user_store.add_audit(session, "logout", user_id=user.id, ip=ip)


def do_refresh(services: Services, *, refresh_token: str, ip: str) -> TokenPair:
    """Rotate: the old refresh token is revoked and a new pair issued.

    A refresh token presented a second time means it was copied: every session of the
    account is ended (token_version bump) and the caller gets 401.
    """
    claims = services.tokens.decode(refresh_token, REFRESH)
    refusal: AppError | None = None
    with services.db.write() as session:
        user = lock_user(session, claims.user_id)
        if user is None or user.email != claims.email:
            refusal = AppError(ErrorCode.UNAUTHORIZED, "Could not validate credentials")
        elif claims.version != user.token_version:
            refusal = AppError(ErrorCode.TOKEN_REVOKED, "Token has been revoked")
        elif user_store.is_token_revoked(session, claims.jti):
            user_store.bump_token_version(session, user.id)
            user_store.add_audit(session, "refresh_token_reuse", user_id=user.id,
                                 success=False, ip=ip)
            refusal = AppError(
                ErrorCode.TOKEN_REVOKED,
                "Refresh token already used; all sessions of this account were signed out",
            )
        else:
            refusal = sign_in_refusal(user)
            if refusal is None:
                user_store.revoke_token(session, claims.jti, user.id, REFRESH, claims.expires_at)
    if refusal is not None:
        raise refusal
    assert user is not None
    return issue_pair(services, user)


# --- e-mail confirmation ------------------------------------------------------------------------


def do_confirm_email(services: Services, *, email: str, code: str, ip: str) -> TokenPair:
    """Exchange the mailed code for a confirmed account and a signed-in session.

    A code expires after EMAIL_CODE_TTL_SECS and dies after EMAIL_CODE_MAX_ATTEMPTS wrong
    tries (spec S5: otherwise 10^6 guesses take over an unconfirmed account).
    """
    max_attempts = services.settings.email_code_max_attempts
    refusal: AppError | None = None
    with services.db.write() as session:
        found = user_store.get_user_by_email(session, clean_email(email))
        user = lock_user(session, found.id) if found is not None else None
        if user is None:
            raise AppError(ErrorCode.NOT_FOUND, "User not found")
        if user.status != "active":  # no session for a blocked or disabled account
            raise sign_in_refusal(user) or AppError(ErrorCode.FORBIDDEN, "Account is not active")
        if user.is_email_confirmed:
            raise AppError(ErrorCode.EMAIL_ALREADY_CONFIRMED, "Email already confirmed", status=400)
        if user.email_code_attempts >= max_attempts:
            raise AppError(
                ErrorCode.TOO_MANY_ATTEMPTS,
                "Too many wrong codes; request a new code",
                status=400,
            )
        if user.email_code_hash is None:
            raise AppError(
                ErrorCode.INVALID_CODE, "No code is pending; request a new one", status=400
            )
        if user.email_code_expires is None or user.email_code_expires <= utcnow():
            raise AppError(
                ErrorCode.CODE_EXPIRED, "The code has expired; request a new one", status=400
            )
        expected = _code_hash(services, user.email, code.strip())
        if constant_time_equal(user.email_code_hash, expected):
            user_store.update_user(
                session,
                user.id,
                is_email_confirmed=True,
                email_code_hash=None,
                email_code_expires=None,
                email_code_attempts=0,
            )
            send_mail(services, session, user.email, account_mail.welcome_mail(user.first_name))
            user_store.add_audit(session, "confirm_email", user_id=user.id, ip=ip)
        else:
            attempts = user_store.record_email_code_attempt(session, user.id)
            if attempts >= max_attempts:
                user_store.update_user(
                    session, user.id, email_code_hash=None, email_code_expires=None
                )
            user_store.add_audit(session, "confirm_email", user_id=user.id, success=False, ip=ip)
            left = max(max_attempts - attempts, 0)
            refusal = AppError(
                ErrorCode.INVALID_CODE, f"Invalid code; {left} attempts left", status=400
            )
        confirmed = lock_user(session, user.id)
    if refusal is not None:
        raise refusal
    assert confirmed is not None
    return issue_pair(services, confirmed)


def do_resend_email_code(services: Services, *, email: str, ip: str) -> None:
    """A new code (attempts start over); silent for unknown e-mails (no enumeration)."""
    with services.db.write() as session:
        found = user_store.get_user_by_email(session, clean_email(email))
        user = lock_user(session, found.id) if found is not None else None
        if user is None:
            return
        if user.is_email_confirmed:
            raise AppError(ErrorCode.EMAIL_ALREADY_CONFIRMED, "Email already confirmed", status=400)
        _issue_email_code(services, session, user)
        user_store.add_audit(session, "resend_email_code", user_id=user.id, ip=ip)
