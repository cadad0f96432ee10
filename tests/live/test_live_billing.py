"""What a visitor sees when the owner's balance cannot pay for an AI answer (DESIGN.md §7):
over REST the 402 of spec §1.2; in a live chat a system message and the operator queue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from fakes.fixtures import fake_openai  # noqa: F401
from fakes.openai_server import FakeOpenAI, reply
from live_data import open_visitor, say
from server.context import Services
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]


@pytest.fixture
def settings_env(fake_openai: FakeOpenAI) -> dict[str, str]:  # noqa: F811
    return {"OPENAI_API_KEY": "sk-live", "OPENAI_BASE_URL": fake_openai.base_url}


def receive_until(socket: Any, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    seen = []
    for _ in range(100):
        frame = socket.receive_json()
        seen.append(frame)
        if predicate(frame):
            return seen
    raise AssertionError(f"no matching frame in {seen}")


def test_a_rest_visitor_gets_402_when_the_owner_cannot_pay(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers,
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    fake_openai.enqueue(reply("never sent"))
    visitor = open_visitor(client, services, user, auth_headers(user))

    response = say(client, visitor, "How much is shipping?")

    assert response.status_code == 402, response.text
    assert response.json()["detail"]["needsTopUp"] is True
    assert fake_openai.requests == []


def test_a_live_visitor_is_queued_for_a_human_when_the_owner_cannot_pay(
    client: TestClient, services: Services, user: UserRecord, auth_headers: Headers,
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    visitor = open_visitor(client, services, user, auth_headers(user))
    query = f"site_token={visitor.site_token}&guest_id={visitor.guest_id}&since=0"
    with client.websocket_connect(f"/ws/site/dialogs/{visitor.dialog_id}?{query}") as ws:
        receive_until(ws, lambda f: f["type"] == "ready")
        ws.send_json({"type": "message", "text": "How much is shipping?"})
        frames = receive_until(ws, lambda f: f["type"] == "handoff_requested")

    texts = [f["message"]["text"] for f in frames if f["type"] == "message:new"]
    assert texts[0] == "How much is shipping?"
    assert "unavailable" in texts[1]
    assert frames[-1]["handoff"]["status"] == "requested"
    assert frames[-1]["handoff"]["reason"] == "fallback"
    assert not any(f["type"] == "ai_delta" for f in frames)
    assert fake_openai.requests == []
