"""Helpers of the assistants door tests: create assistants through the API, seed the rows
around them (dialogs, messages, knowledge, documents, bots) straight in the store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from starlette.testclient import TestClient

from server.context import Services
from server.store import assistants as assistant_store
from server.store.assistants import AssistantRecord
from server.store.models import (
    BotInstance,
    Dialog,
    DialogMessage,
    Document,
    KnowledgeChunk,
    UserKnowledge,
)
from server.store.types import utcnow
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]


def create_assistant(
    client: TestClient, headers: dict[str, str], **fields: Any
) -> dict[str, Any]:
    body = {"name": "Helper", **fields}
    response = client.post("/api/assistants", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def stored(services: Services, assistant_id: int) -> AssistantRecord:
    """The assistant's row as the store has it (it must exist)."""
    with services.db.read() as session:
        record = assistant_store.get_assistant(session, assistant_id)
    assert record is not None, f"assistant {assistant_id} is gone"
    return record


def add_dialog(
    services: Services,
    owner_id: int,
    assistant_id: int | None,
    *,
    age: dt.timedelta = dt.timedelta(0),
    senders: tuple[str, ...] = ("user", "assistant"),
) -> int:
    """A dialog started `age` ago with one message per sender, stamped at its start."""
    at = utcnow() - age
    with services.db.write() as session:
        dialog = Dialog(user_id=owner_id, assistant_id=assistant_id, started_at=at,
                        last_seq=len(senders))
        session.add(dialog)
        session.flush()
        for seq, sender in enumerate(senders, start=1):
            session.add(DialogMessage(dialog_id=dialog.id, seq=seq, sender=sender,
                                      text=f"{sender} says hi", timestamp=at))
        return dialog.id


def add_document(
    services: Services, owner_id: int, assistant_id: int | None = None,
    *, filename: str = "guide.txt", storage_key: str | None = None,
) -> int:
    with services.db.write() as session:
        document = Document(user_id=owner_id, assistant_id=assistant_id, filename=filename,
                            size=123, storage_key=storage_key)
        session.add(document)
        session.flush()
        return document.id


def add_knowledge(
    services: Services, owner_id: int, assistant_id: int | None, content: str,
    *, doc_id: int | None = None, type_: str = "original", doc_type: str | None = "faq",
) -> int:
    with services.db.write() as session:
        entry = UserKnowledge(user_id=owner_id, assistant_id=assistant_id, doc_id=doc_id,
                              content=content, type=type_, doc_type=doc_type)
        session.add(entry)
        session.flush()
        session.add(KnowledgeChunk(user_id=owner_id, assistant_id=assistant_id, doc_id=doc_id,
                                   knowledge_id=entry.id, chunk_text=content))
        return entry.id


def add_bot(
    services: Services, owner_id: int, assistant_id: int, *, is_active: bool = True
) -> int:
    with services.db.write() as session:
        bot = BotInstance(user_id=owner_id, assistant_id=assistant_id, platform="telegram",
                          bot_token="123:abc", is_active=is_active)
        session.add(bot)
        session.flush()
        return bot.id


def count(services: Services, model: Any, *conditions: Any) -> int:
    with services.db.read() as session:
        query = select(func.count()).select_from(model)
        for condition in conditions:
            query = query.where(condition)
        return session.execute(query).scalar_one()
