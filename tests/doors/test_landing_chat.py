"""The landing-page sales chat (`/api/ai/*`) without any LLM: canned answers, sessions, ops."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from starlette.testclient import TestClient

from credentials import SERVICE_TOKEN
from server.context import Services
from server.landing_chat import CANNED_DEFAULT
from server.store.models import Dialog, DialogMessage
from server.store.users import UserRecord

SESSION = "visitor-session-0001"
Headers = Callable[[UserRecord], dict[str, str]]


def test_chat_without_llm_gives_a_canned_answer_and_keeps_history(client: TestClient) -> None:
    first = client.post("/api/ai/chat", json={"session_id": SESSION, "message": "Hello"})
    second = client.post("/api/ai/chat", json={"session_id": SESSION,
                                               "message": "Does it work with Telegram?"})
    assert first.status_code == 200, first.text
    assert first.json()["message"] == CANNED_DEFAULT
    assert first.json()["source"] == "offline"
    assert "Telegram" in second.json()["message"]
    info = client.get(f"/api/ai/session/{SESSION}").json()
    assert info["messages_count"] == 4
    assert info["created_at"].endswith("Z")


def test_chat_is_mirrored_into_a_landing_dialog_of_the_first_admin(
    client: TestClient, services: Services, admin: UserRecord
) -> None:
    client.post("/api/ai/chat", json={"session_id": SESSION, "message": "What does it cost?"})
    with services.db.read() as session:
        dialog = session.execute(select(Dialog).where(Dialog.guest_id == SESSION)).scalar_one()
        messages = session.execute(
            select(DialogMessage).where(DialogMessage.dialog_id == dialog.id)
            .order_by(DialogMessage.seq)).scalars().all()
    assert dialog.user_id == admin.id and dialog.channel == "landing"
    assert [(m.seq, m.sender) for m in messages] == [(1, "user"), (2, "assistant")]


def test_the_mirror_goes_through_the_dialogs_actor_without_asking_for_a_human(
    client: TestClient, services: Services, admin: UserRecord
) -> None:
    # The landing chat answers itself; its mirror must not queue the admin's dialog.
    client.post("/api/ai/chat", json={"session_id": SESSION, "message": "I need a real person"})
    client.post("/api/ai/chat", json={"session_id": SESSION, "message": "Hello again"})
    with services.db.read() as session:
        dialog = session.execute(select(Dialog).where(Dialog.guest_id == SESSION)).scalar_one()
        seqs = session.execute(select(DialogMessage.seq).where(
            DialogMessage.dialog_id == dialog.id).order_by(DialogMessage.seq)).scalars().all()
    assert dialog.handoff_status == "none"
    assert list(seqs) == [1, 2, 3, 4] and dialog.last_seq == 4


def test_initialize_get_and_delete_a_session(client: TestClient) -> None:
    created = client.post("/api/ai/initialize-context",
                          json={"session_id": SESSION, "context": {"page": "/pricing"}})
    assert created.json() == {"success": True, "message": "Session initialised",
                              "session_id": SESSION}
    assert client.get(f"/api/ai/session/{SESSION}").json()["messages_count"] == 0
    assert client.delete(f"/api/ai/session/{SESSION}").json()["success"] is True
    missing = client.get(f"/api/ai/session/{SESSION}")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_bad_session_ids_and_messages_are_refused(client: TestClient) -> None:
    for body in ({"session_id": "short", "message": "hi"},
                 {"session_id": SESSION, "message": ""},
                 {"session_id": SESSION, "message": "x" * 2001},
                 {"session_id": SESSION}):
        assert client.post("/api/ai/chat", json=body).status_code == 422
    assert client.post("/api/ai/initialize-context", json={"session_id": SESSION}).status_code == 422
    assert client.get("/api/ai/session/%3Cscript%3E").status_code == 404


def test_ops_endpoints_need_the_service_token_or_an_admin(
    client: TestClient, user: UserRecord, admin: UserRecord, auth_headers: Headers
) -> None:
    for method, path in (("GET", "/api/ai/debug"), ("POST", "/api/ai/reload-config"),
                         ("POST", "/api/ai/clear-all-sessions")):
        assert client.request(method, path).status_code == 401
        assert client.request(method, path, headers={"X-Service-Token": "wrong"}).status_code == 401
        assert client.request(method, path, headers=auth_headers(user)).status_code == 403
        assert client.request(method, path,
                              headers={"X-Service-Token": SERVICE_TOKEN}).status_code == 200
        assert client.request(method, path, headers=auth_headers(admin)).status_code == 200


def test_debug_reports_offline_mode_and_clear_wipes_sessions(client: TestClient) -> None:
    ops = {"X-Service-Token": SERVICE_TOKEN}
    client.post("/api/ai/chat", json={"session_id": SESSION, "message": "hi"})
    debug = client.get("/api/ai/debug", headers=ops).json()
    assert debug["openai_key_set"] is False
    assert debug["available_providers"] == ["offline"]
    assert debug["session_count"] == 1
    cleared = client.post("/api/ai/clear-all-sessions", headers=ops).json()
    assert cleared["remaining_sessions"] == 0
    assert client.get("/api/ai/debug", headers=ops).json()["session_count"] == 0


def test_reload_config_forgets_rested_keys(client: TestClient, services: Services) -> None:
    import datetime as dt

    from sqlalchemy import update

    from server.store import ai_keys
    from server.store.models import AiTokenPool

    with services.db.write() as session:
        key = ai_keys.create_key(session, name="main", token="sk-rested")
        session.execute(update(AiTokenPool).where(AiTokenPool.id == key.id).values(
            error_count=4, rested_until=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)))
    response = client.post("/api/ai/reload-config", headers={"X-Service-Token": SERVICE_TOKEN})
    assert response.status_code == 200 and response.json()["success"] is True
    with services.db.read() as session:
        row = session.get(AiTokenPool, key.id)
        assert row is not None and row.error_count == 0 and row.rested_until is None
