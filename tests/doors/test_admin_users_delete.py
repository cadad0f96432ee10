"""DELETE /api/admin/users/{user_id}: the cascade, pointers of other tenants, stored files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient
from tenant_data import Headers, MakeUser, add_tenant_data, audit_actions, count, stored

from server.context import Services
from server.store.models import (
    Assistant,
    BalanceTransaction,
    BotInstance,
    Dialog,
    DialogMessage,
    Document,
    HandoffAudit,
    OpenAIToken,
    OperatorPresence,
    TelegramToken,
    UserBalance,
    UserKnowledge,
)
from server.store.users import UserRecord


def _delete(client: TestClient, headers: dict[str, str], user_id: int) -> Any:
    return client.delete(f"/api/admin/users/{user_id}", headers=headers)


def test_delete_removes_the_user(
    client: TestClient, services: Services, user: UserRecord, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    response = _delete(client, auth_headers(admin), user.id)
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "message": response.json()["message"],
        "deleted_user_id": user.id,
        "deleted_user_email": user.email,
    }
    assert stored(services, user.id) is None
    assert audit_actions(services, admin.id) == ["admin_delete_user"]


def test_deleted_users_token_stops_working(
    client: TestClient, user: UserRecord, admin: UserRecord, auth_headers: Headers
) -> None:
    headers = auth_headers(user)
    _delete(client, auth_headers(admin), user.id)
    assert client.get("/api/me", headers=headers).status_code == 401


def test_admin_cannot_delete_themselves(
    client: TestClient, services: Services, admin: UserRecord, auth_headers: Headers
) -> None:
    response = _delete(client, auth_headers(admin), admin.id)
    assert response.status_code == 400
    assert response.json()["code"] == "self_action_forbidden"
    assert stored(services, admin.id) is not None


def test_delete_of_an_unknown_user_is_404(
    client: TestClient, admin: UserRecord, auth_headers: Headers
) -> None:
    assert _delete(client, auth_headers(admin), 999_999).status_code == 404


def test_delete_cascades_the_users_data_and_spares_other_tenants(
    client: TestClient, services: Services, make_user: MakeUser, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    victim, bystander = make_user(), make_user()
    victims = add_tenant_data(services, victim.id)
    bystanders = add_tenant_data(services, bystander.id)
    owned = (Assistant, Dialog, Document, UserKnowledge, BotInstance, BalanceTransaction,
             UserBalance, OpenAIToken, TelegramToken, OperatorPresence)
    assert _delete(client, auth_headers(admin), victim.id).status_code == 200
    for model in owned:
        assert count(services, model, user_id=victim.id) == 0, model.__name__
        assert count(services, model, user_id=bystander.id) == 1, model.__name__
    assert count(services, DialogMessage, dialog_id=victims.dialog_id) == 0
    assert count(services, DialogMessage, dialog_id=bystanders.dialog_id) == 2


def test_delete_of_an_operator_keeps_other_tenants_dialogs(
    client: TestClient, services: Services, make_user: MakeUser, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    tenant, manager = make_user(), make_user()
    data = add_tenant_data(services, tenant.id)
    with services.db.write() as session:
        dialog = session.get(Dialog, data.dialog_id)
        assert dialog is not None
        dialog.assigned_manager_id = manager.id
        dialog.handoff_status = "active"
        session.add(DialogMessage(dialog_id=dialog.id, seq=3, sender="manager", text="hi",
                                  author_user_id=manager.id))
        session.add(HandoffAudit(dialog_id=dialog.id, from_status="requested",
                                 to_status="active", user_id=manager.id))
    assert _delete(client, auth_headers(admin), manager.id).status_code == 200
    with services.db.read() as session:
        dialog = session.get(Dialog, data.dialog_id)
        assert dialog is not None and dialog.assigned_manager_id is None
        authors = session.execute(
            select(DialogMessage.author_user_id).where(DialogMessage.dialog_id == dialog.id)
        ).scalars().all()
        assert len(authors) == 3 and set(authors) == {None}
        audit_users = session.execute(select(HandoffAudit.user_id)).scalars().all()
        assert audit_users == [None]


def test_delete_removes_stored_document_files(
    client: TestClient, services: Services, make_user: MakeUser, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    victim, bystander = make_user(), make_user()
    uploads = services.settings.data_dir / "uploads"
    victims = add_tenant_data(services, victim.id)
    bystanders = add_tenant_data(services, bystander.id)
    for key in (victims.storage_key, bystanders.storage_key):
        (uploads / key).parent.mkdir(parents=True, exist_ok=True)
        (uploads / key).write_text("content")
    assert _delete(client, auth_headers(admin), victim.id).status_code == 200
    assert not (uploads / victims.storage_key).exists()
    assert (uploads / bystanders.storage_key).exists()


def test_delete_succeeds_when_a_stored_file_is_already_gone(
    client: TestClient, services: Services, user: UserRecord, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    add_tenant_data(services, user.id, storage_key="never/written.pdf")
    assert _delete(client, auth_headers(admin), user.id).status_code == 200
    assert stored(services, user.id) is None


def test_delete_never_follows_a_storage_key_out_of_uploads(
    client: TestClient, services: Services, user: UserRecord, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    outside: Path = services.settings.data_dir / "keep.txt"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_text("not an upload")
    add_tenant_data(services, user.id, storage_key="../keep.txt")
    assert _delete(client, auth_headers(admin), user.id).status_code == 200
    assert outside.exists()


class TestDeleteRateLimit:
    @pytest.fixture
    def settings_env(self) -> dict[str, str]:
        return {"RATE_LIMITS": "admin_delete_user=1/60"}

    def test_second_delete_in_the_window_is_429(
        self, client: TestClient, make_user: MakeUser, admin: UserRecord, auth_headers: Headers
    ) -> None:
        first, second = make_user(), make_user()
        assert _delete(client, auth_headers(admin), first.id).status_code == 200
        assert _delete(client, auth_headers(admin), second.id).status_code == 429
        assert stored(client.app.state.services, second.id) is not None
