"""Doors of the `ai_chat` module: the landing-page sales chat and its operations (spec §4.8)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from pydantic import BaseModel, Field

from server.admin_ai_keys import do_reset_key_health
from server.errors import not_found
from server.http.routing import ApiRouter, Call
from server.http.schemas import Strict
from server.landing_chat import answer_landing_chat
from server.landing_sessions import LandingSession
from server.store.types import iso

router = ApiRouter("ai_chat")

SESSION_ID = r"^[A-Za-z0-9_\-.:]{8,128}$"
OPS_AUTH = ("service", "admin")


class InitializeIn(Strict):
    session_id: str = Field(pattern=SESSION_ID)
    context: Any = Field(...)
    timestamp: str | None = Field(default=None, max_length=64)


class ChatIn(Strict):
    session_id: str = Field(pattern=SESSION_ID)
    message: str = Field(min_length=1, max_length=2000)
    timestamp: str | None = Field(default=None, max_length=64)


class Button(BaseModel):
    label: str
    url: str | None = None
    action: str | None = None


class ChatOut(BaseModel):
    message: str
    buttons: list[Button] | None
    session_id: str
    source: str


class SuccessOut(BaseModel):
    success: bool
    message: str


class SessionOut(BaseModel):
    session_id: str
    created_at: str
    last_activity: str
    messages_count: int


def _session_id(call: Call) -> str:
    session_id = call.path["session_id"]
    if not re.match(SESSION_ID, session_id):
        raise not_found("Session not found")
    return session_id


@router.route("POST", "/api/ai/chat", auth="none", body=ChatIn, response=ChatOut,
              rate_limit="landing_chat", summary="Landing-page sales chat: one visitor turn")
async def chat(call: Call) -> dict[str, Any]:
    services = call.services
    body: ChatIn = call.body
    return await answer_landing_chat(
        services.landing_sessions, services.llm, services.db, services.live_system,
        body.session_id, body.message.strip(),
    )


@router.route("POST", "/api/ai/initialize-context", auth="none", body=InitializeIn,
              response=SuccessOut, rate_limit="landing_chat",
              summary="Create (or restart) a landing-chat session")
async def initialize_context(call: Call) -> dict[str, Any]:
    body: InitializeIn = call.body
    await call.services.landing_sessions.put(LandingSession.new(body.session_id, body.context))
    return {"success": True, "message": "Session initialised", "session_id": body.session_id}


@router.route("GET", "/api/ai/session/{session_id}", auth="none", response=SessionOut,
              str_params=("session_id",), summary="Landing-chat session info")
async def get_session(call: Call) -> dict[str, Any]:
    session = await call.services.landing_sessions.get(_session_id(call))
    if session is None:
        raise not_found("Session not found")

    def stamp(value: float) -> str | None:
        return iso(dt.datetime.fromtimestamp(value, dt.UTC))

    return {
        "session_id": session.session_id,
        "created_at": stamp(session.created_at),
        "last_activity": stamp(session.last_activity),
        "messages_count": len(session.messages),
    }


@router.route("DELETE", "/api/ai/session/{session_id}", auth="none", response=SuccessOut,
              str_params=("session_id",), summary="Drop a landing-chat session")
async def delete_session(call: Call) -> dict[str, Any]:
    session_id = call.path["session_id"]
    await call.services.landing_sessions.delete(session_id)
    return {"success": True, "message": "Session deleted"}


async def _provider_status(call: Call) -> tuple[bool, dict[str, dict[str, Any]]]:
    has_key = await call.services.llm.has_any_key_async()
    return has_key, {
        "openai": {"available": has_key, "name": "OpenAI-compatible API (key pool)"},
        "offline": {"available": True, "name": "Offline knowledge-base responder"},
    }


@router.route("GET", "/api/ai/debug", auth=OPS_AUTH, summary="AI provider status (ops)")
async def debug(call: Call) -> dict[str, Any]:
    has_key, status = await _provider_status(call)
    key = call.services.settings.openai_api_key or ""
    return {
        "openai_key_set": bool(key),
        "openai_key_length": len(key),
        "available_providers": [name for name, item in status.items() if item["available"]],
        "provider_status": status,
        "session_count": await call.services.landing_sessions.count(),
    }


@router.route("POST", "/api/ai/reload-config", auth=OPS_AUTH,
              summary="Reset the AI providers' health (rested keys, error counters)")
async def reload_config(call: Call) -> dict[str, Any]:
    await call.run(do_reset_key_health, call.services.db)
    has_key, status = await _provider_status(call)
    key = call.services.settings.openai_api_key or ""
    return {
        "success": True,
        "message": "AI providers re-initialised",
        "openai_key_length": len(key),
        "providers": [name for name, item in status.items() if item["available"]],
    }


@router.route("POST", "/api/ai/clear-all-sessions", auth=OPS_AUTH,
              summary="Wipe every landing-chat session")
async def clear_all_sessions(call: Call) -> dict[str, Any]:
    removed = await call.services.landing_sessions.clear()
    return {"success": True, "message": f"Removed {removed} sessions", "remaining_sessions": 0}
