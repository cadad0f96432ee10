"""Operator presence and the handoff queue in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from handoff_data import T0, add_dialog, set_presence
from sqlalchemy import event

from server.actors.handoff import OperatorCapacity
from server.context import Services
from server.store import presence
from server.store.presence import PresenceRecord
from server.store.users import UserRecord

THREAD_JOIN_SECS = 60
MakeUser = Callable[..., UserRecord]


def _get(services: Services, user_id: int) -> PresenceRecord | None:
    with services.db.read() as session:
        return presence.get_presence(session, user_id)


def _reserve(services: Services, user_id: int, channel: str = "web") -> str | None:
    with services.db.write() as session:
        return presence.reserve_slot(session, user_id, channel, T0)


@pytest.fixture
def count_statements(services: Services) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(services.db.engine, "before_cursor_execute", record)
    yield statements
    event.remove(services.db.engine, "before_cursor_execute", record)


# --- heartbeat --------------------------------------------------------------------------------


def test_first_heartbeat_creates_the_row_with_default_limits(
    services: Services, user: UserRecord
) -> None:
    with services.db.write() as session:
        record = presence.heartbeat(session, user.id, "online", T0)
    assert record.user_id == user.id and record.status == "online"
    assert record.last_heartbeat == T0 and record.updated_at == T0
    assert (record.max_active_chats_web, record.max_active_chats_telegram) == (3, 5)
    assert record.active_chats == 0


def test_heartbeat_updates_status_time_and_limits_but_not_the_load(
    services: Services, user: UserRecord
) -> None:
    set_presence(services, user.id, status="online", active_chats=2)
    later = T0 + dt.timedelta(seconds=30)
    with services.db.write() as session:
        record = presence.heartbeat(session, user.id, "away", later, max_active_chats_web=7)
    assert record.status == "away" and record.last_heartbeat == later
    assert (record.max_active_chats_web, record.max_active_chats_telegram) == (7, 5)
    assert record.active_chats == 2
    with services.db.write() as session:
        record = presence.heartbeat(session, user.id, "offline", later,
                                    max_active_chats_telegram=0)
    assert (record.status, record.max_active_chats_web, record.max_active_chats_telegram) == (
        "offline", 7, 0)


@pytest.mark.parametrize(
    ("status", "limits"),
    [("busy", {}), ("online", {"max_active_chats_web": 21}),
     ("online", {"max_active_chats_telegram": -1})],
)
def test_heartbeat_refuses_unknown_status_and_limits_out_of_range(
    services: Services, user: UserRecord, status: str, limits: dict[str, int]
) -> None:
    with pytest.raises(ValueError), services.db.write() as session:
        presence.heartbeat(session, user.id, status, T0, **limits)
    assert _get(services, user.id) is None


# --- capacity and reservations ----------------------------------------------------------------


def test_capacity_without_a_row_is_a_fresh_online_row(services: Services, user: UserRecord) -> None:
    with services.db.read() as session:
        assert presence.capacity(session, user.id, "web") == OperatorCapacity("online", 0, 3)
        assert presence.capacity(session, user.id, "telegram") == OperatorCapacity("online", 0, 5)


def test_capacity_uses_the_limit_of_the_dialogs_channel(services: Services, user: UserRecord) -> None:
    set_presence(services, user.id, status="away", active_chats=2, max_active_chats_web=2,
                 max_active_chats_telegram=4)
    with services.db.read() as session:
        assert presence.capacity(session, user.id, "web") == OperatorCapacity("away", 2, 2)
        assert presence.capacity(session, user.id, "telegram") == OperatorCapacity("away", 2, 4)


def test_reserve_creates_a_missing_row_online_and_takes_a_slot(
    services: Services, user: UserRecord
) -> None:
    assert _reserve(services, user.id) is None
    record = _get(services, user.id)
    assert record is not None
    assert (record.status, record.active_chats, record.max_active_chats_web) == ("online", 1, 3)


def test_reserve_refuses_an_operator_who_is_not_online(services: Services, user: UserRecord) -> None:
    set_presence(services, user.id, status="away")
    assert _reserve(services, user.id) == OperatorCapacity("away", 0, 3).refusal()
    assert _reserve(services, user.id) == "operator is not online (presence: away)"
    record = _get(services, user.id)
    assert record is not None and record.active_chats == 0


def test_reserve_refuses_at_the_channels_limit(services: Services, user: UserRecord) -> None:
    set_presence(services, user.id, status="online", active_chats=1, max_active_chats_web=2,
                 max_active_chats_telegram=3)
    assert _reserve(services, user.id, "web") is None
    assert _reserve(services, user.id, "web") == "operator is at capacity (2/2 active chats)"
    assert _reserve(services, user.id, "telegram") is None
    assert _reserve(services, user.id, "telegram") == "operator is at capacity (3/3 active chats)"
    record = _get(services, user.id)
    assert record is not None and record.active_chats == 3


@pytest.mark.parametrize("row_exists", [True, False])
def test_concurrent_reservations_against_capacity_three_exactly_three_succeed(
    services: Services, user: UserRecord, row_exists: bool
) -> None:
    if row_exists:
        set_presence(services, user.id, status="online")
    results: list[str | None] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def reserve_one() -> None:
        start.wait(THREAD_JOIN_SECS)
        outcome = _reserve(services, user.id)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=reserve_one) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_JOIN_SECS)
    assert len(results) == 12
    assert results.count(None) == 3
    assert set(results) - {None} == {"operator is at capacity (3/3 active chats)"}
    record = _get(services, user.id)
    assert record is not None and record.active_chats == 3


def test_release_gives_a_slot_back_and_never_goes_below_zero(
    services: Services, user: UserRecord
) -> None:
    set_presence(services, user.id, status="online", active_chats=1)
    for _ in range(3):
        with services.db.write() as session:
            presence.release_slot(session, user.id)
    record = _get(services, user.id)
    assert record is not None and record.active_chats == 0
    with services.db.write() as session:
        presence.release_slot(session, user.id + 1000)  # no row: nothing to do, no error


# --- staleness and drift ----------------------------------------------------------------------


def test_mark_stale_offline_returns_only_the_operators_that_just_went_offline(
    services: Services, make_user: MakeUser
) -> None:
    stale_online, stale_away, fresh, already_off, never = (make_user() for _ in range(5))
    old = T0 - dt.timedelta(seconds=91)
    set_presence(services, stale_online.id, status="online", last_heartbeat=old)
    set_presence(services, stale_away.id, status="away", last_heartbeat=old)
    set_presence(services, fresh.id, status="online", last_heartbeat=T0 - dt.timedelta(seconds=89))
    set_presence(services, already_off.id, status="offline", last_heartbeat=old)
    set_presence(services, never.id, status="online", last_heartbeat=None)
    with services.db.write() as session:
        gone = presence.mark_stale_offline(session, T0, 90)
    assert gone == sorted([stale_online.id, stale_away.id, never.id])
    with services.db.write() as session:
        assert presence.mark_stale_offline(session, T0, 90) == []
    fresh_record = _get(services, fresh.id)
    assert fresh_record is not None and fresh_record.status == "online"
    away_record = _get(services, stale_away.id)
    assert away_record is not None and away_record.status == "offline"


def test_resync_sets_each_counter_to_the_active_dialogs_held(
    services: Services, make_user: MakeUser
) -> None:
    owner, busy, idle, exact = (make_user() for _ in range(4))
    for _ in range(2):
        add_dialog(services, owner.id, status="active", manager_id=busy.id, started_at=T0)
    add_dialog(services, owner.id, status="active", manager_id=exact.id, started_at=T0)
    add_dialog(services, owner.id, status="released", manager_id=None)
    add_dialog(services, owner.id, status="requested", requested_at=T0)
    set_presence(services, busy.id, status="online", active_chats=0)   # drifted low
    set_presence(services, idle.id, status="online", active_chats=4)   # drifted high
    set_presence(services, exact.id, status="online", active_chats=1)  # right
    with services.db.write() as session:
        assert presence.resync_active_chats(session) == 2
    loads = {uid: _get(services, uid) for uid in (busy.id, idle.id, exact.id)}
    assert {uid: record.active_chats for uid, record in loads.items() if record} == {
        busy.id: 2, idle.id: 0, exact.id: 1}
    with services.db.write() as session:
        assert presence.resync_active_chats(session) == 0


def test_active_dialog_ids_lists_only_the_operators_active_dialogs(
    services: Services, make_user: MakeUser
) -> None:
    owner, operator, other = (make_user() for _ in range(3))
    first = add_dialog(services, owner.id, status="active", manager_id=operator.id)
    add_dialog(services, owner.id, status="active", manager_id=other.id)
    add_dialog(services, owner.id, status="requested", requested_at=T0)
    second = add_dialog(services, owner.id, status="active", manager_id=operator.id)
    with services.db.read() as session:
        assert presence.active_dialog_ids(session, operator.id) == [first, second]
        assert presence.active_dialog_ids(session, owner.id) == []


# --- the queue and the operator's dialogs -----------------------------------------------------


def test_queue_is_oldest_first_with_the_last_visitor_text(
    services: Services, make_user: MakeUser
) -> None:
    owner = make_user()
    later = add_dialog(services, owner.id, status="requested", requested_at=T0, reason="keyword",
                       messages=[("user", "first"), ("user", "I need a human"),
                                 ("assistant", "Let me help"), ("system", "switching")])
    earlier = add_dialog(services, owner.id, status="requested", channel="telegram",
                         requested_at=T0 - dt.timedelta(minutes=2), reason="manual")
    add_dialog(services, owner.id, status="active", started_at=T0, messages=[("user", "x")])
    with services.db.read() as session:
        queue = presence.handoff_queue(session, owner.id)
    assert [entry.dialog_id for entry in queue] == [earlier, later]
    assert queue[0].last_user_text is None and queue[0].channel == "telegram"
    assert queue[1].last_user_text == "I need a human"
    assert (queue[1].reason, queue[1].requested_at, queue[1].owner_id) == (
        "keyword", T0, owner.id)


def test_queue_of_an_owner_excludes_other_tenants_and_none_includes_all(
    services: Services, make_user: MakeUser
) -> None:
    mine, theirs = make_user(), make_user()
    own = add_dialog(services, mine.id, status="requested", requested_at=T0)
    foreign = add_dialog(services, theirs.id, status="requested",
                         requested_at=T0 - dt.timedelta(minutes=1))
    with services.db.read() as session:
        assert [e.dialog_id for e in presence.handoff_queue(session, mine.id)] == [own]
        assert [e.dialog_id for e in presence.handoff_queue(session, None)] == [foreign, own]


def test_queue_is_one_query_however_many_dialogs_wait(
    services: Services, user: UserRecord, count_statements: list[str]
) -> None:
    for minute in range(6):
        add_dialog(services, user.id, status="requested",
                   requested_at=T0 + dt.timedelta(minutes=minute),
                   messages=[("user", f"help {minute}")])
    count_statements.clear()
    with services.db.read() as session:
        queue = presence.handoff_queue(session, user.id)
    assert [entry.last_user_text for entry in queue] == [f"help {m}" for m in range(6)]
    assert len([s for s in count_statements if s.lstrip().upper().startswith("SELECT")]) == 1


def test_operator_dialogs_carry_the_latest_message_and_the_visitor_name(
    services: Services, make_user: MakeUser, count_statements: list[str]
) -> None:
    owner, operator = make_user(), make_user()
    talking = add_dialog(services, owner.id, status="active", manager_id=operator.id,
                         started_at=T0, first_name="Ann", last_name="Lee",
                         messages=[("user", "hi"), ("manager", "Hello Ann")])
    silent = add_dialog(services, owner.id, status="active", manager_id=operator.id,
                        started_at=T0 + dt.timedelta(minutes=1))
    add_dialog(services, owner.id, status="released", manager_id=None, messages=[("user", "x")])
    count_statements.clear()
    with services.db.read() as session:
        dialogs = presence.operator_dialogs(session, operator.id)
    assert len([s for s in count_statements if s.lstrip().upper().startswith("SELECT")]) == 1
    assert [d.id for d in dialogs] == [talking, silent]
    first = dialogs[0]
    assert (first.first_name, first.last_name, first.handoff_started_at) == ("Ann", "Lee", T0)
    assert first.last_message is not None
    assert (first.last_message.text, first.last_message.sender) == ("Hello Ann", "manager")
    assert first.last_message.timestamp == T0 + dt.timedelta(seconds=2)
    assert dialogs[1].last_message is None
