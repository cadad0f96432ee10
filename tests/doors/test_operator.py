"""Operator presence and queue doors (spec §5.A): heartbeat, queue, my-dialogs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from handoff_data import T0, add_dialog, set_presence
from starlette.testclient import TestClient

from server.context import Services
from server.store import presence
from server.store.types import utcnow
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]
MakeUser = Callable[..., UserRecord]
HEARTBEAT = "/api/operator/heartbeat"
QUEUE = "/api/operator/queue"
MY_DIALOGS = "/api/operator/my-dialogs"
PRESENCE_FIELDS = {
    "user_id", "status", "last_heartbeat", "max_active_chats_web", "max_active_chats_telegram",
    "active_chats", "updated_at",
}
QUEUE_FIELDS = {
    "dialog_id", "requested_at", "reason", "last_user_text", "wait_time_minutes", "priority",
}


def _iso_time(value: str) -> dt.datetime:
    assert value.endswith("Z")
    return dt.datetime.fromisoformat(value)


# --- heartbeat --------------------------------------------------------------------------------


def test_first_heartbeat_creates_presence_with_default_limits(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    before = utcnow()
    response = client.post(HEARTBEAT, json={"status": "online"}, headers=auth_headers(user))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == PRESENCE_FIELDS
    assert (body["user_id"], body["status"], body["active_chats"]) == (user.id, "online", 0)
    assert (body["max_active_chats_web"], body["max_active_chats_telegram"]) == (3, 5)
    assert _iso_time(body["last_heartbeat"]) >= before.replace(microsecond=0)
    with services.db.read() as session:
        stored = presence.get_presence(session, user.id)
    assert stored is not None and stored.status == "online"


def test_heartbeat_changes_status_and_limits_and_keeps_the_load(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    set_presence(services, user.id, status="online", active_chats=2)
    response = client.post(
        HEARTBEAT,
        json={"status": "away", "max_active_chats_web": 20, "max_active_chats_telegram": 0},
        headers=auth_headers(user),
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["active_chats"]) == ("away", 2)
    assert (body["max_active_chats_web"], body["max_active_chats_telegram"]) == (20, 0)
    offline = client.post(HEARTBEAT, json={"status": "offline"}, headers=auth_headers(user))
    assert offline.json()["status"] == "offline"
    assert offline.json()["max_active_chats_web"] == 20


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"status": "busy"},
        {"status": None},
        {"status": "online", "max_active_chats_web": 21},
        {"status": "online", "max_active_chats_web": -1},
        {"status": "online", "max_active_chats_telegram": 51},
        {"status": "online", "max_active_chats_web": "3"},
        {"status": "online", "max_active_chats_web": True},
        {"status": "online", "max_active_chats_web": 2.5},
        {"status": "online", "user_id": 1},
    ],
)
def test_heartbeat_bad_body_is_422(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers,
    body: dict[str, Any],
) -> None:
    response = client.post(HEARTBEAT, json=body, headers=auth_headers(user))
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    with services.db.read() as session:
        assert presence.get_presence(session, user.id) is None


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\"online\""])
def test_heartbeat_malformed_json_is_422(
    client: TestClient, user: UserRecord, auth_headers: Headers, raw: bytes
) -> None:
    headers = auth_headers(user) | {"Content-Type": "application/json"}
    response = client.post(HEARTBEAT, content=raw, headers=headers)
    assert response.status_code == 422
    assert set(response.json()) == {"detail", "code"}


@pytest.mark.parametrize(
    ("method", "path"), [("POST", HEARTBEAT), ("GET", QUEUE), ("GET", MY_DIALOGS)]
)
def test_operator_doors_need_a_user_token(client: TestClient, method: str, path: str) -> None:
    kwargs: dict[str, Any] = {"json": {"status": "online"}} if method == "POST" else {}
    anonymous = client.request(method, path, **kwargs)
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "unauthorized"
    forged = client.request(method, path, headers={"Authorization": "Bearer not-a-jwt"}, **kwargs)
    assert forged.status_code == 401


# --- queue ------------------------------------------------------------------------------------


def test_queue_lists_own_waiting_dialogs_oldest_first(
    client: TestClient, services: Services, make_user: MakeUser, auth_headers: Headers
) -> None:
    owner, other = make_user(), make_user()
    now = utcnow()
    recent = add_dialog(services, owner.id, status="requested", reason="keyword",
                        requested_at=now - dt.timedelta(minutes=1, seconds=10),
                        messages=[("user", "operator please"), ("assistant", "One moment")])
    overdue = add_dialog(services, owner.id, status="requested", reason="manual",
                         requested_at=now - dt.timedelta(minutes=6))
    add_dialog(services, owner.id, status="active", started_at=now)
    add_dialog(services, other.id, status="requested", requested_at=now - dt.timedelta(hours=1))
    response = client.get(QUEUE, headers=auth_headers(owner))
    assert response.status_code == 200
    items = response.json()
    assert [item["dialog_id"] for item in items] == [overdue, recent]
    assert all(set(item) == QUEUE_FIELDS for item in items)
    first, second = items
    assert (first["reason"], first["last_user_text"], first["priority"]) == (
        "manual", None, "high")
    assert first["wait_time_minutes"] >= 6
    assert (second["reason"], second["last_user_text"], second["priority"]) == (
        "keyword", "operator please", "normal")
    assert second["wait_time_minutes"] == 1
    assert _iso_time(second["requested_at"]) <= utcnow()


def test_queue_of_another_tenant_is_empty_for_me(
    client: TestClient, services: Services, make_user: MakeUser, auth_headers: Headers
) -> None:
    owner, stranger = make_user(), make_user()
    add_dialog(services, owner.id, status="requested", requested_at=T0)
    response = client.get(QUEUE, headers=auth_headers(stranger))
    assert response.status_code == 200 and response.json() == []


def test_admin_sees_every_tenants_queue(
    client: TestClient, services: Services, make_user: MakeUser, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    first_owner, second_owner = make_user(), make_user()
    later = add_dialog(services, first_owner.id, status="requested", requested_at=T0)
    earlier = add_dialog(services, second_owner.id, status="requested",
                         requested_at=T0 - dt.timedelta(minutes=1))
    response = client.get(QUEUE, headers=auth_headers(admin))
    assert [item["dialog_id"] for item in response.json()] == [earlier, later]


# --- my dialogs -------------------------------------------------------------------------------


def test_my_dialogs_lists_the_active_dialogs_assigned_to_me(
    client: TestClient, services: Services, make_user: MakeUser, auth_headers: Headers
) -> None:
    owner, colleague = make_user(), make_user()
    mine = add_dialog(services, owner.id, status="active", manager_id=owner.id, started_at=T0,
                      first_name="Ivan", last_name=None,
                      messages=[("user", "hello"), ("manager", "Hi Ivan, how can I help?")])
    quiet = add_dialog(services, owner.id, status="active", manager_id=owner.id,
                       started_at=T0 + dt.timedelta(minutes=1))
    add_dialog(services, owner.id, status="active", manager_id=colleague.id, started_at=T0)
    add_dialog(services, owner.id, status="released", messages=[("user", "bye")])
    response = client.get(MY_DIALOGS, headers=auth_headers(owner))
    assert response.status_code == 200
    body = response.json()
    assert [item["id"] for item in body] == [mine, quiet]
    assert set(body[0]) == {"id", "started_at", "handoff_started_at", "last_message", "user_info"}
    assert body[0]["last_message"] == {
        "text": "Hi Ivan, how can I help?", "sender": "manager",
        "timestamp": "2025-03-01T12:00:02Z",
    }
    assert body[0]["user_info"] == {"first_name": "Ivan", "last_name": None}
    assert body[0]["handoff_started_at"] == "2025-03-01T12:00:00Z"
    assert body[0]["started_at"].endswith("Z")
    assert body[1]["last_message"] is None
    colleague_view = client.get(MY_DIALOGS, headers=auth_headers(colleague)).json()
    assert len(colleague_view) == 1 and colleague_view[0]["id"] not in (mine, quiet)
