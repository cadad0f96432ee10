"""The admin's AI key pool actions (spec §4.7 `ai-tokens`): keys are never handed back."""

from __future__ import annotations

from typing import Any

from server.errors import not_found
from server.store import ai_keys, ai_usage
from server.store.ai_keys import AiKeyRecord
from server.store.db import Database
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
