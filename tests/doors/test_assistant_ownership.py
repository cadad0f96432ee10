"""Every `/api/assistants/{assistant_id}…` endpoint answers 404 for another tenant's assistant
(for an admin too: spec §4.3 gives admins no access here) and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from assistant_data import (
    Headers,
    add_bot,
    add_dialog,
    add_document,
    add_knowledge,
    count,
    create_assistant,
    stored,
)
from starlette.testclient import TestClient

from server.context import Services
from server.store.models import BotInstance, Dialog, Document, KnowledgeChunk, UserKnowledge

A = "/api/assistants/{id}"

# (method, path template, JSON body) — one row per endpoint of the module with an assistant id.
CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", A, None),
    ("PATCH", A, {"name": "Hijacked", "allowed_domains": "evil.example"}),
    ("DELETE", A, None),
    ("GET", A + "/settings", None),
    ("GET", A + "/stats", None),
    ("POST", A + "/website-integration", {"enabled": False}),
    ("GET", A + "/knowledge", None),
    ("GET", A + "/documents", None),
    ("POST", A + "/validate-knowledge", None),
    ("GET", A + "/widget-settings", None),
    ("POST", A + "/widget-settings", {"widget_settings": {"x": 1}, "allowed_domains": "evil.ex"}),
    ("GET", A + "/embed-code", None),
    ("POST", A + "/embed-code/rotate", None),
]


def snapshot(services: Services, assistant_id: int) -> dict[str, Any]:
    return {
        "assistant": stored(services, assistant_id),
        "knowledge": count(services, UserKnowledge, UserKnowledge.assistant_id == assistant_id),
        "chunks": count(services, KnowledgeChunk, KnowledgeChunk.assistant_id == assistant_id),
        "documents": count(services, Document, Document.assistant_id == assistant_id),
        "bots": count(services, BotInstance, BotInstance.assistant_id == assistant_id),
        "dialogs": count(services, Dialog, Dialog.assistant_id == assistant_id),
    }


def test_table_covers_every_assistant_endpoint(client: TestClient) -> None:
    served = {
        (endpoint.method, endpoint.path.replace("{assistant_id}", "{id}"))
        for endpoint in client.app.state.endpoints  # type: ignore[attr-defined]
        if endpoint.module == "assistants" and "{assistant_id}" in endpoint.path
    }
    assert served == {(method, path) for method, path, _ in CALLS}


@pytest.mark.parametrize("intruder_role", ["user", "admin"])
def test_another_tenants_assistant_is_not_found_and_unchanged(
    client: TestClient, services: Services, make_user: Any, auth_headers: Headers,
    intruder_role: str,
) -> None:
    owner = make_user()
    victim = create_assistant(client, auth_headers(owner), name="Victim",
                              allowed_domains="shop.example.com", website_integration_enabled=True,
                              widget_settings={"position": "left"})
    vid = victim["id"]
    document = add_document(services, owner.id, vid)
    add_knowledge(services, owner.id, vid, "Real answer.", doc_id=document)
    add_knowledge(services, owner.id, vid, "Sorry, no idea.", type_="fallback")
    add_bot(services, owner.id, vid)
    add_dialog(services, owner.id, vid)
    before = snapshot(services, vid)
    intruder = auth_headers(make_user(role=intruder_role))

    for method, template, body in CALLS:
        response = client.request(method, template.format(id=vid), json=body, headers=intruder)
        assert response.status_code == 404, (method, template, response.text)
        assert response.json() == {"detail": "Assistant not found", "code": "not_found"}

    assert snapshot(services, vid) == before
