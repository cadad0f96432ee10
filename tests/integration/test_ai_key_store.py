"""The AI key pool in the store, on SQLite and PostgreSQL: selection, limits, counters, usage."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest

from server.context import Services
from server.errors import AppError, ErrorCode
from server.store import ai_keys, ai_usage
from server.store.ai_keys import AiKeyRecord
from server.store.types import utcnow

THREAD_JOIN_SECS = 60


@pytest.fixture
def add_key(services: Services) -> Callable[..., AiKeyRecord]:
    counter = iter(range(1, 1000))

    def add(**fields: Any) -> AiKeyRecord:
        number = next(counter)
        values: dict[str, Any] = {"name": f"key {number}", "token": f"sk-test-{number}",
                                  "model_access": "gpt-4o-mini"}
        values.update(fields)
        with services.db.write() as session:
            return ai_keys.create_key(session, **values)

    return add


def _candidates(services: Services, model: str = "gpt-4o-mini") -> list[int]:
    with services.db.read() as session:
        return [c.id for c in ai_keys.candidates_for(session, model)]


def _reserve(services: Services, key_id: int) -> bool:
    with services.db.write() as session:
        return ai_keys.reserve(session, key_id)


def _get(services: Services, key_id: int) -> AiKeyRecord:
    with services.db.read() as session:
        record = ai_keys.get_key(session, key_id)
    assert record is not None
    return record


def test_create_returns_record_without_secret(add_key: Callable[..., AiKeyRecord]) -> None:
    record = add_key(name="main", model_access=" gpt-4o , gpt-4o-mini ,", priority=2)
    assert record.name == "main"
    assert record.model_access == "gpt-4o,gpt-4o-mini"
    assert record.models == ("gpt-4o", "gpt-4o-mini")
    assert record.priority == 2 and record.is_active
    assert record.daily_usage == 0 and record.daily_usage_percent == 0.0
    assert not hasattr(record, "token")


def test_duplicate_key_is_conflict(add_key: Callable[..., AiKeyRecord]) -> None:
    add_key(token="sk-same")
    with pytest.raises(AppError) as caught:
        add_key(token="sk-same")
    assert caught.value.code is ErrorCode.CONFLICT
    assert caught.value.status == 409


def test_list_orders_by_priority_then_id(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    low = add_key(priority=5)
    high = add_key(priority=1)
    with services.db.read() as session:
        assert [k.id for k in ai_keys.list_keys(session)] == [high.id, low.id]


def test_update_changes_given_fields_and_rejects_unknown(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    key = add_key()
    with services.db.write() as session:
        updated = ai_keys.update_key(session, key.id, name="renamed", daily_limit=7,
                                     model_access="a, b")
        assert ai_keys.update_key(session, 999_999, name="x") is None
        with pytest.raises(ValueError):
            ai_keys.update_key(session, key.id, token="sk-new")
    assert updated is not None
    assert (updated.name, updated.daily_limit, updated.model_access) == ("renamed", 7, "a,b")


def test_soft_delete_deactivates_and_keeps_usage_rows(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    key = add_key()
    with services.db.write() as session:
        ai_usage.add_usage_row(session, token_id=key.id, model="gpt-4o-mini")
    with services.db.write() as session:
        assert ai_keys.delete_key(session, key.id) is True
        assert ai_keys.delete_key(session, 999_999) is False
    assert _get(services, key.id).is_active is False
    assert _candidates(services) == []
    with services.db.read() as session:
        assert [row.token_id for row in ai_usage.recent_usage(session)] == [key.id]


def test_candidates_match_model_items_exactly(add_key: Callable[..., AiKeyRecord],
                                              services: Services) -> None:
    mini = add_key(model_access="gpt-4o-mini")
    both = add_key(model_access="gpt-4o,gpt-4o-mini")
    assert _candidates(services, "gpt-4o") == [both.id]
    assert set(_candidates(services, "gpt-4o-mini")) == {mini.id, both.id}
    assert _candidates(services, "gpt-4") == []


def test_candidates_prefer_priority_one_then_lower_daily_usage(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    second = add_key(priority=2)
    busy = add_key(priority=1)
    idle = add_key(priority=1)
    assert _reserve(services, busy.id)
    assert _candidates(services) == [idle.id, busy.id, second.id]


def test_candidates_skip_inactive_rested_and_full_keys(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    add_key(is_active=False)
    rested = add_key()
    full = add_key(daily_limit=1)
    monthly_full = add_key(monthly_limit=1)
    ok = add_key()
    with services.db.write() as session:
        ai_keys.update_key(session, rested.id, rested_until=utcnow() + dt.timedelta(minutes=5))
    assert _reserve(services, full.id) and _reserve(services, monthly_full.id)
    assert _candidates(services) == [ok.id]


def test_rest_expires(services: Services, add_key: Callable[..., AiKeyRecord]) -> None:
    key = add_key()
    with services.db.write() as session:
        ai_keys.update_key(session, key.id, rested_until=utcnow() - dt.timedelta(seconds=1))
    assert _candidates(services) == [key.id]


def test_reserve_counts_once_and_refuses_when_full(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    key = add_key(daily_limit=2)
    assert _reserve(services, key.id) is True
    assert _get(services, key.id).daily_usage == 1
    assert _get(services, key.id).monthly_usage == 1
    assert _reserve(services, key.id) is True
    assert _reserve(services, key.id) is False
    record = _get(services, key.id)
    assert (record.daily_usage, record.daily_usage_percent) == (2, 100.0)
    assert record.last_used is not None


def test_release_gives_a_reservation_back_and_never_goes_below_zero(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    key = add_key(daily_limit=1)
    assert _reserve(services, key.id) is True
    assert _reserve(services, key.id) is False  # full
    with services.db.write() as session:
        ai_keys.release(session, key.id)
    record = _get(services, key.id)
    assert (record.daily_usage, record.monthly_usage) == (0, 0)
    with services.db.write() as session:
        ai_keys.release(session, key.id)
    assert _get(services, key.id).daily_usage == 0
    assert _reserve(services, key.id) is True  # the slot is free again


def test_reserve_refuses_at_monthly_limit(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    key = add_key(monthly_limit=1)
    assert _reserve(services, key.id) is True
    assert _reserve(services, key.id) is False


def test_daily_counter_resets_lazily_after_utc_midnight(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    key = add_key(daily_limit=2)
    assert _reserve(services, key.id) and _reserve(services, key.id)
    assert _candidates(services) == []
    with services.db.write() as session:
        ai_keys.update_key(session, key.id, last_reset_daily=utcnow() - dt.timedelta(days=1))
    assert _get(services, key.id).daily_usage == 0
    assert _candidates(services) == [key.id]
    assert _reserve(services, key.id) is True
    record = _get(services, key.id)
    assert record.daily_usage == 1
    assert record.last_reset_daily.date() == utcnow().date()
    assert record.monthly_usage == 3


def test_monthly_counter_resets_lazily_at_month_start(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    key = add_key(monthly_limit=1)
    assert _reserve(services, key.id)
    last_month = ai_keys.day_start(utcnow()).replace(day=1) - dt.timedelta(days=1)
    with services.db.write() as session:
        ai_keys.update_key(session, key.id, last_reset_monthly=last_month)
    assert _reserve(services, key.id) is True
    assert _get(services, key.id).monthly_usage == 1


def test_concurrent_reservations_never_exceed_the_daily_limit(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    key = add_key(daily_limit=5)
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def reserve_one() -> None:
        start.wait(THREAD_JOIN_SECS)
        granted = _reserve(services, key.id)
        with lock:
            results.append(granted)

    threads = [threading.Thread(target=reserve_one) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_JOIN_SECS)
    assert len(results) == 20
    assert results.count(True) == 5
    assert _get(services, key.id).daily_usage == 5


def test_failure_counts_and_rests_after_three_in_a_row(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    key = add_key()
    for attempt in range(1, 3):
        with services.db.write() as session:
            ai_keys.record_failure(session, key.id, f"HTTP 500 #{attempt}")
        assert _get(services, key.id).rested_until is None
    with services.db.write() as session:
        ai_keys.record_failure(session, key.id, "HTTP 500 #3", rest_secs=60)
    record = _get(services, key.id)
    assert record.error_count == 3
    assert record.last_error == "HTTP 500 #3" and record.last_error_at is not None
    assert record.rested_until is not None and record.rested_until > utcnow()
    assert _candidates(services) == []


def test_failure_with_rest_rests_at_once(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    key = add_key()
    with services.db.write() as session:
        ai_keys.record_failure(session, key.id, "HTTP 429", rest=True)
    assert _get(services, key.id).rested_until is not None
    assert _candidates(services) == []


def test_success_clears_the_error_streak(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    key = add_key()
    with services.db.write() as session:
        ai_keys.record_failure(session, key.id, "HTTP 500")
        ai_keys.record_failure(session, key.id, "HTTP 500")
        ai_keys.record_success(session, key.id)
    record = _get(services, key.id)
    assert record.error_count == 0 and record.rested_until is None


def test_reset_key_health_clears_streaks_and_rests(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    key = add_key()
    add_key()
    with services.db.write() as session:
        ai_keys.record_failure(session, key.id, "HTTP 429", rest=True)
    with services.db.write() as session:
        assert ai_keys.reset_key_health(session) == 1
    record = _get(services, key.id)
    assert (record.error_count, record.rested_until) == (0, None)
    assert key.id in _candidates(services)


def test_usage_by_day_aggregates_the_key_rows(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    key = add_key()
    other = add_key()
    with services.db.write() as session:
        ai_usage.add_usage_row(session, token_id=key.id, model="m", prompt_tokens=10,
                               completion_tokens=5, response_time=1.0)
        ai_usage.add_usage_row(session, token_id=key.id, model="m", prompt_tokens=3,
                               response_time=3.0, success=False, error_message="HTTP 500")
        ai_usage.add_usage_row(session, token_id=other.id, model="m", prompt_tokens=100)
    with services.db.read() as session:
        days = ai_usage.usage_by_day(session, key.id)
        assert ai_usage.usage_by_day(session, 999_999) == []
    assert len(days) == 1
    day = days[0]
    assert day.date == utcnow().strftime("%Y-%m-%d")
    assert (day.requests, day.tokens, day.successful_requests, day.failed_requests) == (
        2, 18, 1, 1)
    assert day.avg_response_time == 2.0
    assert day.success_rate == 50.0


def test_usage_by_day_ignores_rows_older_than_the_window(
    services: Services, add_key: Callable[..., AiKeyRecord]
) -> None:
    key = add_key()
    with services.db.write() as session:
        ai_usage.add_usage_row(session, token_id=key.id, model="m", prompt_tokens=1)
    later = utcnow() + dt.timedelta(days=40)
    with services.db.read() as session:
        assert ai_usage.usage_by_day(session, key.id, now=later) == []


def test_has_active_key(services: Services, add_key: Callable[..., AiKeyRecord]) -> None:
    with services.db.read() as session:
        assert ai_keys.has_active_key(session) is False
    add_key(is_active=False)
    with services.db.read() as session:
        assert ai_keys.has_active_key(session) is False
    add_key()
    with services.db.read() as session:
        assert ai_keys.has_active_key(session) is True
