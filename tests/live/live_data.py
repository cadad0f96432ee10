"""Shared set-up of the live-chat tests: an owner with an assistant, its site token, a visitor's
dialog, and short helpers for the REST calls of the widget and the operator."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from starlette.testclient import TestClient

from server.context import Services
from server.store import dialogs as dialog_store
from server.store.users import UserRecord

SITE = "https://shop.example"


@dataclasses.dataclass(frozen=True)
class Visitor:
    dialog_id: int
    site_token: str
    guest_id: str
    assistant_id: int

    @property
    def params(self) -> dict[str, str]:
        return {"site_token": self.site_token, "guest_id": self.guest_id}


def make_assistant(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"name": "Helper", "allowed_domains": SITE, **fields}
    response = client.post("/api/assistants", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def site_token(client: TestClient, headers: dict[str, str], assistant_id: int) -> str:
    response = client.get(f"/api/assistants/{assistant_id}/embed-code", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["token"]


def open_visitor(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str],
    guest_id: str | None = None, assistant: dict[str, Any] | None = None,
) -> Visitor:
    assistant = assistant or make_assistant(client, headers)
    token = site_token(client, headers, assistant["id"])
    guest = guest_id or f"guest-{uuid.uuid4().hex[:8]}"
    with services.db.write() as session:
        dialog_id = dialog_store.get_or_create_guest_dialog(
            session, owner.id, guest, "web", assistant_id=assistant["id"])
    return Visitor(dialog_id, token, guest, assistant["id"])


def say(client: TestClient, visitor: Visitor, text: str, **extra: Any) -> Any:
    return client.post(f"/api/site/dialogs/{visitor.dialog_id}/messages",
                       params=visitor.params, json={"text": text, **extra})


def request_handoff(client: TestClient, visitor: Visitor, request_id: str | None = None) -> Any:
    return client.post(f"/api/dialogs/{visitor.dialog_id}/handoff/request", params=visitor.params,
                       json={"request_id": request_id or str(uuid.uuid4())})
