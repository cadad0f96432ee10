"""Doors that post a message into a dialog (spec §5.A): visitors through the site and widget
routes, owners and operators through the dashboard route.

Thin: check the caller owns the dialog, then hand the message to the dialog's actor, which
assigns its `seq`, commits it, publishes it and (for a visitor in AI mode) answers it. REST
callers wait for that answer; WebSocket clients get it as events.

A visitor's `sender` is always `user` (the original trusted the field, so a visitor could post
rows as `assistant` or `manager`). An operator reply (`sender=manager`) needs the dialog to be
taken over by the caller; when it is not, the caller takes it over first (spec §4.4 "force
takeover"), with the same capacity rules as the handoff route.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from server.actors.dialog import Posted
from server.actors.events import message_payload
from server.dialog_access import dialog_for
from server.errors import AppError, ErrorCode
from server.http.handoff import take_over
from server.http.routing import ApiRouter, Call
from server.http.schemas import Strict
from server.store.dialog_queries import DialogRecord
from server.store.dialogs import MessageRecord
from server.store.types import iso

site_router = ApiRouter("site")
dashboard_router = ApiRouter("dialogs")

MAX_TEXT_CHARS = 10_000


class VisitorMessageIn(Strict):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    sender: str | None = None  # accepted for old clients, ignored: a visitor is always "user"
    client_message_id: str | None = Field(default=None, min_length=1, max_length=64)


class DashboardMessageIn(Strict):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    sender: Literal["user", "assistant", "manager"] = "user"
    client_message_id: str | None = Field(default=None, min_length=1, max_length=64)


def render_legacy_message(message: MessageRecord) -> dict[str, Any]:
    return message_payload(message)


def _text(raw: str) -> str:
    text = raw.strip()
    if not text:
        raise AppError(ErrorCode.BAD_REQUEST, "The message text is empty", status=400)
    return text


async def _dialog(call: Call) -> DialogRecord:
    def load() -> DialogRecord:
        with call.services.db.read() as session:
            return dialog_for(session, call.caller, int(call.path["dialog_id"]))

    return await call.run(load)


def render_visitor_reply(posted: Posted) -> dict[str, Any]:
    """The four shapes of spec §5.A; a refused charge is the 402 itself."""
    user_message = render_legacy_message(posted.message)
    if posted.handoff_triggered:
        return {"user_message": user_message, "handoff_triggered": True,
                "handoff_status": posted.handoff_status or "requested"}
    if posted.ai_blocked is not None and posted.ai_blocked != "superseded":
        return {"user_message": user_message, "ai_blocked": True, "reason": posted.ai_blocked}
    if posted.ai_error is not None:
        if posted.ai_error.status == 402:
            raise posted.ai_error
        return {"user_message": user_message, "assistant_message": None,
                "ai_error": posted.ai_error.detail}
    answer = render_legacy_message(posted.answer) if posted.answer is not None else None
    return {"user_message": user_message, "assistant_message": answer}


async def post_visitor_message(call: Call) -> dict[str, Any]:
    dialog = await _dialog(call)
    body: VisitorMessageIn = call.body
    text = _text(body.text)
    await call.limit("visitor_message", f"dialog_{dialog.id}")
    posted = await call.services.live_system.post(
        dialog.id, sender="user", text=text, client_message_id=body.client_message_id,
        wait_for_answer=True,
    )
    if posted.duplicate:
        return {"user_message": render_legacy_message(posted.message), "assistant_message": None,
                "duplicate": True}
    return render_visitor_reply(posted)


site_router.route(
    "POST", "/api/site/dialogs/{dialog_id}/messages", auth="site", body=VisitorMessageIn,
    errors=(400, 402, 404), summary="A visitor's message (site token); answered by the AI",
)(post_visitor_message)
site_router.route(
    "POST", "/api/widget/dialogs/{dialog_id}/messages", auth="widget", body=VisitorMessageIn,
    errors=(400, 402, 404), summary="A visitor's message (widget mode); answered by the AI",
)(post_visitor_message)


@dashboard_router.route("POST", "/api/dialogs/{dialog_id}/messages", auth="user",
                        body=DashboardMessageIn, errors=(400, 402, 404, 409),
                        summary="Operator reply (manager) or the owner's test chat (user)")
async def post_dashboard_message(call: Call) -> dict[str, Any]:
    dialog = await _dialog(call)
    body: DashboardMessageIn = call.body
    text = _text(body.text)
    user = call.user
    live = call.services.live_system
    if body.sender == "manager" and not (
        dialog.handoff_status == "active" and dialog.assigned_manager_id == user.id
    ):
        await take_over(call, dialog, legacy_route=True)
    posted = await live.post(
        dialog.id, sender=body.sender, text=text, client_message_id=body.client_message_id,
        author_user_id=user.id, author_name=user.first_name,
        wait_for_answer=body.sender == "user", run_ai=body.sender == "user",
    )
    if posted.ai_error is not None and posted.ai_error.status == 402:
        raise posted.ai_error
    message = posted.message
    return {"id": message.id, "sender": message.sender, "text": message.text,
            "timestamp": iso(message.timestamp), "seq": message.seq,
            "system_type": message.system_type}
