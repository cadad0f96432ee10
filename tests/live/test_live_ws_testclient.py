"""The WebSocket doors through Starlette's test client: resume, live fan-out, the AI answer
streamed, takeover over REST seen on the visitor's socket, and refusals with close codes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from live_data import open_visitor, say
from server.context import Services
from server.errors import CloseCode
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]


def receive_until(socket: Any, predicate: Callable[[dict[str, Any]], bool],
                  limit: int = 200) -> list[dict[str, Any]]:
    seen = []
    for _ in range(limit):
        frame = socket.receive_json()
        seen.append(frame)
        if predicate(frame):
            return seen
    raise AssertionError(f"no matching frame in {seen}")


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].split(" ", 1)[1]


def test_visitor_and_operator_sockets_see_the_conversation(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    headers = auth_headers(user)
    visitor = open_visitor(client, services, user, headers)
    say(client, visitor, "First question about prices")  # seq 1 and its answer, seq 2
    query = f"site_token={visitor.site_token}&guest_id={visitor.guest_id}"

    with client.websocket_connect(f"/ws/site/dialogs/{visitor.dialog_id}?{query}&since=0") as ws, \
            client.websocket_connect(
                f"/ws/dialogs/{visitor.dialog_id}?token={token_of(headers)}&since=2") as op:
        replayed = receive_until(ws, lambda f: f["type"] == "ready")
        assert [f["seq"] for f in replayed if f["type"] == "message:new"] == [1, 2]
        assert replayed[-1] == {"type": "ready", "dialog_id": visitor.dialog_id, "seq": 2}
        assert receive_until(op, lambda f: f["type"] == "ready")[-1]["seq"] == 2

        ws.send_json({"type": "message", "text": "And delivery?", "client_message_id": "m-1"})
        frames = receive_until(ws, lambda f: f["type"] == "message:new"
                               and f["message"]["sender"] == "assistant")
        kinds = [f["type"] for f in frames]
        assert kinds[0] == "message:new" and frames[0]["message"]["client_message_id"] == "m-1"
        assert "typing_start" in kinds and "ai_delta" in kinds
        assert frames[-1]["seq"] == 4
        op_frames = receive_until(op, lambda f: f["type"] == "message:new" and f["seq"] == 4)
        assert [f["seq"] for f in op_frames if f["type"] == "message:new"] == [3, 4]

        taken = client.post(f"/api/dialogs/{visitor.dialog_id}/takeover", headers=headers)
        assert taken.status_code == 200, taken.text
        started = receive_until(ws, lambda f: f["type"] == "handoff_started")
        assert started[-1]["manager"]["id"] == user.id
        assert started[-1]["handoff"]["status"] == "active"

        op.send_json({"type": "message", "text": "Hello from a human"})
        got = receive_until(ws, lambda f: f["type"] == "message:new"
                            and f["message"]["sender"] == "manager")
        assert got[-1]["message"]["text"] == "Hello from a human"


def test_bad_frames_get_error_frames_and_the_socket_lives_on(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    visitor = open_visitor(client, services, user, auth_headers(user))
    query = f"site_token={visitor.site_token}&guest_id={visitor.guest_id}&since=0"
    with client.websocket_connect(f"/ws/site/dialogs/{visitor.dialog_id}?{query}") as ws:
        receive_until(ws, lambda f: f["type"] == "ready")
        ws.send_text("not json")
        assert ws.receive_json()["type"] == "error"
        ws.send_json({"type": "message", "text": ""})
        assert ws.receive_json()["type"] == "error"
        ws.send_text("__ping__")
        assert ws.receive_text() == "__pong__"


@pytest.mark.parametrize("case", ["other_guest", "bad_token", "missing_dialog", "operator_feed"])
def test_refusals_close_with_their_codes(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers,
    make_user: Callable[..., UserRecord], case: str,
) -> None:
    visitor = open_visitor(client, services, user, auth_headers(user))
    stranger = make_user()
    paths = {
        "other_guest": (f"/ws/site/dialogs/{visitor.dialog_id}?site_token={visitor.site_token}"
                        "&guest_id=someone-else", CloseCode.FORBIDDEN),
        "bad_token": (f"/ws/site/dialogs/{visitor.dialog_id}?site_token=garbage"
                      f"&guest_id={visitor.guest_id}", CloseCode.CREDENTIAL_INVALID),
        "missing_dialog": (f"/ws/site/dialogs/999999?site_token={visitor.site_token}"
                           f"&guest_id={visitor.guest_id}", CloseCode.NOT_FOUND),
        "operator_feed": (f"/ws/dialogs/{visitor.dialog_id}?token="
                          f"{token_of(auth_headers(stranger))}", CloseCode.FORBIDDEN),
    }
    path, code = paths[case]
    with pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect(path) as ws:
            ws.receive_json()
    assert closed.value.code == code



def test_the_received_notice_goes_to_the_visitor_only(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    headers = auth_headers(user)
    visitor = open_visitor(client, services, user, headers)
    assert client.post(f"/api/dialogs/{visitor.dialog_id}/takeover",
                       headers=headers).status_code == 200
    query = f"site_token={visitor.site_token}&guest_id={visitor.guest_id}"
    with client.websocket_connect(f"/ws/site/dialogs/{visitor.dialog_id}?{query}&since=0") as ws, \
            client.websocket_connect(
                f"/ws/dialogs/{visitor.dialog_id}?token={token_of(headers)}&since=0") as op:
        receive_until(ws, lambda f: f["type"] == "ready")
        receive_until(op, lambda f: f["type"] == "ready")

        ws.send_json({"type": "message", "text": "Hello?"})
        ws.send_json({"type": "message", "text": "Still there?"})
        seen_by_visitor = receive_until(ws, lambda f: f["type"] == "message_received"
                                        and f["seq"] == 3)
        seen_by_operator = receive_until(op, lambda f: f["type"] == "message:new"
                                         and f["seq"] == 3)

    assert [f["type"] for f in seen_by_visitor].count("message_received") == 2
    assert all(f["type"] != "message_received" for f in seen_by_operator)


@pytest.mark.parametrize("change", ["rotate", "new_domains", "delete"])
def test_changing_the_assistant_closes_sockets_of_older_site_tokens(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers, change: str
) -> None:
    headers = auth_headers(user)
    visitor = open_visitor(client, services, user, headers)
    query = f"site_token={visitor.site_token}&guest_id={visitor.guest_id}&since=0"
    assistant = f"/api/assistants/{visitor.assistant_id}"
    with pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect(f"/ws/site/dialogs/{visitor.dialog_id}?{query}") as ws:
            receive_until(ws, lambda f: f["type"] == "ready")
            if change == "rotate":
                response = client.post(assistant + "/embed-code/rotate", headers=headers)
            elif change == "new_domains":
                response = client.patch(assistant, json={"allowed_domains": "other.example"},
                                        headers=headers)
            else:
                response = client.delete(assistant, headers=headers)
            assert response.status_code == 200, response.text
            for _ in range(20):
                ws.receive_json()
    assert closed.value.code == CloseCode.CREDENTIAL_INVALID


def test_an_unrelated_edit_keeps_the_socket_open(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers
) -> None:
    headers = auth_headers(user)
    visitor = open_visitor(client, services, user, headers)
    query = f"site_token={visitor.site_token}&guest_id={visitor.guest_id}&since=0"
    with client.websocket_connect(f"/ws/site/dialogs/{visitor.dialog_id}?{query}") as ws:
        receive_until(ws, lambda f: f["type"] == "ready")
        response = client.patch(f"/api/assistants/{visitor.assistant_id}",
                                json={"name": "Renamed"}, headers=headers)
        assert response.status_code == 200, response.text
        ws.send_json({"type": "message", "text": "still here", "client_message_id": "k-1"})
        echoed = receive_until(ws, lambda f: f["type"] == "message:new")
    assert echoed[-1]["message"]["client_message_id"] == "k-1"
