"""Assistants in the store (reads used by the guards; the assistants issue adds the rest)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from server.store.models import Assistant


@dataclasses.dataclass(frozen=True, slots=True)
class AssistantRecord:
    id: int
    user_id: int
    name: str
    ai_model: str
    system_prompt: str
    is_active: bool
    website_integration_enabled: bool
    allow_tokenless_widget: bool
    allowed_domains: str
    knowledge_version: int
    widget_version: int
    operator_name: str | None
    business_name: str | None
    avatar_url: str | None
    widget_theme: str | None
    widget_settings: dict[str, Any]
    fallback_text: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


_FIELDS = [f.name for f in dataclasses.fields(AssistantRecord)]


def to_record(row: Assistant) -> AssistantRecord:
    values = {name: getattr(row, name) for name in _FIELDS}
    values["widget_settings"] = dict(row.widget_settings or {})
    return AssistantRecord(**values)


def get_assistant(session: Session, assistant_id: int) -> AssistantRecord | None:
    row = session.get(Assistant, assistant_id)
    return to_record(row) if row is not None else None
