"""The live chat over REST: visitor messages answered by the AI (offline responder here),
handoff request → takeover → operator reply → release, all through the dialog's actor."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from starlette.testclient import TestClient

from live_data import open_visitor, request_handoff, say
from server.context import Services
from server.store.models import DialogMessage, HandoffAudit
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]


def stored(services: Services, dialog_id: int) -> list[tuple[int, str, str | None]]:
    with services.db.read() as session:
        rows = session.execute(
            select(DialogMessage.seq, DialogMessage.sender, DialogMessage.system_type)
            .where(DialogMessage.dialog_id == dialog_id).order_by(DialogMessage.seq)
        ).all()
    return [tuple(row) for row in rows]


def test_a_visitor_message_is_stored_and_answered(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    visitor = open_visitor(client, services, user, auth_headers(user))

    response = say(client, visitor, "Hello, what are your opening hours?")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_message"]["sender"] == "user"
    assert body["user_message"]["seq"] == 1
    assert body["assistant_message"]["sender"] == "assistant"
    assert body["assistant_message"]["seq"] == 2
    assert stored(services, visitor.dialog_id) == [(1, "user", None), (2, "assistant", None)]


def test_a_repeated_client_message_id_is_stored_once(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    visitor = open_visitor(client, services, user, auth_headers(user))

    first = say(client, visitor, "Hi", client_message_id="c-1")
    again = say(client, visitor, "Hi", client_message_id="c-1")

    assert first.status_code == again.status_code == 200
    assert again.json()["user_message"]["id"] == first.json()["user_message"]["id"]
    assert [row for row in stored(services, visitor.dialog_id) if row[1] == "user"] == [
        (1, "user", None)]


def test_handoff_takeover_reply_and_release(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    headers = auth_headers(user)
    visitor = open_visitor(client, services, user, headers)

    requested = request_handoff(client, visitor)
    assert requested.status_code == 200, requested.text
    assert requested.json()["status"] == "requested"
    assert requested.json()["queue_position"] == 1

    # While a human is awaited the AI stays silent.
    waiting = say(client, visitor, "Are you there?")
    assert waiting.json()["assistant_message"] is None

    taken = client.post(f"/api/dialogs/{visitor.dialog_id}/handoff/takeover", json={},
                        headers=headers)
    assert taken.status_code == 200, taken.text
    assert taken.json()["status"] == "active"
    assert taken.json()["assigned_manager"]["id"] == user.id

    reply = client.post(f"/api/dialogs/{visitor.dialog_id}/messages",
                        json={"text": "Hi, I am Anna", "sender": "manager"}, headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["sender"] == "manager"

    released = client.post(f"/api/dialogs/{visitor.dialog_id}/handoff/release", json={},
                           headers=headers)
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "released"

    again = client.post(f"/api/dialogs/{visitor.dialog_id}/handoff/release", json={},
                        headers=headers)
    assert again.status_code == 409
    assert "current state: released" in again.json()["detail"]

    assert stored(services, visitor.dialog_id) == [
        (1, "system", "handoff_requested"),
        (2, "user", None),
        (3, "system", "handoff_started"),
        (4, "manager", None),
        (5, "system", "handoff_released"),
    ]
    with services.db.read() as session:
        transitions = session.execute(
            select(HandoffAudit.from_status, HandoffAudit.to_status)
            .where(HandoffAudit.dialog_id == visitor.dialog_id).order_by(HandoffAudit.id)
        ).all()
    assert [tuple(t) for t in transitions] == [
        ("none", "requested"), ("requested", "active"), ("active", "released")]


def test_asking_for_an_operator_in_words_requests_a_handoff(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    visitor = open_visitor(client, services, user, auth_headers(user))

    response = say(client, visitor, "I want to talk to a real person please")

    assert response.status_code == 200, response.text
    assert response.json()["handoff_triggered"] is True
    assert response.json()["handoff_status"] == "requested"
    assert stored(services, visitor.dialog_id) == [(1, "user", None),
                                                   (2, "system", "handoff_requested")]
