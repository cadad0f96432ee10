"""The legacy per-user OpenAI key (spec §4.7 `openai-token`); not used by the AI pipeline."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.store.models import OpenAIToken


@dataclasses.dataclass(frozen=True, slots=True)
class LegacyToken:
    id: int
    user_id: int
    token: str
    created_at: dt.datetime


def _record(row: OpenAIToken) -> LegacyToken:
    return LegacyToken(row.id, row.user_id, row.token, row.created_at)


def get_openai_token(session: Session, user_id: int) -> LegacyToken | None:
    row = session.execute(
        select(OpenAIToken).where(OpenAIToken.user_id == user_id)
    ).scalar_one_or_none()
    return _record(row) if row is not None else None


def set_openai_token(session: Session, user_id: int, token: str) -> LegacyToken:
    row = session.execute(
        select(OpenAIToken).where(OpenAIToken.user_id == user_id)
    ).scalar_one_or_none()
    if row is None:
        row = OpenAIToken(user_id=user_id, token=token)
        session.add(row)
    else:
        row.token = token
    session.flush()
    return _record(row)
