"""Who may read which dialog: another tenant's dialog or assistant is "not found" (DESIGN §8
overrides the original's 403), admins read every tenant's dialogs, a visitor only ever sees
their own guest's dialogs, and a revoked or foreign site token is refused."""

from __future__ import annotations

from typing import Any

import pytest
from dialog_data import (
    GUEST,
    OTHER_GUEST,
    Headers,
    add_assistant,
    add_dialog,
    embed_token,
    site_params,
    widget_params,
)
from starlette.testclient import TestClient

from server.context import Services
from server.store import dialog_queries
from server.store import users as user_store
from server.store.users import UserRecord

DASHBOARD_READS = ("/api/dialogs/{id}", "/api/dialogs/{id}/messages", "/api/dialogs/{id}/status")


@pytest.fixture
def owner(make_user: Any) -> UserRecord:
    return make_user()


@pytest.fixture
def intruder(make_user: Any) -> UserRecord:
    return make_user()


@pytest.fixture
def assistant(services: Services, owner: UserRecord) -> int:
    return add_assistant(services, owner.id)


@pytest.fixture
def dialog(services: Services, owner: UserRecord, assistant: int) -> int:
    return add_dialog(services, owner.id, assistant_id=assistant, guest_id=GUEST,
                      messages=[("user", "secret order number 1234")])


@pytest.mark.parametrize("path", DASHBOARD_READS)
def test_another_tenants_dialog_is_not_found(
    client: TestClient, intruder: UserRecord, auth_headers: Headers, dialog: int, path: str
) -> None:
    response = client.get(path.format(id=dialog), headers=auth_headers(intruder))
    assert response.status_code == 404
    assert response.json() == {"detail": "Dialog not found", "code": "not_found"}


@pytest.mark.parametrize("path", DASHBOARD_READS)
def test_admin_reads_any_tenants_dialog(
    client: TestClient, admin: UserRecord, auth_headers: Headers, dialog: int, path: str
) -> None:
    response = client.get(path.format(id=dialog), headers=auth_headers(admin))
    assert response.status_code == 200, response.text


def test_another_tenants_dialogs_never_appear_in_the_list_or_its_search(
    client: TestClient, intruder: UserRecord, auth_headers: Headers, dialog: int
) -> None:
    headers = auth_headers(intruder)
    for params in ({}, {"search": "secret"}, {"user_id": 1}, {"all": "true"}):
        assert client.get("/api/dialogs", headers=headers, params=params).json()["total"] == 0


def test_another_tenants_assistant_is_not_found(
    client: TestClient, services: Services, intruder: UserRecord, admin: UserRecord,
    auth_headers: Headers, assistant: int, dialog: int,
) -> None:
    for caller in (intruder, admin):  # assistant routes keep admins out too (spec §4.3)
        headers = auth_headers(caller)
        listed = client.get(f"/api/assistants/{assistant}/dialogs", headers=headers)
        assert listed.status_code == 404
        created = client.post("/api/dialogs", headers=headers, json={"assistant_id": assistant})
        assert created.status_code == 404
    with services.db.read() as session:  # nothing was created for the intruders
        summaries = dialog_queries.assistant_dialog_summaries(session, assistant)
    assert [summary.dialog.id for summary in summaries] == [dialog]


def test_visitor_of_another_guest_does_not_see_the_dialog(
    client: TestClient, owner: UserRecord, auth_headers: Headers, assistant: int, dialog: int
) -> None:
    token = embed_token(client, auth_headers(owner), assistant)
    stranger = site_params(token, OTHER_GUEST)
    assert client.get("/api/site/dialogs", params=stranger).json() == []
    response = client.get(f"/api/site/dialogs/{dialog}/messages", params=stranger)
    assert response.status_code == 404
    assert client.get(f"/api/site/dialogs/{dialog}/messages",
                      params=site_params(token)).status_code == 200
    widget_stranger = widget_params(assistant, OTHER_GUEST)
    assert client.get(f"/api/widget/dialogs/{dialog}/messages",
                      params=widget_stranger).status_code == 404
    assert client.get(f"/api/widget/dialogs/{dialog}/messages",
                      params=widget_params(assistant)).status_code == 200


def test_token_of_another_tenants_assistant_does_not_see_the_dialog(
    client: TestClient, services: Services, intruder: UserRecord, auth_headers: Headers,
    dialog: int,
) -> None:
    foreign = embed_token(client, auth_headers(intruder), add_assistant(services, intruder.id))
    response = client.get(f"/api/site/dialogs/{dialog}/messages", params=site_params(foreign))
    assert response.status_code == 404
    assert client.get("/api/site/dialogs", params=site_params(foreign)).json() == []


def test_token_of_another_assistant_of_the_same_owner_does_not_see_the_dialog(
    client: TestClient, services: Services, owner: UserRecord, auth_headers: Headers,
    dialog: int,
) -> None:
    sibling = embed_token(client, auth_headers(owner), add_assistant(services, owner.id))
    response = client.get(f"/api/site/dialogs/{dialog}/messages", params=site_params(sibling))
    assert response.status_code == 404


def test_token_forged_for_another_tenant_is_refused(
    client: TestClient, services: Services, owner: UserRecord, intruder: UserRecord,
    assistant: int, dialog: int,
) -> None:
    # Signed for the intruder's account but naming the owner's assistant.
    forged = services.site_tokens.mint(intruder.id, assistant)
    response = client.get(f"/api/site/dialogs/{dialog}/messages", params=site_params(forged))
    assert (response.status_code, response.json()["code"]) == (401, "invalid_site_token")


@pytest.mark.parametrize(
    "change",
    [
        ("POST", "/api/assistants/{id}/embed-code/rotate", None),
        ("PATCH", "/api/assistants/{id}", {"allowed_domains": "moved.example"}),
        ("PATCH", "/api/assistants/{id}", {"is_active": False}),
    ],
    ids=["rotated", "domains-changed", "deactivated"],
)
def test_revoked_site_token_is_401_everywhere(
    client: TestClient, owner: UserRecord, auth_headers: Headers, assistant: int, dialog: int,
    change: tuple[str, str, dict[str, Any] | None],
) -> None:
    headers = auth_headers(owner)
    token = embed_token(client, headers, assistant)
    method, path, body = change
    assert client.request(method, path.format(id=assistant), headers=headers,
                          json=body).status_code == 200
    params = site_params(token)
    for method, path in (("GET", "/api/site/dialogs"), ("POST", "/api/site/dialogs"),
                         ("GET", f"/api/site/dialogs/{dialog}/messages")):
        response = client.request(method, path, params=params)
        assert (response.status_code, response.json()["code"]) == (401, "invalid_site_token")
    page = client.get("/api/chat-iframe", params={"site_token": token})
    assert page.status_code == 401


def test_blocked_owner_closes_both_visitor_doors(
    client: TestClient, services: Services, owner: UserRecord, auth_headers: Headers,
    assistant: int,
) -> None:
    token = embed_token(client, auth_headers(owner), assistant)
    with services.db.write() as session:
        user_store.update_user(session, owner.id, status="blocked")
    assert client.get("/api/site/dialogs", params=site_params(token)).status_code == 401
    assert client.get("/api/widget/dialogs", params=widget_params(assistant)).status_code == 404
