"""The admin's AI key actions (spec §4.7): the pool (`ai-tokens`, whose keys are never handed
back), its health reset, and the legacy per-user OpenAI key (`openai-token`)."""

from __future__ import annotations

from typing import Any

from server.errors import not_found
from server.store import ai_keys, ai_usage, legacy_tokens
from server.store import users as user_store
from server.store.ai_keys import AiKeyRecord
from server.store.db import Database
from server.store.legacy_tokens import LegacyToken
from server.store.types import iso


def render_key(key: AiKeyRecord) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "is_active": key.is_active,
        "priority": key.priority,
        "models": list(key.models),
        "model_access": key.model_access,
        "base_url": key.base_url,
        "daily_usage": key.daily_usage,
        "daily_limit": key.daily_limit,
        "daily_usage_percent": key.daily_usage_percent,
        "monthly_usage": key.monthly_usage,
        "monthly_limit": key.monthly_limit,
        "monthly_usage_percent": key.monthly_usage_percent,
        "error_count": key.error_count,
        "last_used": iso(key.last_used),
        "last_error": key.last_error,
        "rested_until": iso(key.rested_until),
        "notes": key.notes,
    }


def list_keys(db: Database) -> list[dict[str, Any]]:
    with db.read() as session:
        return [render_key(key) for key in ai_keys.list_keys(session)]


def do_add_key(db: Database, fields: dict[str, Any]) -> dict[str, Any]:
    with db.write() as session:
        key = ai_keys.create_key(session, **fields)
    return {
        "id": key.id, "name": key.name, "model_access": key.model_access,
        "daily_limit": key.daily_limit, "monthly_limit": key.monthly_limit,
        "priority": key.priority, "is_active": key.is_active, "notes": key.notes,
        "base_url": key.base_url,
    }


def do_update_key(db: Database, key_id: int, fields: dict[str, Any]) -> dict[str, Any]:
    with db.write() as session:
        if ai_keys.update_key(session, key_id, **fields) is None:
            raise not_found("AI key not found")
    return {"message": "AI key updated"}


def do_delete_key(db: Database, key_id: int) -> dict[str, Any]:
    with db.write() as session:
        if not ai_keys.delete_key(session, key_id):
            raise not_found("AI key not found")
    return {"message": "AI key deactivated"}


def key_usage(db: Database, key_id: int) -> list[dict[str, Any]]:
    with db.read() as session:
        return [
            {
                "date": day.date, "requests": day.requests, "tokens": day.tokens,
                "avg_response_time": day.avg_response_time,
                "successful_requests": day.successful_requests,
                "failed_requests": day.failed_requests, "success_rate": day.success_rate,
            }
            for day in ai_usage.usage_by_day(session, key_id)
        ]


def do_reset_key_health(db: Database) -> int:
    with db.write() as session:
        return ai_keys.reset_key_health(session)


def _render_legacy(token: LegacyToken) -> dict[str, Any]:
    return {"id": token.id, "user_id": token.user_id, "token": token.token,
            "created_at": iso(token.created_at)}


def legacy_openai_token(db: Database, user_id: int) -> dict[str, Any]:
    with db.read() as session:
        token = legacy_tokens.get_openai_token(session, user_id)
    if token is None:
        raise not_found("OpenAI token not set")
    return _render_legacy(token)


def do_set_legacy_openai_token(db: Database, user_id: int, value: str) -> dict[str, Any]:
    with db.write() as session:
        if user_store.get_user(session, user_id) is None:
            raise not_found("User not found")
        return _render_legacy(legacy_tokens.set_openai_token(session, user_id, value))
