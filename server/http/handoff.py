"""Handoff doors (spec §4.9, §3.1–§3.3): request, takeover, release, cancel, status, force-reset,
and the legacy `/api/dialogs/{id}/takeover|release`.

Thin: check who calls and what they own, turn the call into a command of the handoff state
machine and hand it to the dialog's actor (`services.live_system`), which decides, commits and
publishes; a refusal comes back as 409 naming the current state. The answer is the dialog's
`HandoffStatusOut` read after the commit.

Each route is served at its canonical dialog-scoped path and at the seed path without the id
(`/api/request` …), where `dialog_id` comes from the query or, for POSTs, a top-level body field
(the query wins; missing → 422, spec §3.1). `GET /api/status` without `dialog_id` is the public
liveness payload (§3.2).

A takeover goes through `LiveSystem.take_over`, which reserves the operator's slot before
asking the dialog (see there).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import Field, field_validator

from server.actors.handoff import (
    CancelRequest,
    ForceReset,
    LegacyRelease,
    Release,
    RequestHandoff,
)
from server.context import Services
from server.dialog_access import dialog_for
from server.errors import AppError, ErrorCode
from server.handoff_view import handoff_status_out, manager_name, sla_minutes
from server.http.guards import Caller, authenticate
from server.http.routing import ApiRouter, Call
from server.http.schemas import Lenient, Strict
from server.store.dialog_queries import DialogRecord
from server.store.types import utcnow

router = ApiRouter("handoff")
legacy = ApiRouter("dialogs")

DIALOG = "/api/dialogs/{dialog_id}/handoff"
VISITOR = ("site", "widget", "user", "service")
LIVENESS = {"message": "ReplyX API is running", "version": "1.0.0"}
MAX_DB_ID = 2**31 - 1


class DialogIdQuery(Lenient):
    dialog_id: int | None = Field(default=None, ge=1, le=MAX_DB_ID)


class RequestIn(Strict):
    request_id: str = Field(min_length=1, max_length=64)
    reason: Literal["keyword", "fallback", "retries", "manual", "auto_trigger"] = "manual"
    last_user_text: str | None = Field(default=None, max_length=1000)
    dialog_id: int | None = Field(default=None, ge=1, le=MAX_DB_ID)

    @field_validator("request_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        try:
            return str(uuid.UUID(value))
        except ValueError as exc:
            raise ValueError("request_id must be a UUID") from exc


class EmptyIn(Strict):
    dialog_id: int | None = Field(default=None, ge=1, le=MAX_DB_ID)


# --- helpers ------------------------------------------------------------------------------------


def _dialog_id(call: Call) -> int:
    if "dialog_id" in call.path:
        return int(call.path["dialog_id"])
    from_query = call.query.dialog_id if call.query is not None else None
    from_body = getattr(call.body, "dialog_id", None)
    found = from_query or from_body
    if found is None:
        raise AppError(ErrorCode.VALIDATION_ERROR, "dialog_id is required (query or body)",
                       status=422)
    return found


def _load(services: Services, caller: Caller, dialog_id: int) -> DialogRecord:
    with services.db.read() as session:
        return dialog_for(session, caller, dialog_id)


def _status_out(services: Services, caller: Caller, dialog_id: int) -> dict[str, Any]:
    with services.db.read() as session:
        dialog = dialog_for(session, caller, dialog_id)
        return handoff_status_out(session, dialog, utcnow(), sla_minutes(services.settings))


async def _dialog(call: Call) -> DialogRecord:
    return await call.run(_load, call.services, call.caller, _dialog_id(call))


async def _respond(call: Call, dialog_id: int) -> dict[str, Any]:
    return await call.run(_status_out, call.services, call.caller, dialog_id)


async def take_over(call: Call, dialog: DialogRecord, *, legacy_route: bool) -> None:
    user = call.user
    if legacy_route and dialog.handoff_status == "active" and dialog.assigned_manager_id == user.id:
        return  # already theirs: idempotent, and no second slot
    await call.services.live_system.take_over(
        dialog.id, dialog.channel, user.id, manager_name(user.first_name, user.id),
        legacy=legacy_route,
    )


# --- routes ---------------------------------------------------------------------------------------


@router.route("POST", "/api/request", auth=VISITOR, query=DialogIdQuery, body=RequestIn,
              aliases=(DIALOG + "/request",), errors=(404, 409, 429),
              summary="Ask for a human operator (idempotent by request_id)")
async def request_handoff(call: Call) -> dict[str, Any]:
    dialog = await _dialog(call)
    body: RequestIn = call.body
    if body.request_id != dialog.request_id:  # a replay is free; a new request counts
        await call.limit("handoff_request", f"dialog_{dialog.id}")
    user = call.caller.user
    await call.services.live_system.change_handoff(dialog.id, RequestHandoff(
        request_id=body.request_id, at=utcnow(), reason=body.reason,
        requested_by=user.id if user is not None else None,
        last_user_text=body.last_user_text,
    ))
    return await _respond(call, dialog.id)


@router.route("POST", "/api/takeover", auth="user", query=DialogIdQuery, body=EmptyIn,
              aliases=(DIALOG + "/takeover",), errors=(404, 409),
              summary="An operator takes a waiting dialog (requested → active)")
async def take_over_dialog(call: Call) -> dict[str, Any]:
    dialog = await _dialog(call)
    await take_over(call, dialog, legacy_route=False)
    return await _respond(call, dialog.id)


@router.route("POST", "/api/release", auth="user", query=DialogIdQuery, body=EmptyIn,
              aliases=(DIALOG + "/release",), errors=(404, 409),
              summary="Hand the dialog back to the AI (active → released)")
async def release_dialog(call: Call) -> dict[str, Any]:
    dialog = await _dialog(call)
    # Only the owner or an admin gets this far (dialog_for), and both may release a dialog
    # another operator holds (spec §4.9 recommendation); the audit row names who did.
    await call.services.live_system.change_handoff(
        dialog.id, Release(operator_id=call.user.id, at=utcnow(), may_override=True))
    return await _respond(call, dialog.id)


@router.route("POST", "/api/cancel", auth=("site", "widget", "user"), query=DialogIdQuery,
              body=EmptyIn, aliases=(DIALOG + "/cancel",), errors=(404, 409),
              summary="Withdraw a waiting request (requested → cancelled)")
async def cancel_request(call: Call) -> dict[str, Any]:
    dialog = await _dialog(call)
    user = call.caller.user
    await call.services.live_system.change_handoff(dialog.id, CancelRequest(
        at=utcnow(), cancelled_by=user.id if user is not None else None))
    return await _respond(call, dialog.id)


@router.route("GET", DIALOG + "/status", auth=VISITOR, errors=(404,),
              summary="The dialog's handoff status")
async def handoff_status(call: Call) -> dict[str, Any]:
    return await _respond(call, int(call.path["dialog_id"]))


@router.route("GET", "/api/status", auth="none", query=DialogIdQuery, errors=(404,),
              summary="Handoff status with ?dialog_id=, else the public liveness payload")
async def status_or_liveness(call: Call) -> dict[str, Any]:
    if call.query.dialog_id is None:
        return dict(LIVENESS)
    call.caller = await authenticate(call.request, call.services, VISITOR)
    return await _respond(call, call.query.dialog_id)


@router.route("POST", "/api/force-reset", auth="admin", query=DialogIdQuery,
              aliases=(DIALOG + "/force-reset",), errors=(403, 404),
              summary="Admin: reset the handoff state to none")
async def force_reset(call: Call) -> dict[str, Any]:
    dialog = await _dialog(call)
    await call.services.live_system.change_handoff(
        dialog.id, ForceReset(admin_id=call.user.id, at=utcnow()))
    return {
        "success": True,
        "dialog_id": dialog.id,
        "old_status": dialog.handoff_status,
        "new_status": "none",
        "message": f"Handoff state reset from {dialog.handoff_status} to none",
    }


# --- legacy dialog routes (spec §3.3, §4.4 "recommended") ------------------------------------


@legacy.route("POST", "/api/dialogs/{dialog_id}/takeover", auth="user", errors=(404, 409),
              summary="Force takeover by the owner: the handoff machine's takeover")
async def legacy_take_over(call: Call) -> dict[str, Any]:
    dialog = await _dialog(call)
    await take_over(call, dialog, legacy_route=True)
    return {"ok": True}


@legacy.route("POST", "/api/dialogs/{dialog_id}/release", auth="user", errors=(404, 409),
              summary="Release to the AI when active; otherwise clear the legacy flag")
async def legacy_release(call: Call) -> dict[str, Any]:
    dialog = await _dialog(call)
    await call.services.live_system.change_handoff(
        dialog.id, LegacyRelease(user_id=call.user.id, at=utcnow()))
    return {"ok": True}
