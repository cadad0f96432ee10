"""Doors of the `assistants` module (spec §4.3, plus §5.A rotate and §5.B get/stats).

Thin: parse, call a capability of `server/assistants.py` / `server/assistant_knowledge.py`,
render. Not served here: `GET …/{assistant_id}/dialogs` (comes with the real-time issue) and
`POST …/{assistant_id}/ingest-website` (needs the website fetcher of the documents module).
`/api/assistants/stats` is declared before `/api/assistants/{assistant_id}` (spec §11.1).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel

from server import assistant_knowledge as knowledge
from server import assistants
from server.http.routing import ApiRouter, Call
from server.http.schemas import Strict
from server.store.assistants import AssistantRecord, DocumentRecord
from server.store.types import iso

router = ApiRouter("assistants")

ASSISTANT = "/api/assistants/{assistant_id}"


class AssistantRead(BaseModel):
    id: int
    user_id: int
    name: str
    ai_model: str
    system_prompt: str
    is_active: bool
    website_integration_enabled: bool
    allowed_domains: str | None
    operator_name: str | None
    business_name: str | None
    avatar_url: str | None
    widget_theme: str | None
    widget_settings: dict[str, Any] | None
    created_at: str
    updated_at: str


class WidgetFieldsIn(Strict):
    """The personalisation fields (all optional); value rules: `server/assistant_rules.py`."""

    allowed_domains: str | None = None
    operator_name: str | None = None
    business_name: str | None = None
    avatar_url: str | None = None
    widget_theme: str | None = None
    widget_settings: dict[str, Any] | None = None


class AssistantPatchIn(WidgetFieldsIn):
    name: str | None = None
    ai_model: str | None = None
    system_prompt: str | None = None
    is_active: bool | None = None
    website_integration_enabled: bool | None = None


class AssistantCreateIn(AssistantPatchIn):
    name: str


class WebsiteIntegrationIn(Strict):
    # Required: an empty body must not silently disable the integration (spec §11.17).
    enabled: bool


def given(body: BaseModel) -> dict[str, Any]:
    """Only the fields the client sent (PATCH semantics; an explicit null is kept)."""
    return body.model_dump(exclude_unset=True)


def render_assistant(record: AssistantRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "user_id": record.user_id,
        "name": record.name,
        "ai_model": record.ai_model,
        "system_prompt": record.system_prompt,
        "is_active": record.is_active,
        "website_integration_enabled": record.website_integration_enabled,
        "allowed_domains": record.allowed_domains or None,
        "operator_name": record.operator_name,
        "business_name": record.business_name,
        "avatar_url": record.avatar_url,
        "widget_theme": record.widget_theme,
        "widget_settings": record.widget_settings or None,
        "created_at": iso(record.created_at),
        "updated_at": iso(record.updated_at),
    }


def render_document(document: DocumentRecord) -> dict[str, Any]:
    return {
        "id": document.id,
        "user_id": document.user_id,
        "filename": document.filename,
        "size": document.size,
        "upload_date": iso(document.upload_date),
    }


# --- collection -----------------------------------------------------------------------------


@router.route("GET", "/api/assistants", auth="user", response=list[AssistantRead],
              summary="List own assistants, newest first")
async def list_assistants(call: Call) -> list[dict[str, Any]]:
    records = await call.run(assistants.list_assistants, call.services, call.user.id)
    return [render_assistant(record) for record in records]


@router.route("POST", "/api/assistants", auth="user", body=AssistantCreateIn,
              response=AssistantRead, errors=(422,), summary="Create an assistant")
async def create_assistant(call: Call) -> dict[str, Any]:
    record = await call.run(
        assistants.do_create_assistant, call.services, call.user.id, given(call.body)
    )
    return render_assistant(record)


@router.route("GET", "/api/assistants/stats", auth="user",
              summary="30-day activity of all own assistants")
async def assistants_stats(call: Call) -> dict[str, Any]:
    return await call.run(knowledge.assistants_overview, call.services, call.user.id)


# --- one assistant --------------------------------------------------------------------------


@router.route("GET", ASSISTANT, auth="user", response=AssistantRead, errors=(404,),
              summary="One own assistant")
async def get_assistant(call: Call) -> dict[str, Any]:
    record = await call.run(
        assistants.get_assistant, call.services, call.user.id, call.path["assistant_id"]
    )
    return render_assistant(record)


@router.route("PATCH", ASSISTANT, auth="user", body=AssistantPatchIn, response=AssistantRead,
              errors=(404, 422), summary="Update assistant fields; bumps knowledge_version")
async def update_assistant(call: Call) -> dict[str, Any]:
    record = await call.run(
        assistants.do_update_assistant, call.services, call.user.id,
        call.path["assistant_id"], given(call.body),
    )
    _recheck_visitors(call, record.id)
    return render_assistant(record)


@router.route("DELETE", ASSISTANT, auth="user", errors=(404,),
              summary="Delete an assistant, its knowledge, bots and documents; keep dialogs")
async def delete_assistant(call: Call) -> dict[str, Any]:
    await call.run(
        assistants.do_delete_assistant, call.services, call.user.id, call.path["assistant_id"]
    )
    _recheck_visitors(call, call.path["assistant_id"])
    return {"ok": True}


@router.route("GET", ASSISTANT + "/settings", auth="user", errors=(404,),
              summary="Core assistant settings")
async def assistant_settings(call: Call) -> dict[str, Any]:
    record = await call.run(
        assistants.get_assistant, call.services, call.user.id, call.path["assistant_id"]
    )
    return {
        "id": record.id,
        "name": record.name,
        "ai_model": record.ai_model,
        "system_prompt": record.system_prompt,
        "is_active": record.is_active,
        "website_integration_enabled": record.website_integration_enabled,
    }


@router.route("GET", ASSISTANT + "/stats", auth="user", errors=(404,),
              summary="All-time, 30-day and 7-day activity of one assistant")
async def assistant_stats(call: Call) -> dict[str, Any]:
    stats = await call.run(
        knowledge.assistant_stats, call.services, call.user.id, call.path["assistant_id"]
    )
    record = stats.assistant
    return {
        "assistant": {"id": record.id, "name": record.name, "is_active": record.is_active,
                      "created_at": iso(record.created_at)},
        "stats": {
            "total_messages": stats.total.messages,
            "total_dialogs": stats.total.dialogs,
            "total_documents": stats.documents,
            "monthly": dataclasses.asdict(stats.monthly),
            "weekly": dataclasses.asdict(stats.weekly),
        },
    }


@router.route("POST", ASSISTANT + "/website-integration", auth="user",
              body=WebsiteIntegrationIn, errors=(404, 422),
              summary="Turn the website integration on or off")
async def website_integration(call: Call) -> dict[str, Any]:
    record = await call.run(
        assistants.do_set_website_integration, call.services, call.user.id,
        call.path["assistant_id"], call.body.enabled,
    )
    _recheck_visitors(call, record.id)
    enabled = record.website_integration_enabled
    return {
        "success": True,
        "message": f"Website integration {'enabled' if enabled else 'disabled'}",
        "website_integration_enabled": enabled,
    }


# --- knowledge and documents ----------------------------------------------------------------


@router.route("GET", ASSISTANT + "/knowledge", auth="user", errors=(404,),
              summary="Assistant system prompt and knowledge texts")
async def assistant_knowledge(call: Call) -> dict[str, Any]:
    return await call.run(
        knowledge.knowledge_of, call.services, call.user.id, call.path["assistant_id"]
    )


@router.route("GET", ASSISTANT + "/documents", auth="user", errors=(404,),
              summary="Documents linked to the assistant")
async def assistant_documents(call: Call) -> list[dict[str, Any]]:
    documents = await call.run(
        knowledge.documents_of, call.services, call.user.id, call.path["assistant_id"]
    )
    return [render_document(document) for document in documents]


@router.route("POST", ASSISTANT + "/validate-knowledge", auth="user", errors=(404,),
              summary="Find and DELETE fallback/template knowledge entries")
async def validate_knowledge(call: Call) -> dict[str, Any]:
    return await call.run(
        knowledge.do_validate_knowledge, call.services, call.user.id, call.path["assistant_id"]
    )


# --- widget and embed code ------------------------------------------------------------------


@router.route("GET", ASSISTANT + "/widget-settings", auth="user", errors=(404,),
              summary="Saved widget settings merged over the defaults")
async def get_widget_settings(call: Call) -> dict[str, Any]:
    settings = await call.run(
        assistants.widget_settings_of, call.services, call.user.id, call.path["assistant_id"]
    )
    return {"settings": settings, "assistant_id": call.path["assistant_id"]}


@router.route("POST", ASSISTANT + "/widget-settings", auth="user", body=WidgetFieldsIn,
              errors=(404, 422), summary="Save widget personalisation (widget_settings merged)")
async def save_widget_settings(call: Call) -> dict[str, Any]:
    record = await call.run(
        assistants.do_save_widget_settings, call.services, call.user.id,
        call.path["assistant_id"], given(call.body),
    )
    return {
        "success": True,
        "message": "Widget settings saved",
        "settings": {
            "operator_name": record.operator_name,
            "business_name": record.business_name,
            "avatar_url": record.avatar_url,
            "widget_theme": record.widget_theme,
            "allowed_domains": record.allowed_domains or None,
            "widget_settings": record.widget_settings,
        },
    }


@router.route("GET", ASSISTANT + "/embed-code", auth="user", errors=(400, 404),
              summary="Mint a domain-bound site token and the widget.js script tag")
async def embed_code(call: Call) -> dict[str, Any]:
    embed = await call.run(
        assistants.embed_code_for, call.services, call.user.id, call.path["assistant_id"]
    )
    return dataclasses.asdict(embed)


@router.route("POST", ASSISTANT + "/embed-code/rotate", auth="user", errors=(400, 404),
              summary="Bump widget_version (revokes every older site token); new embed code")
async def rotate_embed_code(call: Call) -> dict[str, Any]:
    embed = await call.run(
        assistants.do_rotate_embed_code, call.services, call.user.id, call.path["assistant_id"]
    )
    _recheck_visitors(call, call.path["assistant_id"])
    return dataclasses.asdict(embed)


def _recheck_visitors(call: Call, assistant_id: int) -> None:
    """Open visitor sockets of a changed assistant are re-checked on every node (a rotated
    embed code or new domains close the sockets of older site tokens with 4002)."""
    if call.services.live is not None:
        call.services.live.assistant_changed(assistant_id)


# --- service --------------------------------------------------------------------------------


@router.route("GET", "/api/user-telegram-assistant/{user_id}", auth="service",
              summary="Assistant of the user's first active Telegram bot, or null")
async def user_telegram_assistant(call: Call) -> dict[str, Any] | None:
    record = await call.run(assistants.telegram_assistant_of, call.services, call.path["user_id"])
    if record is None:
        return None
    return {"id": record.id, "name": record.name, "system_prompt": record.system_prompt,
            "is_active": record.is_active}
