"""The handoff state machine of spec §8.2/§8.4 as pure decisions: every transition and guard."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from server.actors.handoff import (
    Accepted,
    AdjustOperatorLoad,
    Audit,
    CancelAiReply,
    CancelRequest,
    Command,
    ExpireRequest,
    ForceReset,
    HandoffState,
    HandoffStatus,
    LegacyRelease,
    LegacyTakeOver,
    NotifyOwner,
    OperatorCapacity,
    OperatorWentOffline,
    Publish,
    Rejected,
    Release,
    RequestHandoff,
    SystemMessage,
    TakeOver,
    ai_blocked,
    decide,
    request_expires_at,
    sla_deadline,
)

S = HandoffStatus
T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
LATER = T0 + dt.timedelta(minutes=1)
OPERATOR = 7
OTHER = 8
ADMIN = 1
OWNER = 3

NONE = HandoffState()
REQUESTED = HandoffState(status=S.REQUESTED, reason="manual", request_id="r1", requested_at=T0)
ACTIVE = replace(
    REQUESTED, status=S.ACTIVE, started_at=T0, assigned_manager_id=OPERATOR, is_taken_over=True
)
RELEASED = replace(
    ACTIVE, status=S.RELEASED, resolved_at=T0, assigned_manager_id=None, is_taken_over=False
)
CANCELLED = replace(REQUESTED, status=S.CANCELLED, resolved_at=T0)
BY_STATUS = {s.status: s for s in (NONE, REQUESTED, ACTIVE, RELEASED, CANCELLED)}


def accepted(state: HandoffState, command: Command) -> Accepted:
    decision = decide(state, command)
    assert isinstance(decision, Accepted), decision
    return decision


def rejected(state: HandoffState, command: Command) -> Rejected:
    decision = decide(state, command)
    assert isinstance(decision, Rejected), decision
    return decision


def of_type(decision: Accepted, kind: type) -> list:
    return [e for e in decision.effects if isinstance(e, kind)]


def system_types(decision: Accepted) -> list[str]:
    return [e.system_type for e in of_type(decision, SystemMessage)]


def events(decision: Accepted) -> list[str]:
    return [e.event_type for e in of_type(decision, Publish)]


def the_audit(decision: Accepted) -> Audit:
    (audit,) = of_type(decision, Audit)
    return audit


def request(request_id: str = "r2", reason: str = "manual") -> RequestHandoff:
    return RequestHandoff(request_id=request_id, at=LATER, reason=reason)  # type: ignore[arg-type]


def take(operator: int = OPERATOR, **capacity: object) -> TakeOver:
    limits = OperatorCapacity(**capacity)  # type: ignore[arg-type]
    return TakeOver(operator, "Anna", LATER, limits)


# --- T1 request -------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [NONE, RELEASED, CANCELLED], ids=lambda s: str(s.status))
def test_request_moves_to_requested_with_fresh_fields(start: HandoffState) -> None:
    decision = accepted(start, request("r2", "keyword"))
    assert decision.state == HandoffState(
        status=S.REQUESTED, reason="keyword", request_id="r2", requested_at=LATER
    )


@pytest.mark.parametrize("start", [RELEASED, CANCELLED], ids=lambda s: str(s.status))
def test_request_after_a_previous_handoff_clears_manager_start_and_resolved(
    start: HandoffState,
) -> None:
    new = accepted(start, request()).state
    assert (new.assigned_manager_id, new.started_at, new.resolved_at) == (None, None, None)
    assert new.is_taken_over is False


def test_request_effects_message_audit_event_owner_notice_and_ai_stop() -> None:
    decision = accepted(NONE, RequestHandoff("r2", LATER, "keyword", None, "need a human"))
    assert system_types(decision) == ["handoff_requested"]
    assert events(decision) == ["handoff_requested"]
    audit = the_audit(decision)
    assert (audit.from_status, audit.to_status, audit.reason, audit.request_id) == (
        S.NONE, S.REQUESTED, "keyword", "r2"
    )
    assert of_type(decision, NotifyOwner) == [
        NotifyOwner("handoff_requested", "keyword", "need a human")
    ]
    assert of_type(decision, CancelAiReply)


def test_request_event_payload_carries_iso_times() -> None:
    (event,) = of_type(accepted(NONE, request()), Publish)
    assert event.payload["status"] == "requested"
    assert event.payload["requested_at"] == "2026-01-01T12:01:00Z"
    assert event.payload["request_id"] == "r2"


def test_request_while_active_is_rejected_naming_the_state() -> None:
    decision = rejected(ACTIVE, request())
    assert decision.current_status == S.ACTIVE
    assert decision.detail.endswith("(current state: active)")


def test_second_request_while_requested_refreshes_silently() -> None:
    decision = accepted(REQUESTED, request("r2"))
    assert decision.state == replace(REQUESTED, requested_at=LATER, request_id="r2")
    assert decision.effects == ()


@pytest.mark.parametrize("start", list(BY_STATUS.values()), ids=lambda s: str(s.status))
def test_replayed_request_id_changes_nothing(start: HandoffState) -> None:
    replay = request(request_id="r1")
    with_id = replace(start, request_id="r1")
    decision = accepted(with_id, replay)
    assert decision.state is with_id
    assert decision.effects == ()


def test_replay_does_not_refresh_requested_at() -> None:
    assert accepted(REQUESTED, request("r1")).state.requested_at == T0


# --- T2 takeover ------------------------------------------------------------------------------


def test_takeover_activates_with_the_operator() -> None:
    new = accepted(REQUESTED, take()).state
    assert new.status == S.ACTIVE
    assert new.assigned_manager_id == OPERATOR
    assert new.started_at == LATER
    assert new.is_taken_over is True
    assert new.request_id == "r1"


def test_takeover_effects() -> None:
    decision = accepted(REQUESTED, take())
    assert system_types(decision) == ["handoff_started"]
    assert "Anna" in of_type(decision, SystemMessage)[0].text
    audit = the_audit(decision)
    assert (audit.reason, audit.user_id, audit.extra) == ("takeover", OPERATOR,
                                                          {"manager_name": "Anna"})
    assert of_type(decision, AdjustOperatorLoad) == [AdjustOperatorLoad(OPERATOR, +1)]
    (event,) = of_type(decision, Publish)
    assert event.event_type == "handoff_started"
    assert (event.payload["manager_id"], event.payload["manager_name"]) == (OPERATOR, "Anna")
    assert of_type(decision, CancelAiReply)


@pytest.mark.parametrize("start", [NONE, ACTIVE, RELEASED, CANCELLED], ids=lambda s: str(s.status))
def test_takeover_outside_requested_is_rejected(start: HandoffState) -> None:
    decision = rejected(start, take())
    assert decision.current_status == start.status
    assert f"(current state: {start.status})" in decision.detail


@pytest.mark.parametrize(
    ("capacity", "words"),
    [
        ({"presence": "away"}, "not online (presence: away)"),
        ({"presence": "offline"}, "not online (presence: offline)"),
        ({"active_chats": 3, "max_active_chats": 3}, "at capacity (3/3"),
        ({"active_chats": 0, "max_active_chats": 0}, "at capacity (0/0"),
    ],
)
def test_takeover_refused_when_operator_cannot_take(capacity: dict, words: str) -> None:
    decision = rejected(REQUESTED, take(**capacity))
    assert words in decision.reason
    assert decision.current_status == S.REQUESTED


def test_takeover_allowed_below_capacity() -> None:
    assert accepted(REQUESTED, take(active_chats=2, max_active_chats=3)).state.status == S.ACTIVE


def test_takeover_with_blank_name_says_an_operator_joined() -> None:
    decision = accepted(REQUESTED, TakeOver(OPERATOR, "  ", LATER))
    assert of_type(decision, SystemMessage)[0].text.startswith("An operator")


# --- T3 cancel --------------------------------------------------------------------------------


def test_cancel_request() -> None:
    decision = accepted(REQUESTED, CancelRequest(LATER))
    assert decision.state == replace(REQUESTED, status=S.CANCELLED, resolved_at=LATER)
    assert system_types(decision) == ["handoff_cancelled"]
    assert the_audit(decision).reason == "cancelled"
    assert events(decision) == ["handoff_cancelled"]


@pytest.mark.parametrize("start", [NONE, ACTIVE, RELEASED, CANCELLED], ids=lambda s: str(s.status))
def test_cancel_outside_requested_is_rejected(start: HandoffState) -> None:
    assert rejected(start, CancelRequest(LATER)).current_status == start.status


# --- T4 release -------------------------------------------------------------------------------


def test_release_by_assigned_operator() -> None:
    decision = accepted(ACTIVE, Release(OPERATOR, LATER))
    assert decision.state == replace(
        ACTIVE, status=S.RELEASED, resolved_at=LATER, assigned_manager_id=None,
        is_taken_over=False,
    )
    assert system_types(decision) == ["handoff_released"]
    audit = the_audit(decision)
    assert (audit.reason, audit.user_id, audit.extra) == ("release", OPERATOR, {})
    assert of_type(decision, AdjustOperatorLoad) == [AdjustOperatorLoad(OPERATOR, -1)]
    assert events(decision) == ["handoff_released"]


def test_release_by_another_operator_is_rejected() -> None:
    decision = rejected(ACTIVE, Release(OTHER, LATER))
    assert decision.reason == "not the assigned operator"
    assert decision.detail == "not the assigned operator (current state: active)"


def test_release_with_override_frees_the_holders_slot_and_audits_who() -> None:
    decision = accepted(ACTIVE, Release(OTHER, LATER, may_override=True))
    assert decision.state.status == S.RELEASED
    audit = the_audit(decision)
    assert (audit.user_id, audit.extra) == (OTHER, {"assigned_manager_id": OPERATOR})
    assert of_type(decision, AdjustOperatorLoad) == [AdjustOperatorLoad(OPERATOR, -1)]


@pytest.mark.parametrize("start", [NONE, REQUESTED, RELEASED, CANCELLED],
                         ids=lambda s: str(s.status))
def test_release_outside_active_is_rejected(start: HandoffState) -> None:
    assert rejected(start, Release(OPERATOR, LATER)).current_status == start.status


# --- T5 force reset ---------------------------------------------------------------------------


@pytest.mark.parametrize("start", list(BY_STATUS.values()), ids=lambda s: str(s.status))
def test_force_reset_returns_to_none_from_any_state(start: HandoffState) -> None:
    decision = accepted(start, ForceReset(ADMIN, LATER))
    new = decision.state
    assert new.status == S.NONE
    assert (new.assigned_manager_id, new.started_at, new.is_taken_over) == (None, None, False)
    audit = the_audit(decision)
    assert (audit.reason, audit.user_id, audit.extra["old_status"]) == (
        "admin_force_reset", ADMIN, str(start.status)
    )
    assert events(decision) == ["handoff_reset"]


@pytest.mark.parametrize(
    ("start", "bubbles", "load"),
    [
        (NONE, [], []),
        (REQUESTED, ["handoff_cancelled"], []),
        (ACTIVE, ["handoff_released"], [AdjustOperatorLoad(OPERATOR, -1)]),
        (RELEASED, [], []),
        (CANCELLED, [], []),
    ],
    ids=lambda v: str(v.status) if isinstance(v, HandoffState) else None,
)
def test_force_reset_tells_the_visitor_and_frees_the_slot(
    start: HandoffState, bubbles: list[str], load: list
) -> None:
    decision = accepted(start, ForceReset(ADMIN, LATER))
    assert system_types(decision) == bubbles
    assert of_type(decision, AdjustOperatorLoad) == load


# --- legacy routes ----------------------------------------------------------------------------


def legacy_take(operator: int = OPERATOR, **capacity: object) -> LegacyTakeOver:
    limits = OperatorCapacity(**capacity)  # type: ignore[arg-type]
    return LegacyTakeOver(operator, "Owner", LATER, limits)


def test_legacy_takeover_from_requested_is_a_normal_takeover() -> None:
    decision = accepted(REQUESTED, legacy_take())
    assert decision.state.status == S.ACTIVE
    assert the_audit(decision).reason == "takeover"


@pytest.mark.parametrize("start", [NONE, RELEASED, CANCELLED], ids=lambda s: str(s.status))
def test_legacy_takeover_goes_straight_to_active(start: HandoffState) -> None:
    decision = accepted(start, legacy_take())
    assert decision.state.status == S.ACTIVE
    assert decision.state.assigned_manager_id == OPERATOR
    assert decision.state.is_taken_over is True
    assert decision.state.resolved_at is None
    assert the_audit(decision).reason == "manual_takeover"
    assert system_types(decision) == ["handoff_started"]
    assert events(decision) == ["handoff_started"]
    assert of_type(decision, AdjustOperatorLoad) == [AdjustOperatorLoad(OPERATOR, +1)]


def test_legacy_takeover_by_the_holder_is_idempotent() -> None:
    decision = accepted(ACTIVE, legacy_take(OPERATOR))
    assert decision.state == ACTIVE
    assert decision.effects == ()


def test_legacy_takeover_of_someone_elses_dialog_is_rejected() -> None:
    assert rejected(ACTIVE, legacy_take(OTHER)).detail.endswith("(current state: active)")


def test_legacy_takeover_respects_capacity() -> None:
    assert "at capacity" in rejected(NONE, legacy_take(active_chats=3)).reason


def test_legacy_release_of_active_dialog_is_a_release_with_override() -> None:
    decision = accepted(ACTIVE, LegacyRelease(OTHER, LATER))
    assert decision.state.status == S.RELEASED
    assert the_audit(decision).user_id == OTHER
    assert of_type(decision, AdjustOperatorLoad) == [AdjustOperatorLoad(OPERATOR, -1)]


@pytest.mark.parametrize("start", [NONE, REQUESTED, RELEASED, CANCELLED],
                         ids=lambda s: str(s.status))
def test_legacy_release_elsewhere_only_clears_the_flag(start: HandoffState) -> None:
    decision = accepted(replace(start, is_taken_over=True), LegacyRelease(OWNER, LATER))
    assert decision.state == replace(start, is_taken_over=False)
    assert decision.effects == ()


# --- time-driven (§8.4) -----------------------------------------------------------------------

TTL = dt.timedelta(minutes=10)


def test_expired_request_is_cancelled_with_an_offer_to_continue_with_ai() -> None:
    decision = accepted(REQUESTED, ExpireRequest(T0 + TTL, TTL))
    assert decision.state == replace(REQUESTED, status=S.CANCELLED, resolved_at=T0 + TTL)
    (bubble,) = of_type(decision, SystemMessage)
    assert bubble.system_type == "handoff_cancelled"
    assert "AI assistant" in bubble.text
    assert the_audit(decision).reason == "expired"
    (event,) = of_type(decision, Publish)
    assert (event.event_type, event.payload["cancelled_by"]) == ("handoff_cancelled", "timeout")


def test_expiry_before_the_ttl_is_a_no_op() -> None:
    decision = accepted(REQUESTED, ExpireRequest(T0 + TTL - dt.timedelta(seconds=1), TTL))
    assert (decision.state, decision.effects) == (REQUESTED, ())


def test_expiry_after_a_refresh_waits_for_the_new_ttl() -> None:
    refreshed = accepted(REQUESTED, request("r2")).state
    assert accepted(refreshed, ExpireRequest(T0 + TTL, TTL)).effects == ()


@pytest.mark.parametrize("start", [NONE, ACTIVE, RELEASED, CANCELLED], ids=lambda s: str(s.status))
def test_expiry_outside_requested_is_a_no_op(start: HandoffState) -> None:
    decision = accepted(start, ExpireRequest(T0 + 2 * TTL, TTL))
    assert (decision.state, decision.effects) == (start, ())


def test_assigned_operator_going_offline_requeues_the_dialog() -> None:
    decision = accepted(ACTIVE, OperatorWentOffline(OPERATOR, LATER))
    assert decision.state == replace(
        ACTIVE, status=S.REQUESTED, requested_at=LATER, started_at=None,
        assigned_manager_id=None, is_taken_over=False,
    )
    assert system_types(decision) == ["handoff_requested"]
    assert the_audit(decision).reason == "operator_offline"
    assert of_type(decision, AdjustOperatorLoad) == [AdjustOperatorLoad(OPERATOR, -1)]
    assert events(decision) == ["handoff_requested"]
    assert of_type(decision, NotifyOwner)


@pytest.mark.parametrize(
    ("start", "operator"),
    [(ACTIVE, OTHER), (NONE, OPERATOR), (REQUESTED, OPERATOR), (RELEASED, OPERATOR)],
)
def test_offline_of_anyone_else_is_a_no_op(start: HandoffState, operator: int) -> None:
    decision = accepted(start, OperatorWentOffline(operator, LATER))
    assert (decision.state, decision.effects) == (start, ())


# --- queries and full journeys ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "blocked"),
    [(NONE, False), (REQUESTED, True), (ACTIVE, True), (RELEASED, False), (CANCELLED, False)],
    ids=lambda v: str(v.status) if isinstance(v, HandoffState) else str(v),
)
def test_ai_blocked_while_requested_or_active(state: HandoffState, blocked: bool) -> None:
    assert ai_blocked(state) is blocked


@pytest.mark.parametrize(("channel", "minutes"), [("web", 5), ("telegram", 3), ("other", 5)])
def test_sla_deadline_per_channel(channel: str, minutes: int) -> None:
    assert sla_deadline(REQUESTED, channel) == T0 + dt.timedelta(minutes=minutes)


def test_sla_deadline_uses_configured_minutes() -> None:
    assert sla_deadline(REQUESTED, "web", {"web": 9}) == T0 + dt.timedelta(minutes=9)


@pytest.mark.parametrize("state", [NONE, ACTIVE, RELEASED, CANCELLED], ids=lambda s: str(s.status))
def test_no_deadlines_unless_waiting(state: HandoffState) -> None:
    assert sla_deadline(state, "web") is None
    assert request_expires_at(state) is None


def test_full_journey_request_take_release_request_again() -> None:
    state = accepted(NONE, request("a")).state
    state = accepted(state, take()).state
    state = accepted(state, Release(OPERATOR, LATER)).state
    state = accepted(state, request("b")).state
    assert state == HandoffState(status=S.REQUESTED, reason="manual", request_id="b",
                                 requested_at=LATER)


def test_every_system_message_has_a_spec_system_type() -> None:
    allowed = {"handoff_requested", "handoff_started", "handoff_released", "handoff_cancelled"}
    commands: list[Command] = [
        request(), take(), Release(OPERATOR, LATER), CancelRequest(LATER),
        ForceReset(ADMIN, LATER), legacy_take(), LegacyRelease(OPERATOR, LATER),
        ExpireRequest(T0 + TTL), OperatorWentOffline(OPERATOR, LATER),
    ]
    for state in BY_STATUS.values():
        for command in commands:
            decision = decide(state, command)
            if isinstance(decision, Accepted):
                assert set(system_types(decision)) <= allowed
