"""The admin's AI key pool (spec §7.12, §9.6): keys, their limits, counters and error state.

Every function takes an open session and returns plain frozen dataclasses, never ORM rows.
The usage log (`ai_token_usage`) lives in `server/store/ai_usage.py`.

Conventions:
- `priority`: 1 is the HIGHEST priority; candidates are ordered by priority ascending, then by
  lower daily usage.
- `model_access` is a comma list matched by exact item (`gpt-4o` does not admit `gpt-4o-mini`).
- Counters reset lazily: a key whose `last_reset_daily` lies before today's UTC midnight (or
  `last_reset_monthly` before the first of this month) counts as zero used, and the next
  `reserve()` writes the reset. Every reported usage is this effective value.
- `reserve()` is one conditional UPDATE, so concurrent callers can never push a key past its
  limits, on PostgreSQL (row lock + re-check) as on SQLite (one writer at a time).
- Keys are stored as given (encryption at rest is not done here). `AiKeyRecord` never carries
  the secret; only `AiKeyCandidate`, which the LLM layer needs to call the provider, does.
- Delete is soft (`is_active = false`); usage rows keep their `token_id`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, cast

from sqlalchemy import Boolean, Table, and_, bindparam, case, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.errors import AppError, ErrorCode
from server.store.models import AiTokenPool
from server.store.types import UTC, UTCDateTime, utcnow

# Consecutive failures after which a key is rested even without a 401/429.
REST_AFTER_CONSECUTIVE_ERRORS = 3
DEFAULT_REST_SECS = 300


@dataclasses.dataclass(frozen=True, slots=True)
class AiKeyRecord:
    id: int
    name: str
    base_url: str | None
    model_access: str
    daily_limit: int
    monthly_limit: int
    daily_usage: int
    monthly_usage: int
    priority: int
    is_active: bool
    last_used: dt.datetime | None
    error_count: int
    last_error: str | None
    last_error_at: dt.datetime | None
    rested_until: dt.datetime | None
    notes: str | None
    last_reset_daily: dt.datetime
    last_reset_monthly: dt.datetime
    created_at: dt.datetime

    @property
    def models(self) -> tuple[str, ...]:
        return split_models(self.model_access)

    @property
    def daily_usage_percent(self) -> float:
        return _percent(self.daily_usage, self.daily_limit)

    @property
    def monthly_usage_percent(self) -> float:
        return _percent(self.monthly_usage, self.monthly_limit)


@dataclasses.dataclass(frozen=True, slots=True)
class AiKeyCandidate:
    """A key the LLM layer may call now, with its secret."""

    id: int
    name: str
    api_key: str
    base_url: str | None
    priority: int
    daily_usage: int
    error_count: int


# Columns `update_key` may change (the secret itself is fixed: add a new key instead).
UPDATABLE_FIELDS = frozenset({
    "name", "base_url", "model_access", "daily_limit", "monthly_limit", "priority",
    "is_active", "notes", "current_daily_usage", "current_monthly_usage", "last_reset_daily",
    "last_reset_monthly", "error_count", "rested_until",
})


def split_models(model_access: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in model_access.split(",") if item.strip())


def normalise_models(model_access: str) -> str:
    return ",".join(split_models(model_access))


def _percent(used: int, limit: int) -> float:
    return round(100.0 * used / limit, 2) if limit > 0 else 100.0


def day_start(now: dt.datetime) -> dt.datetime:
    """UTC midnight that begins `now`'s day."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _month_start(now: dt.datetime) -> dt.datetime:
    return day_start(now).replace(day=1)


def _rowcount(result: Any) -> int:
    return cast("CursorResult[Any]", result).rowcount


def _effective_usage(row: AiTokenPool, now: dt.datetime) -> tuple[int, int]:
    daily = 0 if row.last_reset_daily < day_start(now) else row.current_daily_usage
    monthly = 0 if row.last_reset_monthly < _month_start(now) else row.current_monthly_usage
    return daily, monthly


def _record(row: AiTokenPool, now: dt.datetime) -> AiKeyRecord:
    daily, monthly = _effective_usage(row, now)
    return AiKeyRecord(
        id=row.id, name=row.name, base_url=row.base_url, model_access=row.model_access,
        daily_limit=row.daily_limit, monthly_limit=row.monthly_limit, daily_usage=daily,
        monthly_usage=monthly, priority=row.priority, is_active=row.is_active,
        last_used=row.last_used, error_count=row.error_count, last_error=row.last_error,
        last_error_at=row.last_error_at, rested_until=row.rested_until, notes=row.notes,
        last_reset_daily=row.last_reset_daily, last_reset_monthly=row.last_reset_monthly,
        created_at=row.created_at,
    )


# --- the admin's view -----------------------------------------------------------------------


def create_key(
    session: Session,
    *,
    name: str,
    token: str,
    model_access: str = "gpt-4o,gpt-4o-mini",
    daily_limit: int = 10000,
    monthly_limit: int = 300000,
    priority: int = 1,
    base_url: str | None = None,
    notes: str | None = None,
    is_active: bool = True,
) -> AiKeyRecord:
    """Add a key; 409 when the same secret is already in the pool (active or not)."""
    if session.execute(select(AiTokenPool.id).where(AiTokenPool.token == token)).first():
        raise AppError(ErrorCode.CONFLICT, "This AI key is already in the pool")
    row = AiTokenPool(
        name=name, token=token, model_access=normalise_models(model_access),
        daily_limit=daily_limit, monthly_limit=monthly_limit, priority=priority,
        base_url=base_url, notes=notes, is_active=is_active,
        current_daily_usage=0, current_monthly_usage=0, error_count=0,
    )
    try:
        # A savepoint, so a concurrent insert of the same key fails only this statement.
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError as exc:
        raise AppError(ErrorCode.CONFLICT, "This AI key is already in the pool") from exc
    return _record(row, utcnow())


def list_keys(session: Session, *, include_inactive: bool = True) -> list[AiKeyRecord]:
    query = select(AiTokenPool).order_by(AiTokenPool.priority, AiTokenPool.id)
    if not include_inactive:
        query = query.where(AiTokenPool.is_active.is_(True))
    now = utcnow()
    return [_record(row, now) for row in session.execute(query).scalars()]


def get_key(session: Session, key_id: int) -> AiKeyRecord | None:
    row = session.get(AiTokenPool, key_id)
    return _record(row, utcnow()) if row is not None else None


def update_key(session: Session, key_id: int, **fields: Any) -> AiKeyRecord | None:
    """Change the given columns; None for an unknown id."""
    unknown = set(fields) - UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    row = session.get(AiTokenPool, key_id)
    if row is None:
        return None
    if "model_access" in fields:
        fields["model_access"] = normalise_models(fields["model_access"])
    for name, value in fields.items():
        setattr(row, name, value)
    session.flush()
    return _record(row, utcnow())


def delete_key(session: Session, key_id: int) -> bool:
    """Soft delete: the key stops being used; its usage history stays attached."""
    result = session.execute(
        update(AiTokenPool).where(AiTokenPool.id == key_id).values(is_active=False)
    )
    return _rowcount(result) > 0


_ANY_ACTIVE = select(AiTokenPool.id).where(AiTokenPool.is_active.is_(True)).limit(1)


def has_active_key(session: Session) -> bool:
    return session.execute(_ANY_ACTIVE).first() is not None


# --- what the LLM layer uses (hot path: Core statements built once, bound per call) -------------

_TABLE = cast(Table, AiTokenPool.__table__)
_POOL = _TABLE.c
_NOW = bindparam("now", type_=UTCDateTime())
_DAY_START = bindparam("day_start", type_=UTCDateTime())
_MONTH_START = bindparam("month_start", type_=UTCDateTime())
_UNTIL = bindparam("until", type_=UTCDateTime())
_STALE_DAY = _POOL.last_reset_daily < _DAY_START
_STALE_MONTH = _POOL.last_reset_monthly < _MONTH_START
_DAILY_USED = case((_STALE_DAY, 0), else_=_POOL.current_daily_usage)
_MONTHLY_USED = case((_STALE_MONTH, 0), else_=_POOL.current_monthly_usage)
_USABLE = and_(
    _POOL.is_active.is_(True),
    or_(_POOL.rested_until.is_(None), _POOL.rested_until <= _NOW),
    _POOL.daily_limit > _DAILY_USED,
    _POOL.monthly_limit > _MONTHLY_USED,
)

_CANDIDATES = (
    select(_POOL.id, _POOL.name, _POOL.token, _POOL.base_url, _POOL.model_access,
           _POOL.priority, _DAILY_USED.label("daily_used"), _POOL.error_count)
    .where(_USABLE)
    .order_by(_POOL.priority, _DAILY_USED, _POOL.id)
)

# The lazy reset and the limit check read the row as the UPDATE takes it (PostgreSQL re-checks
# the WHERE after waiting for a concurrent writer's row lock; SQLite has one writer at a time).
_RESERVE = (
    update(_TABLE)
    .where(_POOL.id == bindparam("key_id"), _USABLE)
    .values(
        current_daily_usage=_DAILY_USED + 1,
        current_monthly_usage=_MONTHLY_USED + 1,
        last_reset_daily=case((_STALE_DAY, _NOW), else_=_POOL.last_reset_daily),
        last_reset_monthly=case((_STALE_MONTH, _NOW), else_=_POOL.last_reset_monthly),
        last_used=_NOW,
    )
)

# Gives back a reservation that was never used (its call was cancelled before it started).
_RELEASE = (
    update(_TABLE)
    .where(_POOL.id == bindparam("key_id"))
    .values(
        current_daily_usage=case((_POOL.current_daily_usage > 0, _POOL.current_daily_usage - 1),
                                 else_=0),
        current_monthly_usage=case(
            (_POOL.current_monthly_usage > 0, _POOL.current_monthly_usage - 1), else_=0
        ),
    )
)

_RECORD_SUCCESS = (
    update(_TABLE)
    .where(_POOL.id == bindparam("key_id"))
    .values(error_count=0, rested_until=None)
)

_REST_NOW = or_(
    bindparam("rest", type_=Boolean()),
    _POOL.error_count + 1 >= REST_AFTER_CONSECUTIVE_ERRORS,
)
_RECORD_FAILURE = (
    update(_TABLE)
    .where(_POOL.id == bindparam("key_id"))
    .values(
        error_count=_POOL.error_count + 1,
        last_error=bindparam("error"),
        last_error_at=_NOW,
        rested_until=case((_REST_NOW, _UNTIL), else_=_POOL.rested_until),
    )
)


def _clock(now: dt.datetime | None) -> dict[str, dt.datetime]:
    now = now or utcnow()
    return {"now": now, "day_start": day_start(now), "month_start": _month_start(now)}


def candidates_for(
    session: Session, model: str, *, now: dt.datetime | None = None
) -> list[AiKeyCandidate]:
    """Keys that may serve `model` now, best first (priority 1 first, then least used today)."""
    rows = session.execute(_CANDIDATES, _clock(now))
    return [
        AiKeyCandidate(
            id=row.id, name=row.name, api_key=row.token, base_url=row.base_url,
            priority=row.priority, daily_usage=row.daily_used, error_count=row.error_count,
        )
        for row in rows
        if model in split_models(row.model_access)
    ]


def reserve(session: Session, key_id: int, *, now: dt.datetime | None = None) -> bool:
    """Count one request against the key, atomically; False when it is full, off or rested."""
    result = session.execute(_RESERVE, {"key_id": key_id, **_clock(now)})
    return _rowcount(result) == 1


def release(session: Session, key_id: int) -> None:
    """Undo one `reserve()` whose request was never sent."""
    session.execute(_RELEASE, {"key_id": key_id})


def record_success(session: Session, key_id: int) -> None:
    session.execute(_RECORD_SUCCESS, {"key_id": key_id})


def record_failure(
    session: Session,
    key_id: int,
    error: str,
    *,
    rest: bool = False,
    rest_secs: int = DEFAULT_REST_SECS,
    now: dt.datetime | None = None,
) -> None:
    """Count a consecutive error; rest the key when told (401/429) or after repeated errors."""
    now = now or utcnow()
    session.execute(_RECORD_FAILURE, {
        "key_id": key_id, "error": error[:2000], "rest": rest, "now": now,
        "until": now + dt.timedelta(seconds=rest_secs),
    })


def reset_key_health(session: Session) -> int:
    """Forget every key's consecutive errors and rest (the ops "reload providers" action)."""
    result = session.execute(
        update(AiTokenPool)
        .where(or_(AiTokenPool.error_count != 0, AiTokenPool.rested_until.is_not(None)))
        .values(error_count=0, rested_until=None)
    )
    return _rowcount(result)
