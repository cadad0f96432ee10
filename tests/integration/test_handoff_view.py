"""`HandoffStatusOut` and queue items (server/handoff_view.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from handoff_data import T0, add_dialog

from server.actors.handoff import HandoffState, HandoffStatus
from server.config import Settings
from server.context import Services
from server.handoff_view import (
    handoff_status_out,
    queue_item,
    render_handoff_status,
    sla_minutes,
)
from server.store.models import Dialog
from server.store.presence import QueueEntry
from server.store.users import UserRecord

MakeUser = Callable[..., UserRecord]
SLA = {"web": 5, "telegram": 3}
STATUS_FIELDS = {
    "status", "assigned_manager", "requested_at", "started_at", "resolved_at", "reason",
    "request_id", "queue_position", "estimated_wait_minutes", "sla_deadline",
}


def _status(services: Services, dialog_id: int) -> dict[str, object]:
    with services.db.read() as session:
        dialog = session.get(Dialog, dialog_id)
        assert dialog is not None
        return handoff_status_out(session, dialog, T0, SLA)


def test_queue_position_counts_only_the_same_owners_earlier_requests(
    services: Services, make_user: MakeUser
) -> None:
    owner, other = make_user(), make_user()
    add_dialog(services, owner.id, status="requested", requested_at=T0 - dt.timedelta(minutes=3))
    add_dialog(services, owner.id, status="active", started_at=T0)
    add_dialog(services, other.id, status="requested", requested_at=T0 - dt.timedelta(minutes=9))
    tie_first = add_dialog(services, owner.id, status="requested", requested_at=T0,
                           reason="keyword")
    tie_second = add_dialog(services, owner.id, status="requested", requested_at=T0)
    add_dialog(services, owner.id, status="requested", requested_at=T0 + dt.timedelta(minutes=1))

    body = _status(services, tie_first)
    assert set(body) == STATUS_FIELDS
    assert (body["status"], body["reason"], body["queue_position"]) == ("requested", "keyword", 2)
    assert body["estimated_wait_minutes"] == 6
    assert body["requested_at"] == "2025-03-01T12:00:00Z"
    assert body["sla_deadline"] == "2025-03-01T12:05:00Z"
    assert body["assigned_manager"] is None
    assert _status(services, tie_second)["queue_position"] == 3


def test_sla_deadline_follows_the_channel(services: Services, user: UserRecord) -> None:
    dialog_id = add_dialog(services, user.id, status="requested", requested_at=T0,
                           channel="telegram")
    assert _status(services, dialog_id)["sla_deadline"] == "2025-03-01T12:03:00Z"


def test_an_active_dialog_names_its_manager_and_has_no_queue_fields(
    services: Services, make_user: MakeUser
) -> None:
    owner = make_user()
    named = make_user(first_name="  Olga ")
    unnamed = make_user()
    with_name = add_dialog(services, owner.id, status="active", manager_id=named.id,
                           requested_at=T0, started_at=T0 + dt.timedelta(minutes=1))
    without_name = add_dialog(services, owner.id, status="active", manager_id=unnamed.id,
                              started_at=T0)
    body = _status(services, with_name)
    assert body["assigned_manager"] == {"id": named.id, "name": "Olga", "avatar": None}
    assert body["started_at"] == "2025-03-01T12:01:00Z"
    assert (body["queue_position"], body["estimated_wait_minutes"], body["sla_deadline"]) == (
        None, None, None)
    assert _status(services, without_name)["assigned_manager"] == {
        "id": unnamed.id, "name": f"User #{unnamed.id}", "avatar": None}


def test_render_from_the_actors_state_matches_the_row(services: Services, user: UserRecord) -> None:
    dialog_id = add_dialog(services, user.id, status="requested", requested_at=T0,
                           reason="manual")
    state = HandoffState(status=HandoffStatus.REQUESTED, reason="manual", requested_at=T0)
    with services.db.read() as session:
        rendered = render_handoff_status(session, dialog_id=dialog_id, owner_id=user.id,
                                         channel="web", state=state, sla=SLA)
    assert rendered == _status(services, dialog_id)


def test_sla_minutes_come_from_the_settings() -> None:
    settings = Settings.from_env({"HANDOFF_SLA_WEB_MINUTES": "7",
                                  "HANDOFF_SLA_TELEGRAM_MINUTES": "2"})
    assert sla_minutes(settings) == {"web": 7, "telegram": 2}
    assert sla_minutes(Settings.from_env({})) == {"web": 5, "telegram": 3}


@pytest.mark.parametrize(
    ("channel", "waited", "wait_minutes", "priority"),
    [("web", dt.timedelta(minutes=4, seconds=59), 4, "normal"),
     ("web", dt.timedelta(minutes=5), 5, "high"),
     ("telegram", dt.timedelta(minutes=3), 3, "high"),
     ("web", -dt.timedelta(seconds=5), 0, "normal")],
)
def test_queue_item_wait_and_priority(
    channel: str, waited: dt.timedelta, wait_minutes: int, priority: str
) -> None:
    entry = QueueEntry(dialog_id=9, owner_id=1, channel=channel, requested_at=T0,
                       reason="keyword", last_user_text="x" * 1500)
    item = queue_item(entry, T0 + waited, SLA)
    assert item == {
        "dialog_id": 9, "requested_at": "2025-03-01T12:00:00Z", "reason": "keyword",
        "last_user_text": "x" * 1000, "wait_time_minutes": wait_minutes, "priority": priority,
    }
