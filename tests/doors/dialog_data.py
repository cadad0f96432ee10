"""Rows for the dialog and site door tests, written straight into the store."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from starlette.testclient import TestClient

from server.context import Services
from server.store.models import Assistant, BotInstance, Dialog, DialogMessage
from server.store.types import utcnow
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]
GUEST = "5b0c1f0e-3a51-4d8e-9c1e-2f4b6a7d8e90"
OTHER_GUEST = "a7e4d2c9-0b6f-4e21-8d3a-6c5b4a392817"
DOMAINS = "shop.example.com,example.org"


def add_assistant(services: Services, owner_id: int, **fields: Any) -> int:
    values: dict[str, Any] = {"name": "Helper", "allowed_domains": DOMAINS,
                              "website_integration_enabled": True}
    values.update(fields)
    with services.db.write() as session:
        row = Assistant(user_id=owner_id, **values)
        session.add(row)
        session.flush()
        return row.id


def add_bot(services: Services, owner_id: int, assistant_id: int, *, active: bool = True) -> int:
    with services.db.write() as session:
        bot = BotInstance(user_id=owner_id, assistant_id=assistant_id, bot_token="1:x",
                          is_active=active)
        session.add(bot)
        session.flush()
        return bot.id


def add_dialog(
    services: Services,
    owner_id: int,
    *,
    messages: Sequence[tuple[str, str]] = (),
    started_at: dt.datetime | None = None,
    **fields: Any,
) -> int:
    """A dialog with `messages` as (sender, text), one second apart from its start."""
    start = started_at or utcnow() - dt.timedelta(minutes=5)
    with services.db.write() as session:
        dialog = Dialog(user_id=owner_id, started_at=start, last_seq=len(messages), **fields)
        session.add(dialog)
        session.flush()
        for seq, (sender, text) in enumerate(messages, start=1):
            session.add(DialogMessage(
                dialog_id=dialog.id, seq=seq, sender=sender, text=text,
                message_kind="operator" if sender == "manager" else sender,
                timestamp=start + dt.timedelta(seconds=seq),
            ))
        return dialog.id


def embed_token(client: TestClient, headers: dict[str, str], assistant_id: int) -> str:
    """A full, domain-bound site token, minted the way the dashboard does."""
    response = client.get(f"/api/assistants/{assistant_id}/embed-code", headers=headers)
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def site_params(token: str, guest: str = GUEST) -> dict[str, str]:
    return {"site_token": token, "guest_id": guest}


def widget_params(assistant_id: int, guest: str = GUEST) -> dict[str, str | int]:
    return {"assistant_id": assistant_id, "guest_id": guest}
