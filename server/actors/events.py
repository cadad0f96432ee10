"""The real-time event envelope of spec §6.5, built in one place.

Every dialog event is `{type, dialog_id, seq, timestamp, ...}` where `seq` is the dialog's last
committed message seq (for `message:new`, the message's own). The operator feed gets the same
events with message texts cut to a summary. Events are plain dicts (the bus carries JSON).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from server.store.dialogs import MessageRecord
from server.store.types import iso, utcnow

FEED_TEXT_CHARS = 200

MESSAGE_NEW = "message:new"
TYPING_START = "typing_start"
TYPING_STOP = "typing_stop"
AI_DELTA = "ai_delta"
MESSAGE_RECEIVED = "message_received"
OPERATOR_HANDLING = "operator_handling"
SLA_BREACHED = "handoff_sla_breached"

# What the visitor reads while a human handles the dialog (spec §8.5).
RECEIVED_NOTICE = "Your message has been received. An operator will reply shortly."
HANDLING_NOTICE = "An operator is handling this dialog: the AI does not answer."


def message_payload(message: MessageRecord) -> dict[str, Any]:
    return {
        "id": message.id,
        "dialog_id": message.dialog_id,
        "seq": message.seq,
        "sender": message.sender,
        "text": message.text,
        "timestamp": iso(message.timestamp),
        "system_type": message.system_type,
        "client_message_id": message.client_message_id,
    }


def envelope(
    event_type: str, dialog_id: int, seq: int, at: dt.datetime | None = None, **fields: Any
) -> dict[str, Any]:
    return {
        "type": event_type,
        "dialog_id": dialog_id,
        "seq": seq,
        "timestamp": iso(at or utcnow()),
        **fields,
    }


def message_new(message: MessageRecord) -> dict[str, Any]:
    payload = message_payload(message)
    return {
        "type": MESSAGE_NEW,
        "dialog_id": message.dialog_id,
        "seq": message.seq,
        "timestamp": payload["timestamp"],  # rendered once for both
        "message": payload,
    }


def feed_summary(event: Mapping[str, Any]) -> dict[str, Any]:
    """The operator-feed copy of an event: message texts cut to a summary."""
    message = event.get("message")
    if not isinstance(message, Mapping):
        return dict(event)
    text = message.get("text") or ""
    if len(text) <= FEED_TEXT_CHARS:
        return dict(event)
    return {**event, "message": {**message, "text": text[:FEED_TEXT_CHARS], "truncated": True}}


def manager_view(manager_id: int | None, name: str | None) -> dict[str, Any] | None:
    if manager_id is None:
        return None
    return {"id": manager_id, "name": name or f"User #{manager_id}", "avatar": None}
