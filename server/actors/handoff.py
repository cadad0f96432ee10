"""The handoff state machine of spec/API.md §8: pure functions on a frozen state.

The DialogActor owns one `HandoffState` per dialog and asks `decide(state, command)` what a
command means. The answer is a reply, never an exception: `Accepted(state, effects)` with the
new state and the declarative effects the actor carries out afterwards (in order: persist the
state + system message + audit row in one commit, then publish, notify, adjust operator load),
or `Rejected(reason, current_status)`, which the doors render as 409 `"<reason> (current
state: <status>)"` (`Rejected.detail`). Nothing here touches threads, the store or the clock:
every command carries its own `at`.

Transitions (§8.2): T1 `RequestHandoff` none|released|cancelled → requested; T1' a new
request while requested refreshes `requested_at`/`request_id` silently; T1'' a replayed
`request_id` changes nothing (not even `requested_at`); T2 `TakeOver` requested → active;
T3 `CancelRequest` requested → cancelled; T4 `Release` active → released; T5 `ForceReset`
any → none. Time-driven (§8.4, new behaviour): `ExpireRequest` cancels a request older than
its TTL; `OperatorWentOffline` sends an active dialog whose operator vanished back to the
queue. A stale timer (state moved on) is a no-op `Accepted` with no effects, never a refusal,
because nobody is waiting for an answer.

Decisions of ours, beyond the spec's letter:
- Legacy routes (§3.3/§4.4) run this machine. `LegacyTakeOver` ("force takeover" by the owner):
  from requested it is exactly T2; from none|released|cancelled it goes straight to active
  (audit `manual_takeover`); already active for the caller → idempotent no-op; active for
  someone else → rejected. Presence/capacity guards apply in every case, so the load counters
  stay meaningful. `LegacyRelease`: active → T4 with override (the door has checked that the
  caller is the owner or an admin; the audit row names who released it); otherwise it only
  clears a stray `is_taken_over` flag, no effects.
- `ForceReset` also does the spec's recommended extras: gives the held operator's slot back,
  publishes `handoff_reset`, and tells the visitor with the bubble that matches what they see
  (`handoff_released` from active, `handoff_cancelled` from requested).
- `OperatorWentOffline` re-queues with `requested_at = at`, so the SLA and TTL timers restart
  instead of firing the moment the dialog is back in the queue.
- Every transition into requested/active emits `CancelAiReply` so a generation in flight stops.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal, TypeAlias

from server.store.types import iso


class HandoffStatus(StrEnum):
    NONE = "none"
    REQUESTED = "requested"
    ACTIVE = "active"
    RELEASED = "released"
    CANCELLED = "cancelled"


HandoffReason = Literal["keyword", "fallback", "retries", "manual", "auto_trigger"]
SystemType = Literal[
    "handoff_requested", "handoff_started", "handoff_released", "handoff_cancelled"
]

AI_BLOCKING_STATUSES = frozenset({HandoffStatus.REQUESTED, HandoffStatus.ACTIVE})
REQUESTABLE_STATUSES = frozenset(
    {HandoffStatus.NONE, HandoffStatus.RELEASED, HandoffStatus.CANCELLED}
)
DEFAULT_SLA_MINUTES: Mapping[str, int] = {"web": 5, "telegram": 3}
REQUEST_TTL_MINUTES = 10

SYSTEM_TEXTS: Mapping[str, str] = {
    "handoff_requested": "We're connecting you with a human operator. We'll answer soon.",
    "handoff_started": "{name} has joined the chat.",
    "handoff_released": "You're back with our AI assistant. Thanks for your patience!",
    "handoff_cancelled": "Request cancelled. Our AI assistant is here to help you.",
    "request_expired": (
        "Sorry, no operator is available right now. You can keep chatting with our AI "
        "assistant, or ask for a human again later."
    ),
    "operator_left": "The operator had to leave. We're connecting you with another one.",
}


@dataclass(frozen=True, slots=True)
class HandoffState:
    status: HandoffStatus = HandoffStatus.NONE
    reason: str | None = None
    request_id: str | None = None
    requested_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    assigned_manager_id: int | None = None
    is_taken_over: bool = False


# --- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OperatorCapacity:
    """What the operator's presence row says; the default is a freshly created row (§4.9)."""

    presence: str = "online"
    active_chats: int = 0
    max_active_chats: int = 3

    def refusal(self) -> str | None:
        if self.presence != "online":
            return f"operator is not online (presence: {self.presence})"
        if self.active_chats >= self.max_active_chats:
            return (
                f"operator is at capacity ({self.active_chats}/{self.max_active_chats} "
                "active chats)"
            )
        return None


@dataclass(frozen=True, slots=True)
class RequestHandoff:
    request_id: str
    at: dt.datetime
    reason: HandoffReason = "manual"
    requested_by: int | None = None  # a user id for owner/service callers; None for a visitor
    last_user_text: str | None = None


@dataclass(frozen=True, slots=True)
class TakeOver:
    operator_id: int
    operator_name: str
    at: dt.datetime
    capacity: OperatorCapacity = OperatorCapacity()


@dataclass(frozen=True, slots=True)
class Release:
    operator_id: int
    at: dt.datetime
    may_override: bool = False  # the caller is the dialog's owner or an admin


@dataclass(frozen=True, slots=True)
class CancelRequest:
    at: dt.datetime
    cancelled_by: int | None = None


@dataclass(frozen=True, slots=True)
class ForceReset:
    admin_id: int
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class LegacyTakeOver:
    operator_id: int
    operator_name: str
    at: dt.datetime
    capacity: OperatorCapacity = OperatorCapacity()


@dataclass(frozen=True, slots=True)
class LegacyRelease:
    user_id: int
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class ExpireRequest:
    at: dt.datetime
    ttl: dt.timedelta = dt.timedelta(minutes=REQUEST_TTL_MINUTES)


@dataclass(frozen=True, slots=True)
class OperatorWentOffline:
    operator_id: int
    at: dt.datetime


Command: TypeAlias = (
    RequestHandoff | TakeOver | Release | CancelRequest | ForceReset | LegacyTakeOver
    | LegacyRelease | ExpireRequest | OperatorWentOffline
)


# --- effects (carried out by the actor after it has decided) ----------------------------------


@dataclass(frozen=True, slots=True)
class SystemMessage:
    system_type: SystemType
    text: str


@dataclass(frozen=True, slots=True)
class Audit:
    from_status: HandoffStatus
    to_status: HandoffStatus
    reason: str
    user_id: int | None
    request_id: str | None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Publish:
    event_type: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class NotifyOwner:
    """E-mail the owner (throttled per dialog) and, for Telegram dialogs, the visitor notice."""

    event_type: str
    reason: str | None
    last_user_text: str | None = None


@dataclass(frozen=True, slots=True)
class AdjustOperatorLoad:
    operator_id: int
    delta: int


@dataclass(frozen=True, slots=True)
class CancelAiReply:
    reason: str


Effect: TypeAlias = (
    SystemMessage | Audit | Publish | NotifyOwner | AdjustOperatorLoad | CancelAiReply
)


# --- replies ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    state: HandoffState
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    current_status: HandoffStatus

    @property
    def detail(self) -> str:
        return f"{self.reason} (current state: {self.current_status})"


Decision: TypeAlias = Accepted | Rejected


# --- queries ----------------------------------------------------------------------------------


def ai_blocked(state: HandoffState) -> bool:
    return state.status in AI_BLOCKING_STATUSES


def sla_deadline(
    state: HandoffState, channel: str, sla_minutes: Mapping[str, int] = DEFAULT_SLA_MINUTES
) -> dt.datetime | None:
    """When a waiting request breaches its SLA (§8.4); None unless a request is waiting."""
    if state.status != HandoffStatus.REQUESTED or state.requested_at is None:
        return None
    minutes = sla_minutes.get(channel, sla_minutes.get("web", DEFAULT_SLA_MINUTES["web"]))
    return state.requested_at + dt.timedelta(minutes=minutes)


def request_expires_at(
    state: HandoffState, ttl: dt.timedelta = dt.timedelta(minutes=REQUEST_TTL_MINUTES)
) -> dt.datetime | None:
    if state.status != HandoffStatus.REQUESTED or state.requested_at is None:
        return None
    return state.requested_at + ttl


# --- the decision -----------------------------------------------------------------------------


def decide(state: HandoffState, command: Command) -> Decision:
    match command:
        case RequestHandoff():
            return _request(state, command)
        case TakeOver():
            if state.status != HandoffStatus.REQUESTED:
                return Rejected("the dialog is not waiting for an operator", state.status)
            return _take_over(state, command.operator_id, command.operator_name, command.at,
                              command.capacity, audit_reason="takeover")
        case Release():
            return _release(state, command.operator_id, command.at, command.may_override)
        case CancelRequest():
            return _cancel(state, command)
        case ForceReset():
            return _force_reset(state, command)
        case LegacyTakeOver():
            return _legacy_take_over(state, command)
        case LegacyRelease():
            if state.status == HandoffStatus.ACTIVE:
                return _release(state, command.user_id, command.at, may_override=True)
            return Accepted(replace(state, is_taken_over=False))
        case ExpireRequest():
            return _expire(state, command)
        case OperatorWentOffline():
            return _operator_offline(state, command)
    raise TypeError(f"not a handoff command: {command!r}")


def _payload(state: HandoffState, **extra: Any) -> dict[str, Any]:
    return {
        "status": str(state.status),
        "reason": state.reason,
        "request_id": state.request_id,
        "requested_at": iso(state.requested_at),
        "started_at": iso(state.started_at),
        "resolved_at": iso(state.resolved_at),
        "assigned_manager_id": state.assigned_manager_id,
        **extra,
    }


def _request(state: HandoffState, cmd: RequestHandoff) -> Decision:
    if state.request_id is not None and cmd.request_id == state.request_id:
        return Accepted(state)  # T1'': an idempotent replay changes nothing at all
    if state.status == HandoffStatus.REQUESTED:
        # T1': re-asking while queued only refreshes the request, no second bubble or event.
        return Accepted(replace(state, requested_at=cmd.at, request_id=cmd.request_id))
    if state.status not in REQUESTABLE_STATUSES:
        return Rejected("an operator is already connected to this dialog", state.status)
    new = HandoffState(
        status=HandoffStatus.REQUESTED,
        reason=cmd.reason,
        request_id=cmd.request_id,
        requested_at=cmd.at,
    )
    return Accepted(new, (
        SystemMessage("handoff_requested", SYSTEM_TEXTS["handoff_requested"]),
        Audit(state.status, new.status, cmd.reason, cmd.requested_by, cmd.request_id),
        CancelAiReply("handoff_requested"),
        Publish("handoff_requested", _payload(new)),
        NotifyOwner("handoff_requested", cmd.reason, cmd.last_user_text),
    ))


def _take_over(
    state: HandoffState,
    operator_id: int,
    operator_name: str,
    at: dt.datetime,
    capacity: OperatorCapacity,
    audit_reason: str,
) -> Decision:
    refusal = capacity.refusal()
    if refusal is not None:
        return Rejected(refusal, state.status)
    new = replace(
        state,
        status=HandoffStatus.ACTIVE,
        started_at=at,
        resolved_at=None,
        assigned_manager_id=operator_id,
        is_taken_over=True,
    )
    name = operator_name.strip() or "An operator"
    return Accepted(new, (
        SystemMessage("handoff_started", SYSTEM_TEXTS["handoff_started"].format(name=name)),
        Audit(state.status, new.status, audit_reason, operator_id, state.request_id,
              {"manager_name": operator_name}),
        CancelAiReply("handoff_started"),
        AdjustOperatorLoad(operator_id, +1),
        Publish("handoff_started", _payload(new, manager_id=operator_id, manager_name=name)),
    ))


def _release(
    state: HandoffState, operator_id: int, at: dt.datetime, may_override: bool
) -> Decision:
    if state.status != HandoffStatus.ACTIVE:
        return Rejected("the dialog is not with an operator", state.status)
    holder = state.assigned_manager_id
    if operator_id != holder and not may_override:
        return Rejected("not the assigned operator", state.status)
    new = replace(
        state,
        status=HandoffStatus.RELEASED,
        resolved_at=at,
        assigned_manager_id=None,
        is_taken_over=False,
    )
    extra = {} if operator_id == holder else {"assigned_manager_id": holder}
    effects: list[Effect] = [
        SystemMessage("handoff_released", SYSTEM_TEXTS["handoff_released"]),
        Audit(state.status, new.status, "release", operator_id, state.request_id, extra),
    ]
    if holder is not None:
        effects.append(AdjustOperatorLoad(holder, -1))
    effects.append(Publish("handoff_released", _payload(new, released_by=operator_id)))
    return Accepted(new, tuple(effects))


def _cancel(state: HandoffState, cmd: CancelRequest) -> Decision:
    if state.status != HandoffStatus.REQUESTED:
        return Rejected("there is no pending request to cancel", state.status)
    new = replace(state, status=HandoffStatus.CANCELLED, resolved_at=cmd.at)
    return Accepted(new, (
        SystemMessage("handoff_cancelled", SYSTEM_TEXTS["handoff_cancelled"]),
        Audit(state.status, new.status, "cancelled", cmd.cancelled_by, state.request_id),
        Publish("handoff_cancelled", _payload(new, cancelled_by="visitor")),
    ))


def _force_reset(state: HandoffState, cmd: ForceReset) -> Decision:
    new = replace(
        state,
        status=HandoffStatus.NONE,
        started_at=None,
        assigned_manager_id=None,
        is_taken_over=False,
    )
    effects: list[Effect] = [
        Audit(state.status, new.status, "admin_force_reset", cmd.admin_id, state.request_id,
              {"old_status": str(state.status),
               "assigned_manager_id": state.assigned_manager_id}),
    ]
    if state.status == HandoffStatus.ACTIVE:
        effects.insert(0, SystemMessage("handoff_released", SYSTEM_TEXTS["handoff_released"]))
        if state.assigned_manager_id is not None:
            effects.append(AdjustOperatorLoad(state.assigned_manager_id, -1))
    elif state.status == HandoffStatus.REQUESTED:
        effects.insert(0, SystemMessage("handoff_cancelled", SYSTEM_TEXTS["handoff_cancelled"]))
    effects.append(Publish("handoff_reset", _payload(new, old_status=str(state.status))))
    return Accepted(new, tuple(effects))


def _legacy_take_over(state: HandoffState, cmd: LegacyTakeOver) -> Decision:
    if state.status == HandoffStatus.ACTIVE:
        if state.assigned_manager_id == cmd.operator_id:
            return Accepted(replace(state, is_taken_over=True))
        return Rejected("another operator holds this dialog", state.status)
    reason = "takeover" if state.status == HandoffStatus.REQUESTED else "manual_takeover"
    return _take_over(state, cmd.operator_id, cmd.operator_name, cmd.at, cmd.capacity, reason)


def _expire(state: HandoffState, cmd: ExpireRequest) -> Decision:
    deadline = request_expires_at(state, cmd.ttl)
    if deadline is None or cmd.at < deadline:
        return Accepted(state)  # stale timer: answered, cancelled or refreshed since
    new = replace(state, status=HandoffStatus.CANCELLED, resolved_at=cmd.at)
    return Accepted(new, (
        SystemMessage("handoff_cancelled", SYSTEM_TEXTS["request_expired"]),
        Audit(state.status, new.status, "expired", None, state.request_id,
              {"ttl_secs": int(cmd.ttl.total_seconds())}),
        Publish("handoff_cancelled", _payload(new, cancelled_by="timeout")),
    ))


def _operator_offline(state: HandoffState, cmd: OperatorWentOffline) -> Decision:
    if state.status != HandoffStatus.ACTIVE or state.assigned_manager_id != cmd.operator_id:
        return Accepted(state)
    new = replace(
        state,
        status=HandoffStatus.REQUESTED,
        requested_at=cmd.at,
        started_at=None,
        assigned_manager_id=None,
        is_taken_over=False,
    )
    return Accepted(new, (
        SystemMessage("handoff_requested", SYSTEM_TEXTS["operator_left"]),
        Audit(state.status, new.status, "operator_offline", cmd.operator_id, state.request_id),
        AdjustOperatorLoad(cmd.operator_id, -1),
        Publish("handoff_requested", _payload(new, previous_manager_id=cmd.operator_id)),
        NotifyOwner("handoff_requested", "operator_offline"),
    ))
