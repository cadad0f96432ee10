"""The caller's own account: profile, balance, activity heartbeat, rate-limit usage, onboarding.

Capability functions for spec §4.2's `/api/me*`, `/api/update-activity` and
`/api/users/onboarding/*`. Each runs in one transaction and returns store records; the door
renders them. Refusals are `AppError`s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError

from server.accounts import check_email
from server.context import Services
from server.errors import AppError, ErrorCode
from server.ratelimit import USER_NAMESPACES, RateLimiter
from server.store import users as user_store
from server.store.types import utcnow
from server.store.users import UserRecord

FIRST_NAME_MAX_CHARS = 100
FIRST_NAME_PUNCTUATION = frozenset(" -_.")
TIP_ID_MAX_CHARS = 100
# Tips are a short product-defined list; the cap keeps a client from growing the row forever.
MAX_TUTORIAL_TIPS = 200
ONBOARDING_LAST_STEP = 5


@dataclasses.dataclass(frozen=True, slots=True)
class Profile:
    user: UserRecord
    balance: Decimal


def field_error(field: str, message: str) -> AppError:
    """The hand-validation 422 of spec §1.2: `{"error", "message", "field"}`."""
    return AppError(
        ErrorCode.VALIDATION_ERROR,
        {"error": "validation_error", "message": message, "field": field},
        status=422,
    )


def normalise_email(raw: str) -> str | None:
    """The stored form of an address (register's rules), or None when it is not one."""
    try:
        return check_email(raw)
    except AppError:
        return None


def check_first_name(raw: str) -> str:
    """1–100 characters of letters (any script), digits, space, `-`, `_`, `.`."""
    name = raw.strip()
    if not name:
        raise field_error("first_name", "First name must not be empty")
    if len(name) > FIRST_NAME_MAX_CHARS:
        raise field_error(
            "first_name", f"First name must be at most {FIRST_NAME_MAX_CHARS} characters"
        )
    if not all(char.isalnum() or char in FIRST_NAME_PUNCTUATION for char in name):
        raise field_error(
            "first_name",
            "First name may contain only letters, digits, spaces and the characters - _ .",
        )
    return name


def _must_exist(user: UserRecord | None) -> UserRecord:
    # The guard loaded the user a moment ago; only a concurrent deletion gets here.
    if user is None:
        raise AppError(ErrorCode.NOT_FOUND, "User not found")
    return user


# --- profile ----------------------------------------------------------------------------------


def get_profile(services: Services, user: UserRecord) -> Profile:
    """The profile and balance; a missing balance row is created (spec: GET /api/me)."""
    with services.db.read() as session:
        balance = user_store.get_balance(session, user.id)
    if balance is not None:
        return Profile(user, balance)
    try:
        with services.db.write() as session:
            balance = user_store.get_or_create_balance(session, user.id)
    except IntegrityError:
        # A concurrent request created the row first; it is there now.
        with services.db.read() as session:
            balance = user_store.get_balance(session, user.id) or Decimal("0.00")
    return Profile(user, balance)


def do_update_profile(
    services: Services, user_id: int, *, first_name: object = None, email: object = None
) -> UserRecord:
    """Apply `first_name`; `email` is checked but ignored (it changes elsewhere). The door
    drops every other key, as the original does."""
    if email is not None and (not isinstance(email, str) or normalise_email(email) is None):
        raise field_error("email", "Invalid e-mail address")
    if first_name is not None and not isinstance(first_name, str):
        raise field_error("first_name", "First name must be a string")
    with services.db.write() as session:
        if first_name is None:
            return _must_exist(user_store.get_user(session, user_id))
        return _must_exist(
            user_store.update_user(session, user_id, first_name=check_first_name(first_name))
        )


def touch_activity(services: Services, user_id: int) -> dt.datetime:
    now = utcnow()
    with services.db.write() as session:
        _must_exist(user_store.update_user(session, user_id, last_activity=now))
    return now


async def rate_limit_usage(limiter: RateLimiter, identifier: str) -> dict[str, dict[str, Any]]:
    """The caller's real window per namespace (counting nothing), as GET /api/me/rate-limits
    reports it; a namespace whose storage cannot answer says `redis_unavailable`."""
    report: dict[str, dict[str, Any]] = {}
    for namespace in USER_NAMESPACES:
        usage = await limiter.usage(namespace, identifier)
        if usage is None:
            report[namespace] = {"status": "redis_unavailable"}
            continue
        report[namespace] = {
            "current": usage.current,
            "limit": usage.limit,
            "window": usage.window_secs,
            "remaining": max(usage.remaining, 0),
        }
    return report


# --- onboarding -------------------------------------------------------------------------------


def _set_onboarding(services: Services, user_id: int, **fields: Any) -> UserRecord:
    with services.db.write() as session:
        return _must_exist(user_store.update_user(session, user_id, **fields))


def start_onboarding(services: Services, user_id: int) -> UserRecord:
    """Start, or restart from step 1 (clears an earlier completion or skip)."""
    return _set_onboarding(
        services,
        user_id,
        onboarding_started_at=utcnow(),
        onboarding_step=1,
        onboarding_completed=False,
        onboarding_completed_at=None,
        onboarding_skipped=False,
    )


def update_onboarding_step(
    services: Services,
    user_id: int,
    *,
    step: int | None,
    completed: bool | None,
    skipped: bool | None,
) -> UserRecord:
    """Set the supplied fields; `completed=True` also stamps the completion time."""
    fields: dict[str, Any] = {}
    if step is not None:
        if not 0 <= step <= ONBOARDING_LAST_STEP:
            raise field_error("step", f"step must be between 0 and {ONBOARDING_LAST_STEP}")
        fields["onboarding_step"] = step
    if completed is not None:
        fields["onboarding_completed"] = completed
        if completed:
            fields["onboarding_completed_at"] = utcnow()
    if skipped is not None:
        fields["onboarding_skipped"] = skipped
    return _set_onboarding(services, user_id, **fields)


def complete_onboarding(services: Services, user_id: int) -> UserRecord:
    return _set_onboarding(
        services,
        user_id,
        onboarding_completed=True,
        onboarding_completed_at=utcnow(),
        onboarding_step=ONBOARDING_LAST_STEP,
        first_bot_created=True,
    )


def skip_onboarding(services: Services, user_id: int) -> UserRecord:
    """Skipping also counts as completed, so the dashboard never shows it again."""
    return _set_onboarding(
        services,
        user_id,
        onboarding_skipped=True,
        onboarding_completed=True,
        onboarding_completed_at=utcnow(),
    )


def save_tip(services: Services, user_id: int, tip_id: str) -> tuple[str, ...]:
    """Remember that a tutorial tip was shown (idempotent)."""
    tip = tip_id.strip()
    if not tip or len(tip) > TIP_ID_MAX_CHARS:
        raise field_error("tip_id", f"tip_id must be 1–{TIP_ID_MAX_CHARS} characters")
    with services.db.write() as session:
        try:
            tips = user_store.add_tutorial_tip(
                session, user_id, tip, max_tips=MAX_TUTORIAL_TIPS
            )
        except OverflowError as exc:
            raise AppError(
                ErrorCode.BAD_REQUEST, f"At most {MAX_TUTORIAL_TIPS} tips can be recorded"
            ) from exc
    if tips is None:
        raise AppError(ErrorCode.NOT_FOUND, "User not found")
    return tips


def mark_first_message(services: Services, user_id: int) -> UserRecord:
    return _set_onboarding(services, user_id, first_message_sent=True)


def mark_bot_created(services: Services, user_id: int) -> UserRecord:
    return _set_onboarding(services, user_id, first_bot_created=True)
