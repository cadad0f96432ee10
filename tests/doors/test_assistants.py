"""The assistants module through the app: CRUD, settings, widget, knowledge, stats, deletion."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
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

from credentials import SERVICE_TOKEN
from server.assistant_rules import AI_MODELS
from server.context import Services
from server.ai.prompts import DEFAULT_SYSTEM_PROMPT as DEFAULT_SUPPORT_PROMPT
from server.store.models import (
    BotInstance,
    Dialog,
    DialogMessage,
    Document,
    KnowledgeChunk,
    UserKnowledge,
)
from server.store.users import UserRecord

READ_FIELDS = {
    "id", "user_id", "name", "ai_model", "system_prompt", "is_active",
    "website_integration_enabled", "allowed_domains", "operator_name", "business_name",
    "avatar_url", "widget_theme", "widget_settings", "created_at", "updated_at",
}


@pytest.fixture
def headers(user: UserRecord, auth_headers: Headers) -> dict[str, str]:
    return auth_headers(user)


# --- create ---------------------------------------------------------------------------------


def test_create_returns_assistant_with_defaults(
    client: TestClient, headers: dict[str, str], user: UserRecord
) -> None:
    body = create_assistant(client, headers, name="Shop helper")
    assert set(body) == READ_FIELDS
    assert body["user_id"] == user.id
    assert body["ai_model"] == "gpt-4o-mini"
    assert body["is_active"] is True
    assert body["website_integration_enabled"] is False
    assert body["allowed_domains"] is None
    assert body["widget_theme"] == "blue"
    assert body["operator_name"] and body["business_name"]
    assert body["created_at"].endswith("Z") and body["updated_at"].endswith("Z")


def test_create_without_prompt_gets_the_platform_default(
    client: TestClient, headers: dict[str, str]
) -> None:
    body = create_assistant(client, headers, system_prompt="   ")
    assert body["system_prompt"] == DEFAULT_SUPPORT_PROMPT


def test_create_accepts_a_name_in_any_script(client: TestClient, headers: dict[str, str]) -> None:
    body = create_assistant(client, headers, name="Помощник магазина_1.0 - beta")
    assert body["name"] == "Помощник магазина_1.0 - beta"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "x" * 101),
        ("name", "<b>bold</b>"),
        ("ai_model", "gpt-2"),
        ("system_prompt", "p" * 5001),
        ("allowed_domains", "exa mple.com"),
        ("allowed_domains", "example.com/shop"),
        ("allowed_domains", "example.com:99999"),
        ("allowed_domains", "ftp://example.com"),
        ("widget_theme", "javascript:alert(1)"),
        ("avatar_url", "javascript:alert(1)"),
    ],
)
def test_create_refuses_a_bad_value_with_422(
    client: TestClient, headers: dict[str, str], field: str, value: str
) -> None:
    body = {"name": "Helper", field: value}
    response = client.post("/api/assistants", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]["field"] == field


@pytest.mark.parametrize(
    "body",
    [
        {"name": "Helper", "colour": "red"},
        {"name": "Helper", "widget_settings": ["not", "an", "object"]},
        {"ai_model": "gpt-4o"},
        {"name": 42},
    ],
)
def test_create_refuses_a_bad_shape_with_422(
    client: TestClient, headers: dict[str, str], body: dict[str, Any]
) -> None:
    response = client.post("/api/assistants", json=body, headers=headers)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_every_allowed_model_can_be_chosen(client: TestClient, headers: dict[str, str]) -> None:
    for model in AI_MODELS:
        assert create_assistant(client, headers, ai_model=model)["ai_model"] == model


def test_assistants_need_a_logged_in_user(client: TestClient) -> None:
    assert client.get("/api/assistants").status_code == 401


# --- read -----------------------------------------------------------------------------------


def test_list_shows_own_assistants_newest_first(
    client: TestClient, make_user: Any, auth_headers: Headers, headers: dict[str, str]
) -> None:
    first = create_assistant(client, headers, name="First")
    second = create_assistant(client, headers, name="Second")
    create_assistant(client, auth_headers(make_user()), name="Foreign")
    listed = client.get("/api/assistants", headers=headers).json()
    assert [item["id"] for item in listed] == [second["id"], first["id"]]


def test_get_returns_the_assistant(client: TestClient, headers: dict[str, str]) -> None:
    created = create_assistant(client, headers)
    response = client.get(f"/api/assistants/{created['id']}", headers=headers)
    assert response.status_code == 200
    assert response.json() == created


def test_non_integer_assistant_id_is_422(client: TestClient, headers: dict[str, str]) -> None:
    assert client.get("/api/assistants/abc", headers=headers).status_code == 422


def test_settings_returns_core_fields(client: TestClient, headers: dict[str, str]) -> None:
    created = create_assistant(client, headers, ai_model="gpt-4o")
    body = client.get(f"/api/assistants/{created['id']}/settings", headers=headers).json()
    assert body == {key: created[key] for key in (
        "id", "name", "ai_model", "system_prompt", "is_active", "website_integration_enabled")}


# --- update ---------------------------------------------------------------------------------


def test_patch_changes_only_given_fields_and_bumps_knowledge_version(
    client: TestClient, services: Services, headers: dict[str, str]
) -> None:
    created = create_assistant(client, headers, operator_name="Anna")
    before = stored(services, created["id"])
    response = client.patch(f"/api/assistants/{created['id']}", json={"name": "Renamed"},
                            headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Renamed" and body["operator_name"] == "Anna"
    after = stored(services, created["id"])
    assert after.knowledge_version == before.knowledge_version + 1
    assert after.widget_version == before.widget_version
    assert after.updated_at > before.updated_at


def test_patch_replaces_widget_settings(client: TestClient, headers: dict[str, str]) -> None:
    created = create_assistant(client, headers, widget_settings={"position": "left", "a": 1})
    body = client.patch(f"/api/assistants/{created['id']}", json={"widget_settings": {"b": 2}},
                        headers=headers).json()
    assert body["widget_settings"] == {"b": 2}


def test_patch_normalises_allowed_domains(client: TestClient, headers: dict[str, str]) -> None:
    created = create_assistant(client, headers)
    raw = "https://WWW.Shop.Example.com/, example.org:8080, shop.example.com, пример.рф"
    body = client.patch(f"/api/assistants/{created['id']}", json={"allowed_domains": raw},
                        headers=headers).json()
    assert body["allowed_domains"] == "example.org,shop.example.com,xn--e1afmkfd.xn--p1ai"


def test_patch_removes_markup_from_the_prompt(client: TestClient, headers: dict[str, str]) -> None:
    created = create_assistant(client, headers)
    prompt = "<p>Be <b>kind</b>.</p><script>alert(1)</script> Prices: a < b"
    body = client.patch(f"/api/assistants/{created['id']}", json={"system_prompt": prompt},
                        headers=headers).json()
    assert body["system_prompt"] == "Be kind. Prices: a < b"


def test_patch_refuses_null_name(client: TestClient, headers: dict[str, str]) -> None:
    created = create_assistant(client, headers)
    response = client.patch(f"/api/assistants/{created['id']}", json={"name": None},
                            headers=headers)
    assert response.status_code == 422


def test_website_integration_toggles(client: TestClient, headers: dict[str, str]) -> None:
    created = create_assistant(client, headers)
    url = f"/api/assistants/{created['id']}/website-integration"
    body = client.post(url, json={"enabled": True}, headers=headers).json()
    assert body["success"] is True and body["website_integration_enabled"] is True
    again = client.get(f"/api/assistants/{created['id']}", headers=headers).json()
    assert again["website_integration_enabled"] is True


def test_website_integration_with_empty_body_is_422_not_a_silent_disable(
    client: TestClient, headers: dict[str, str]
) -> None:
    created = create_assistant(client, headers, website_integration_enabled=True)
    url = f"/api/assistants/{created['id']}/website-integration"
    assert client.post(url, json={}, headers=headers).status_code == 422
    again = client.get(f"/api/assistants/{created['id']}", headers=headers).json()
    assert again["website_integration_enabled"] is True


# --- widget settings ------------------------------------------------------------------------


def test_widget_settings_show_saved_values_over_defaults(
    client: TestClient, headers: dict[str, str]
) -> None:
    created = create_assistant(client, headers, widget_theme="#112233", operator_name="Anna",
                               widget_settings={"position": "bottom-left"})
    body = client.get(f"/api/assistants/{created['id']}/widget-settings", headers=headers).json()
    assert body["assistant_id"] == created["id"]
    settings = body["settings"]
    assert settings["position"] == "bottom-left"
    assert settings["theme"] == "#112233"
    assert settings["buttonSize"] == 80
    assert settings["operator_name"] == "Anna"


def test_widget_settings_post_merges_widget_settings(
    client: TestClient, headers: dict[str, str]
) -> None:
    created = create_assistant(client, headers, widget_settings={"position": "left", "a": 1})
    response = client.post(
        f"/api/assistants/{created['id']}/widget-settings",
        json={"widget_settings": {"a": 2, "b": 3}, "business_name": "Flowers"},
        headers=headers,
    )
    assert response.status_code == 200
    settings = response.json()["settings"]
    assert settings["widget_settings"] == {"position": "left", "a": 2, "b": 3}
    assert settings["business_name"] == "Flowers"


def test_widget_settings_post_refuses_assistant_fields(
    client: TestClient, headers: dict[str, str]
) -> None:
    created = create_assistant(client, headers)
    response = client.post(f"/api/assistants/{created['id']}/widget-settings",
                           json={"name": "Sneaky"}, headers=headers)
    assert response.status_code == 422


# --- knowledge and documents ----------------------------------------------------------------


def test_knowledge_lists_entries_with_a_kind_line_except_quick_fixes(
    client: TestClient, services: Services, headers: dict[str, str], user: UserRecord
) -> None:
    created = create_assistant(client, headers)
    quick_doc = add_document(services, user.id, filename="quick_fix_hours.txt")
    add_knowledge(services, user.id, created["id"], "We deliver in 2 days.", doc_type="faq")
    add_knowledge(services, user.id, created["id"], "Open 9-18.", doc_id=quick_doc)
    add_knowledge(services, user.id, None, "Global knowledge is not listed here.")
    body = client.get(f"/api/assistants/{created['id']}/knowledge", headers=headers).json()
    assert body["assistant_id"] == created["id"]
    assert body["system_prompt"] == created["system_prompt"]
    assert body["documents"] == ["[faq]\nWe deliver in 2 days.", "Open 9-18."]


def test_documents_lists_documents_linked_directly_or_through_knowledge(
    client: TestClient, services: Services, headers: dict[str, str], user: UserRecord
) -> None:
    created = create_assistant(client, headers)
    direct = add_document(services, user.id, created["id"], filename="direct.pdf")
    through = add_document(services, user.id, filename="through.txt")
    add_knowledge(services, user.id, created["id"], "text", doc_id=through)
    add_document(services, user.id, filename="unrelated.txt")
    body = client.get(f"/api/assistants/{created['id']}/documents", headers=headers).json()
    assert sorted(item["id"] for item in body) == sorted([direct, through])
    assert set(body[0]) == {"id", "user_id", "filename", "size", "upload_date"}
    assert body[0]["upload_date"].endswith("Z")


def test_validate_knowledge_deletes_fallback_entries_and_bumps_version(
    client: TestClient, services: Services, headers: dict[str, str], user: UserRecord
) -> None:
    created = create_assistant(client, headers)
    keep = add_knowledge(services, user.id, created["id"], "Real answer about refunds.")
    add_knowledge(services, user.id, created["id"], "Sorry, I don't know.", type_="fallback")
    add_knowledge(services, user.id, created["id"], "Template", doc_type="template")
    add_knowledge(services, user.id, created["id"], "Lorem ipsum dolor sit amet.")
    version = stored(services, created["id"]).knowledge_version

    body = client.post(f"/api/assistants/{created['id']}/validate-knowledge",
                       headers=headers).json()

    assert body["is_clean"] is True
    assert body["changes"] == {"knowledge_removed": 3, "fallback_sources_removed": True}
    assert body["validation_before"]["knowledge_count"] == 4
    assert body["validation_before"]["has_fallback_sources"] is True
    assert {w["type"] for w in body["validation_before"]["warnings"]} == {
        "fallback_source", "demo_content"}
    assert body["validation_after"]["knowledge_count"] == 1
    assert count(services, UserKnowledge, UserKnowledge.assistant_id == created["id"]) == 1
    assert count(services, UserKnowledge, UserKnowledge.id == keep) == 1
    assert count(services, KnowledgeChunk, KnowledgeChunk.assistant_id == created["id"]) == 1
    assert stored(services, created["id"]).knowledge_version == version + 1


def test_validate_knowledge_on_clean_knowledge_changes_nothing(
    client: TestClient, services: Services, headers: dict[str, str], user: UserRecord
) -> None:
    created = create_assistant(client, headers)
    add_knowledge(services, user.id, created["id"], "Real answer.")
    before = stored(services, created["id"])
    body = client.post(f"/api/assistants/{created['id']}/validate-knowledge",
                       headers=headers).json()
    assert body["changes"] == {"knowledge_removed": 0, "fallback_sources_removed": False}
    assert stored(services, created["id"]) == before


# --- stats ----------------------------------------------------------------------------------


def test_stats_route_is_not_taken_for_an_assistant_id(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.get("/api/assistants/stats", headers=headers)
    assert response.status_code == 200
    assert response.json() == {
        "global": {"totalAssistants": 0, "activeAssistants": 0, "totalMessages": 0,
                   "totalDialogs": 0},
        "byAssistant": [],
    }


def test_stats_count_ai_replies_and_dialogs_of_the_last_30_days(
    client: TestClient, services: Services, headers: dict[str, str], user: UserRecord
) -> None:
    busy = create_assistant(client, headers, name="Busy")
    idle = create_assistant(client, headers, name="Idle", is_active=False)
    add_dialog(services, user.id, busy["id"], senders=("user", "assistant", "assistant"))
    add_dialog(services, user.id, busy["id"], senders=("user", "manager", "system"))
    add_dialog(services, user.id, busy["id"], age=dt.timedelta(days=40))

    body = client.get("/api/assistants/stats", headers=headers).json()

    assert body["global"] == {"totalAssistants": 2, "activeAssistants": 1,
                              "totalMessages": 2, "totalDialogs": 2}
    by_id = {item["id"]: item for item in body["byAssistant"]}
    assert by_id[busy["id"]] == {"id": busy["id"], "name": "Busy", "is_active": True,
                                 "messages": 2, "dialogs": 2}
    assert by_id[idle["id"]]["messages"] == 0 and by_id[idle["id"]]["is_active"] is False


def test_assistant_stats_have_total_monthly_and_weekly_windows(
    client: TestClient, services: Services, headers: dict[str, str], user: UserRecord
) -> None:
    created = create_assistant(client, headers)
    add_dialog(services, user.id, created["id"])
    add_dialog(services, user.id, created["id"], age=dt.timedelta(days=10))
    add_dialog(services, user.id, created["id"], age=dt.timedelta(days=100))
    add_document(services, user.id, created["id"])

    body = client.get(f"/api/assistants/{created['id']}/stats", headers=headers).json()

    assert body["assistant"] == {"id": created["id"], "name": created["name"],
                                 "is_active": True, "created_at": created["created_at"]}
    assert body["stats"] == {
        "total_messages": 3, "total_dialogs": 3, "total_documents": 1,
        "monthly": {"messages": 2, "dialogs": 2},
        "weekly": {"messages": 1, "dialogs": 1},
    }


# --- delete ---------------------------------------------------------------------------------


def test_delete_detaches_dialogs_and_removes_what_only_it_used(
    client: TestClient, services: Services, headers: dict[str, str], user: UserRecord
) -> None:
    created = create_assistant(client, headers)
    aid = created["id"]
    uploads = services.settings.data_dir / "uploads"
    stored_file = uploads / f"{user.id}" / "guide.txt"
    stored_file.parent.mkdir(parents=True)
    stored_file.write_text("guide")
    doc = add_document(services, user.id, aid, storage_key=f"{user.id}/guide.txt")
    add_knowledge(services, user.id, aid, "From the guide.", doc_id=doc)
    add_bot(services, user.id, aid)
    dialog = add_dialog(services, user.id, aid)

    response = client.delete(f"/api/assistants/{aid}", headers=headers)

    assert response.status_code == 200 and response.json() == {"ok": True}
    assert client.get(f"/api/assistants/{aid}", headers=headers).status_code == 404
    assert count(services, Dialog, Dialog.id == dialog, Dialog.assistant_id.is_(None)) == 1
    assert count(services, DialogMessage, DialogMessage.dialog_id == dialog) == 2
    assert count(services, Document, Document.id == doc) == 0
    assert count(services, UserKnowledge, UserKnowledge.user_id == user.id) == 0
    assert count(services, KnowledgeChunk, KnowledgeChunk.user_id == user.id) == 0
    assert count(services, BotInstance, BotInstance.user_id == user.id) == 0
    assert not stored_file.exists()


def test_delete_keeps_a_document_another_assistant_still_uses(
    client: TestClient, services: Services, headers: dict[str, str], user: UserRecord
) -> None:
    doomed = create_assistant(client, headers, name="Doomed")
    other = create_assistant(client, headers, name="Other")
    shared = add_document(services, user.id, doomed["id"], filename="shared.pdf")
    add_knowledge(services, user.id, doomed["id"], "shared text", doc_id=shared)
    add_knowledge(services, user.id, other["id"], "shared text", doc_id=shared)

    assert client.delete(f"/api/assistants/{doomed['id']}", headers=headers).status_code == 200

    assert count(services, Document, Document.id == shared) == 1
    assert count(services, UserKnowledge, UserKnowledge.assistant_id == other["id"]) == 1


def test_delete_never_removes_files_outside_uploads(
    client: TestClient, services: Services, headers: dict[str, str], user: UserRecord,
    tmp_path: Path,
) -> None:
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    created = create_assistant(client, headers)
    add_document(services, user.id, created["id"], storage_key="../../precious.txt")
    assert client.delete(f"/api/assistants/{created['id']}", headers=headers).status_code == 200
    assert outside.exists()


# --- service lookup -------------------------------------------------------------------------


def test_user_telegram_assistant_needs_the_service_token(
    client: TestClient, headers: dict[str, str], user: UserRecord
) -> None:
    response = client.get(f"/api/user-telegram-assistant/{user.id}", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_service_token"


def test_user_telegram_assistant_is_the_one_behind_the_first_active_bot(
    client: TestClient, services: Services, headers: dict[str, str], user: UserRecord
) -> None:
    paused = create_assistant(client, headers, name="Paused bot")
    live = create_assistant(client, headers, name="Live bot")
    add_bot(services, user.id, paused["id"], is_active=False)
    add_bot(services, user.id, live["id"])
    response = client.get(f"/api/user-telegram-assistant/{user.id}",
                          headers={"X-Service-Token": SERVICE_TOKEN})
    assert response.status_code == 200
    assert response.json() == {"id": live["id"], "name": "Live bot",
                               "system_prompt": live["system_prompt"], "is_active": True}


def test_user_telegram_assistant_is_null_without_a_bot(
    client: TestClient, user: UserRecord
) -> None:
    response = client.get(f"/api/user-telegram-assistant/{user.id}",
                          headers={"X-Service-Token": SERVICE_TOKEN})
    assert response.status_code == 200
    assert response.json() is None
