"""Dashboard dialog reads (spec §4.4, §4.3 assistant dialogs, §5.A POST /api/dialogs,
§5.B filters-data): shapes, filters, search, pagination, the display-name rule, the bot
workers' service lookups."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from dialog_data import GUEST, Headers, add_assistant, add_bot, add_dialog
from sqlalchemy import event
from starlette.testclient import TestClient

from credentials import SERVICE_TOKEN
from server.app import create_app
from server.context import Services
from server.store.types import utcnow
from server.store.users import UserRecord

SERVICE = {"X-Service-Token": SERVICE_TOKEN}
CLOSED_PORT_POSTGRES = "postgresql://postgres@127.0.0.1:1/replyx"


@pytest.fixture
def owner(make_user: Any) -> UserRecord:
    return make_user(first_name="Olga")


@pytest.fixture
def headers(owner: UserRecord, auth_headers: Headers) -> dict[str, str]:
    return auth_headers(owner)


def items(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/dialogs", headers=headers, params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["items"]
    return found


def ids(client: TestClient, headers: dict[str, str], **params: Any) -> list[int]:
    return [item["id"] for item in items(client, headers, **params)]


@pytest.fixture
def count_statements(services: Services) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(services.db.engine, "before_cursor_execute", record)
    yield statements
    event.remove(services.db.engine, "before_cursor_execute", record)


# --- GET /api/dialogs -------------------------------------------------------------------------


def test_list_item_has_the_dashboard_shape_and_the_last_message(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    assistant = add_assistant(services, owner.id)
    dialog = add_dialog(services, owner.id, assistant_id=assistant, guest_id=GUEST,
                        messages=[("user", "hi"), ("assistant", "hello"), ("user", "last one")])
    body = client.get("/api/dialogs", headers=headers).json()
    assert (body["total"], body["page"], body["pages"], body["limit"]) == (1, 1, 1, 50)
    item = body["items"][0]
    assert item["id"] == dialog and item["assistant_id"] == assistant
    assert item["last_message_text"] == "last one"
    assert item["last_message_at"].endswith("Z") and item["started_at"] < item["last_message_at"]
    assert (item["channel_type"], item["email"], item["sentiment"]) == ("web", owner.email,
                                                                       "neutral")
    assert (item["auto_response"], item["is_taken_over"], item["fallback"]) == (0, 0, 0)
    assert item["handoff_status"] == "none" and item["last_seq"] == 3


def test_dialog_without_messages_reports_its_start_as_last_message_time(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    add_dialog(services, owner.id)
    item = items(client, headers)[0]
    assert item["last_message_text"] is None
    assert item["last_message_at"] == item["started_at"]


def test_list_is_newest_first_and_paginated(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    created = [add_dialog(services, owner.id, messages=[("user", f"m{i}")]) for i in range(5)]
    body = client.get("/api/dialogs", headers=headers, params={"page": 2, "limit": 2}).json()
    assert [item["id"] for item in body["items"]] == [created[2], created[1]]
    assert [item["last_message_text"] for item in body["items"]] == ["m2", "m1"]
    assert (body["total"], body["pages"], body["page"], body["limit"]) == (5, 3, 2, 2)
    assert ids(client, headers, page=4, limit=2) == []


def test_list_reads_the_page_in_a_constant_number_of_statements(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str],
    count_statements: list[str],
) -> None:
    add_dialog(services, owner.id, messages=[("user", "a")])
    count_statements.clear()
    items(client, headers)
    with_one = len(count_statements)
    for i in range(6):
        add_dialog(services, owner.id, messages=[("user", "a"), ("assistant", f"b{i}")])
    count_statements.clear()
    assert len(items(client, headers)) == 7
    assert len(count_statements) == with_one


@pytest.mark.parametrize(
    ("status", "expected"),
    [("active", {"plain", "released"}), ("taken_over", {"taken"}),
     ("handoff_requested", {"requested"}), ("handoff_active", {"taken"})],
)
def test_status_filter(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str],
    status: str, expected: set[str],
) -> None:
    named = {
        add_dialog(services, owner.id): "plain",
        add_dialog(services, owner.id, handoff_status="released"): "released",
        add_dialog(services, owner.id, handoff_status="requested"): "requested",
        add_dialog(services, owner.id, handoff_status="active", is_taken_over=True): "taken",
    }
    assert {named[i] for i in ids(client, headers, status=status)} == expected


def test_channel_assistant_and_time_filters(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    first, second = add_assistant(services, owner.id), add_assistant(services, owner.id)
    telegram = add_dialog(services, owner.id, assistant_id=first, telegram_chat_id="777")
    web = add_dialog(services, owner.id, assistant_id=second, guest_id=GUEST)
    old = add_dialog(services, owner.id, assistant_id=second,
                     started_at=utcnow() - dt.timedelta(days=10))
    assert ids(client, headers, channel="telegram") == [telegram]
    assert ids(client, headers, channel="website") == [old, web]
    assert ids(client, headers, assistant_id=second) == [old, web]
    assert ids(client, headers, time_filter="week") == [web, telegram]
    assert ids(client, headers, time_filter="month") == [old, web, telegram]
    assert ids(client, headers, status="", channel="") == [old, web, telegram]


def test_today_filter_starts_at_midnight_utc(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    today = add_dialog(services, owner.id, started_at=midnight)
    add_dialog(services, owner.id, started_at=midnight - dt.timedelta(seconds=1))
    assert ids(client, headers, time_filter="today") == [today]


@pytest.mark.parametrize("term", ["ivan", "PETROV", "tg_nick", "5b0c1f0e", "REFUND", "olga-"])
def test_search_matches_names_username_guest_message_text_and_owner_email(
    client: TestClient, services: Services, make_user: Any, auth_headers: Headers, term: str
) -> None:
    owner = make_user(email="olga-shop@example.com")
    add_dialog(services, owner.id, first_name="Ivan")
    add_dialog(services, owner.id, last_name="Petrov")
    add_dialog(services, owner.id, telegram_username="tg_nick", telegram_chat_id="1")
    add_dialog(services, owner.id, guest_id=GUEST)
    add_dialog(services, owner.id, messages=[("user", "I want a refund please")])
    found = ids(client, auth_headers(owner), search=term)
    expected = 5 if term == "olga-" else 1  # the owner's e-mail matches all of them
    assert len(found) == expected


def test_search_treats_like_wildcards_literally(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    percent = add_dialog(services, owner.id, messages=[("user", "50% off")])
    underscore = add_dialog(services, owner.id, messages=[("user", "50 off"), ("user", "5_0")])
    add_dialog(services, owner.id, messages=[("user", "500")])
    assert ids(client, headers, search="50%") == [percent]
    assert ids(client, headers, search="%") == [percent]
    assert ids(client, headers, search="5_0") == [underscore]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"first_name": "Ivan", "last_name": "Petrov", "telegram_username": "x"}, "Ivan Petrov"),
        ({"first_name": "Ivan", "telegram_username": "x"}, "Ivan"),
        ({"telegram_username": "nick", "telegram_chat_id": "5"}, "@nick"),
        ({"first_name": "User#12", "telegram_username": "nick"}, "@nick"),
        ({"first_name": "Пользователь#3", "guest_id": GUEST}, "User#{id}"),
        ({"guest_id": GUEST}, "User#{id}"),
        ({}, "Olga"),
    ],
)
def test_display_name_rule(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str],
    fields: dict[str, Any], expected: str,
) -> None:
    dialog = add_dialog(services, owner.id, **fields)
    item = items(client, headers)[0]
    assert item["name"] == expected.format(id=dialog)
    if "#" in fields.get("first_name", ""):
        assert item["first_name"] is None  # a generated label is not a name


def test_admin_lists_own_by_default_another_owner_with_user_id_and_everyone_with_all(
    client: TestClient, services: Services, owner: UserRecord, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    theirs = add_dialog(services, owner.id)
    mine = add_dialog(services, admin.id)
    headers = auth_headers(admin)
    assert ids(client, headers) == [mine]
    assert ids(client, headers, user_id=owner.id) == [theirs]
    assert ids(client, headers, all="true") == [mine, theirs]


def test_plain_user_cannot_widen_the_list_with_user_id_or_all(
    client: TestClient, services: Services, owner: UserRecord, make_user: Any,
    headers: dict[str, str],
) -> None:
    other = make_user()
    mine = add_dialog(services, owner.id)
    add_dialog(services, other.id)
    assert ids(client, headers, all="true") == [mine]
    assert ids(client, headers, user_id=other.id) == [mine]


@pytest.mark.parametrize(
    "params",
    [{"page": 0}, {"limit": 101}, {"limit": 0}, {"status": "closed"}, {"channel": "fax"},
     {"time_filter": "year"}, {"assistant_id": "x"}, {"page": "1.5"}, {"search": "x" * 256},
     {"all": "maybe"}],
)
def test_bad_list_query_is_422(
    client: TestClient, headers: dict[str, str], params: dict[str, Any]
) -> None:
    response = client.get("/api/dialogs", headers=headers, params=params)
    assert response.status_code == 422, params
    assert response.json()["code"] == "validation_error"


# --- one dialog and its messages ----------------------------------------------------------------


def test_get_dialog(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    assistant = add_assistant(services, owner.id)
    dialog = add_dialog(services, owner.id, assistant_id=assistant, guest_id=GUEST,
                        telegram_username="nick", handoff_status="requested")
    body = client.get(f"/api/dialogs/{dialog}", headers=headers).json()
    assert body["id"] == dialog and body["user_id"] == owner.id
    assert (body["assistant_id"], body["guest_id"], body["telegram_username"]) == (
        assistant, GUEST, "nick")
    assert body["handoff_status"] == "requested" and body["ended_at"] is None
    assert body["started_at"].endswith("Z") and body["channel"] == "web"


def test_messages_in_order_with_kind_seq_and_system_type(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    dialog = add_dialog(services, owner.id, messages=[
        ("user", "hi"), ("assistant", "hello"), ("system", "An operator joined"),
        ("manager", "Hi, I am Anna")])
    body = client.get(f"/api/dialogs/{dialog}/messages", headers=headers).json()
    assert [m["seq"] for m in body] == [1, 2, 3, 4]
    assert [m["message_kind"] for m in body] == ["user", "assistant", "system", "operator"]
    assert [m["sender"] for m in body] == ["user", "assistant", "system", "manager"]
    assert body[0]["text"] == "hi" and body[0]["timestamp"].endswith("Z")
    assert set(body[0]) >= {"id", "dialog_id", "sender", "text", "timestamp", "message_kind",
                            "system_type", "seq", "client_message_id"}


def test_messages_after_id_and_limit(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    dialog = add_dialog(services, owner.id, messages=[("user", str(i)) for i in range(6)])
    every = client.get(f"/api/dialogs/{dialog}/messages", headers=headers).json()
    page = client.get(f"/api/dialogs/{dialog}/messages", headers=headers,
                      params={"after_id": every[1]["id"], "limit": 3}).json()
    assert [m["text"] for m in page] == ["2", "3", "4"]
    for bad in ({"limit": 0}, {"limit": 1001}, {"after_id": -1}):
        response = client.get(f"/api/dialogs/{dialog}/messages", headers=headers, params=bad)
        assert response.status_code == 422, bad


def test_missing_dialog_is_404_and_bad_id_is_422(
    client: TestClient, headers: dict[str, str]
) -> None:
    for path in ("/api/dialogs/999", "/api/dialogs/999/messages", "/api/dialogs/999/status"):
        response = client.get(path, headers=headers)
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found"
    assert client.get("/api/dialogs/abc", headers=headers).status_code == 422


# --- status (service fail-open) and the Telegram routing lookup ---------------------------------


def test_status_for_the_service_and_for_the_owner(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    dialog = add_dialog(services, owner.id, handoff_status="active", is_taken_over=True,
                        assigned_manager_id=owner.id)
    expected = {"id": dialog, "handoff_status": "active", "is_taken_over": 1,
                "assigned_manager_id": owner.id}
    assert client.get(f"/api/dialogs/{dialog}/status", headers=SERVICE).json() == expected
    assert client.get(f"/api/dialogs/{dialog}/status", headers=headers).json() == expected


def test_status_of_an_unknown_dialog_is_fail_open_for_the_service(client: TestClient) -> None:
    response = client.get("/api/dialogs/4242/status", headers=SERVICE)
    assert response.status_code == 200
    assert response.json() == {"id": 4242, "handoff_status": "none", "is_taken_over": 0,
                               "assigned_manager_id": None}


@pytest.mark.parametrize("settings_env", [{"DATABASE_URL": CLOSED_PORT_POSTGRES}])
def test_status_is_fail_open_for_the_service_when_the_database_fails(services: Services) -> None:
    # No lifespan: start-up itself needs the database; the service token does not.
    client = TestClient(create_app(services=services), raise_server_exceptions=False)
    response = client.get("/api/dialogs/7/status", headers=SERVICE)
    assert response.status_code == 200
    assert response.json() == {"id": 7, "handoff_status": "none", "is_taken_over": 0,
                               "assigned_manager_id": None}


def test_status_needs_the_service_token_or_a_bearer(client: TestClient) -> None:
    assert client.get("/api/dialogs/1/status").status_code == 401
    assert client.get("/api/dialogs/1/status",
                      headers={"X-Service-Token": "wrong"}).status_code == 401


def test_by_telegram_chat_joins_an_active_bot_of_the_dialogs_assistant(
    client: TestClient, services: Services, owner: UserRecord
) -> None:
    assistant = add_assistant(services, owner.id)
    add_bot(services, owner.id, assistant, active=False)
    bot = add_bot(services, owner.id, assistant)
    dialog = add_dialog(services, owner.id, assistant_id=assistant, telegram_chat_id="555",
                        handoff_status="requested")
    response = client.get("/api/dialogs/by-telegram-chat/555", headers=SERVICE)
    assert response.status_code == 200, response.text
    assert response.json() == {"id": dialog, "assistant_id": assistant, "user_id": owner.id,
                               "telegram_chat_id": "555", "handoff_status": "requested",
                               "bot_id": bot}


def test_by_telegram_chat_filters_pick_the_bot_and_assistant(
    client: TestClient, services: Services, owner: UserRecord
) -> None:
    first, second = add_assistant(services, owner.id), add_assistant(services, owner.id)
    first_bot, second_bot = add_bot(services, owner.id, first), add_bot(services, owner.id, second)
    to_first = add_dialog(services, owner.id, assistant_id=first, telegram_chat_id="42")
    to_second = add_dialog(services, owner.id, assistant_id=second, telegram_chat_id="42")
    path = "/api/dialogs/by-telegram-chat/42"
    assert client.get(path, headers=SERVICE).json()["id"] == to_second  # newest
    by_bot = client.get(path, headers=SERVICE, params={"bot_id": first_bot}).json()
    assert (by_bot["id"], by_bot["bot_id"]) == (to_first, first_bot)
    by_assistant = client.get(path, headers=SERVICE, params={"assistant_id": second}).json()
    assert (by_assistant["id"], by_assistant["bot_id"]) == (to_second, second_bot)


@pytest.mark.parametrize("chat", ["999", "x" * 65, "%00"])
def test_by_telegram_chat_without_an_active_bot_or_dialog_is_404(
    client: TestClient, services: Services, owner: UserRecord, chat: str
) -> None:
    assistant = add_assistant(services, owner.id)
    add_bot(services, owner.id, assistant, active=False)
    add_dialog(services, owner.id, assistant_id=assistant, telegram_chat_id="999")
    response = client.get(f"/api/dialogs/by-telegram-chat/{chat}", headers=SERVICE)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


# --- POST /api/dialogs, filters-data, assistant dialogs -----------------------------------------


def test_create_dashboard_dialog(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    assistant = add_assistant(services, owner.id)
    response = client.post("/api/dialogs", headers=headers, json={"assistant_id": assistant})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["user_id"], body["assistant_id"], body["channel"]) == (owner.id, assistant,
                                                                       "dashboard")
    assert body["guest_id"] is None and body["last_seq"] == 0
    assert client.get(f"/api/dialogs/{body['id']}", headers=headers).json() == body


@pytest.mark.parametrize("payload", [{}, {"assistant_id": "x"}, {"assistant_id": 1, "x": 1}])
def test_create_dialog_bad_body_is_422(
    client: TestClient, headers: dict[str, str], payload: dict[str, Any]
) -> None:
    assert client.post("/api/dialogs", headers=headers, json=payload).status_code == 422


def test_filters_data_counts_channels_and_assistants(
    client: TestClient, services: Services, owner: UserRecord, make_user: Any,
    headers: dict[str, str],
) -> None:
    helper = add_assistant(services, owner.id, name="Helper")
    add_assistant(services, owner.id, name="Unused")
    add_dialog(services, owner.id, assistant_id=helper, telegram_chat_id="1")
    add_dialog(services, owner.id, assistant_id=helper, guest_id=GUEST)
    add_dialog(services, owner.id)
    add_dialog(services, make_user().id, telegram_chat_id="2")  # another tenant's
    body = client.get("/api/dialogs/filters-data", headers=headers).json()
    assert body == {
        "channels": [{"type": "telegram", "name": "Telegram", "count": 1},
                     {"type": "website", "name": "Website (widget)", "count": 2}],
        "bots": [{"id": helper, "name": "Helper", "dialogs_count": 2}],
    }


def test_filters_data_of_an_admin_covers_every_tenant(
    client: TestClient, services: Services, owner: UserRecord, admin: UserRecord,
    auth_headers: Headers,
) -> None:
    add_dialog(services, owner.id, telegram_chat_id="1")
    body = client.get("/api/dialogs/filters-data", headers=auth_headers(admin)).json()
    assert body["channels"] == [{"type": "telegram", "name": "Telegram", "count": 1}]


def test_filters_data_with_no_dialogs_is_empty(client: TestClient, headers: dict[str, str]) -> None:
    assert client.get("/api/dialogs/filters-data", headers=headers).json() == {
        "channels": [], "bots": []}


def test_assistant_dialogs_summaries(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    assistant = add_assistant(services, owner.id)
    older = add_dialog(services, owner.id, assistant_id=assistant, first_name="Ivan",
                       last_name="Petrov", ended_at=utcnow(),
                       started_at=utcnow() - dt.timedelta(hours=2),
                       messages=[("user", "a"), ("assistant", "b")])
    newer = add_dialog(services, owner.id, assistant_id=assistant, telegram_username="nick",
                       started_at=utcnow() - dt.timedelta(hours=1))
    anonymous = add_dialog(services, owner.id, assistant_id=assistant, guest_id=GUEST)
    add_dialog(services, owner.id, assistant_id=add_assistant(services, owner.id))
    body = client.get(f"/api/assistants/{assistant}/dialogs", headers=headers).json()
    assert [d["id"] for d in body] == [anonymous, newer, older]
    assert [d["title"] for d in body] == [f"Dialog {anonymous}", "@nick", "Ivan Petrov"]
    assert [d["status"] for d in body] == ["active", "active", "completed"]
    assert [d["message_count"] for d in body] == [0, 0, 2]
    assert body[2]["last_message_at"] > body[2]["started_at"]
    assert body[0]["last_message_at"] == body[0]["started_at"]  # no message yet
