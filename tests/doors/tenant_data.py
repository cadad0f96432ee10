"""Tenant rows for the user-management door tests, written straight into the store."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from server.context import Services
from server.store import users as user_store
from server.store.models import (
    Assistant,
    AuditLog,
    BalanceTransaction,
    BotInstance,
    Dialog,
    DialogMessage,
    Document,
    OperatorPresence,
    UserKnowledge,
)
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]
MakeUser = Callable[..., UserRecord]


def stored(services: Services, user_id: int) -> UserRecord | None:
    with services.db.read() as session:
        return user_store.get_user(session, user_id)


def audit_actions(services: Services, actor_id: int) -> list[str]:
    with services.db.read() as session:
        rows = session.execute(
            select(AuditLog.action).where(AuditLog.user_id == actor_id).order_by(AuditLog.id)
        )
        return [action for (action,) in rows]


def count(services: Services, model: Any, **where: Any) -> int:
    with services.db.read() as session:
        query = select(func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return session.execute(query).scalar_one()


@dataclasses.dataclass(frozen=True)
class TenantData:
    assistant_id: int
    dialog_id: int
    document_id: int
    storage_key: str


def add_tenant_data(
    services: Services, owner_id: int, *, messages: int = 2, storage_key: str | None = None
) -> TenantData:
    """One of each kind of tenant row: assistant, dialog + messages, document, knowledge,
    bot, ledger row, operator presence, legacy tokens."""
    key = storage_key or f"{owner_id}/doc.txt"
    with services.db.write() as session:
        assistant = Assistant(user_id=owner_id, name="Helper")
        session.add(assistant)
        session.flush()
        dialog = Dialog(user_id=owner_id, assistant_id=assistant.id, guest_id="guest-1")
        document = Document(user_id=owner_id, assistant_id=assistant.id, filename="doc.txt",
                            storage_key=key)
        session.add_all([dialog, document])
        session.flush()
        for seq in range(1, messages + 1):
            session.add(DialogMessage(dialog_id=dialog.id, seq=seq, sender="user", text=f"m{seq}"))
        session.add_all([
            UserKnowledge(user_id=owner_id, assistant_id=assistant.id, doc_id=document.id,
                          content="facts"),
            BotInstance(user_id=owner_id, assistant_id=assistant.id, bot_token="123:abc"),
            BalanceTransaction(user_id=owner_id, amount=Decimal("10.00"), transaction_type="topup",
                               balance_before=Decimal("0.00"), balance_after=Decimal("10.00")),
            OperatorPresence(user_id=owner_id),
        ])
        user_store.set_legacy_tokens(session, owner_id, "sk-legacy", "999:legacy")
    return TenantData(assistant.id, dialog.id, document.id, key)
