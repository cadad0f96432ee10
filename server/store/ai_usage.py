"""The AI usage log (`ai_token_usage`, spec §7.12): one row per LLM attempt, and per-day stats.

Every function takes an open session and returns plain values or frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, case, func, insert, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from server.store.ai_keys import day_start
from server.store.models import AiTokenUsage
from server.store.types import utcnow


@dataclasses.dataclass(frozen=True, slots=True)
class UsageDay:
    date: str
    requests: int
    tokens: int
    avg_response_time: float
    successful_requests: int
    failed_requests: int
    success_rate: float  # percent, 0-100


# Core, not the ORM: this runs once per LLM attempt and the ORM unit of work costs ~1 ms.
_INSERT_USAGE = insert(cast(Table, AiTokenUsage.__table__))


def usage_values(
    *,
    token_id: int | None,
    model: str,
    user_id: int | None = None,
    assistant_id: int | None = None,
    provider: str = "openai",
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    total_tokens: int | None = None,
    request_type: str = "chat",
    response_time: float | None = None,
    success: bool = True,
    error_message: str | None = None,
    created_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """The column values of one usage row, as `add_usage_rows` inserts them (every key set,
    so rows of one batch share one statement)."""
    return {
        "token_id": token_id, "user_id": user_id, "assistant_id": assistant_id,
        "provider": provider, "model_used": model[:64], "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens if total_tokens is None
        else total_tokens,
        "request_type": request_type, "response_time": response_time, "success": success,
        "error_message": error_message[:2000] if error_message else None,
        "created_at": created_at or utcnow(),
    }


def add_usage_row(session: Session, **fields: Any) -> int:
    """Insert one row (keyword arguments of `usage_values`); its id."""
    result = session.execute(_INSERT_USAGE, usage_values(**fields))
    new_key = cast("CursorResult[Any]", result).inserted_primary_key
    assert new_key is not None
    return int(new_key[0])


def add_usage_rows(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows built by `usage_values` with one statement (a batch of the usage writer)."""
    if rows:
        session.execute(_INSERT_USAGE, [dict(row) for row in rows])


def usage_by_day(
    session: Session, key_id: int, *, days: int = 30, now: dt.datetime | None = None
) -> list[UsageDay]:
    """Per UTC day over the last `days` days, oldest first; empty for an unknown key."""
    now = now or utcnow()
    since = day_start(now) - dt.timedelta(days=days - 1)
    if session.get_bind().dialect.name == "postgresql":
        day = func.to_char(func.timezone("UTC", AiTokenUsage.created_at), "YYYY-MM-DD")
    else:
        day = func.date(AiTokenUsage.created_at)  # SQLite keeps the UTC wall time as text
    successes = func.sum(case((AiTokenUsage.success.is_(True), 1), else_=0))
    rows = session.execute(
        select(
            day.label("day"),
            func.count(),
            func.coalesce(func.sum(AiTokenUsage.total_tokens), 0),
            func.avg(AiTokenUsage.response_time),
            successes,
        )
        .where(AiTokenUsage.token_id == key_id, AiTokenUsage.created_at >= since)
        .group_by(day)
        .order_by(day)
    ).all()
    result = []
    for date, requests, tokens, avg_time, ok in rows:
        ok = int(ok or 0)
        result.append(UsageDay(
            date=str(date), requests=int(requests), tokens=int(tokens),
            avg_response_time=round(float(avg_time or 0.0), 3), successful_requests=ok,
            failed_requests=int(requests) - ok,
            success_rate=round(100.0 * ok / requests, 2) if requests else 0.0,
        ))
    return result


@dataclasses.dataclass(frozen=True, slots=True)
class UsageRow:
    id: int
    token_id: int | None
    user_id: int | None
    assistant_id: int | None
    provider: str | None
    model_used: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    request_type: str
    response_time: float | None
    success: bool
    error_message: str | None
    created_at: dt.datetime


_ROW_FIELDS = [field.name for field in dataclasses.fields(UsageRow)]


def recent_usage(session: Session, *, limit: int = 100) -> list[UsageRow]:
    """The latest usage rows, oldest first (for audits and tests)."""
    rows = session.execute(
        select(AiTokenUsage).order_by(AiTokenUsage.id.desc()).limit(limit)
    ).scalars()
    records = [UsageRow(**{name: getattr(row, name) for name in _ROW_FIELDS}) for row in rows]
    return records[::-1]
