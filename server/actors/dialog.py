"""DialogActor: the single writer of one dialog (DESIGN.md §4, spec §8).

It owns the dialog's handoff state, the next message `seq` and the AI answer in flight. Every
message of the dialog gets `seq` = previous + 1 here, is committed by the store writer and only
then published (the writer runs the after-commit step, in submission order). Handoff commands
go through the pure `handoff.decide`; its effects become one write (state + system message +
audit row + e-mail + operator load) and, after the commit, events.

An AI answer runs outside the actor, as a coroutine on the event loop (`bridge.run_on_loop`):
it publishes `typing_start` and `ai_delta`s itself and comes back as `_AnswerFinished`. A
takeover cancels it at once (the actor sets the cancel flag before it writes anything), so no
AI text follows `handoff_started`: the flag is checked before each delta is published, and the
event that announces the takeover is only published after a commit, later on the same loop.

The generation in flight is kept in a registry shared by the actor's incarnations (`Generations`),
so an actor that was passivated and restarted can still cancel it or accept its answer.

Commands carry their own `reply` (a `bridge.LoopReply` from the doors): the answer is given
after the commit, which may be long after the handler returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.actors import events
from server.actors.bridge import run_on_loop
from server.actors.bus import EventBus, dialog_channel, owner_channel
from server.actors.handoff import (
    Accepted,
    AdjustOperatorLoad,
    Audit,
    CancelAiReply,
    Command,
    ExpireRequest,
    HandoffState,
    HandoffStatus,
    NotifyOwner,
    Publish,
    Rejected,
    RequestHandoff,
    SystemMessage,
    ai_blocked,
    decide,
    sla_deadline,
)
from server.actors.handoff_detector import MAX_CONSECUTIVE_FALLBACKS, detect
from server.actors.runtime import ThreadActor
from server.actors.store_writer import StoreWriter
from server.ai.cancel import CancelToken
from server.ai.engine import (
    DASHBOARD,
    TELEGRAM,
    WIDGET,
    AnswerEngine,
    AnswerOutcome,
    AnswerRequest,
    ChannelProfile,
    PreparedAnswer,
)
from server.ai.prompts import Turn
from server.errors import AppError, ErrorCode, not_found
from server.handoff_view import state_of
from server.store.db import Database
from server.store.dialog_writes import DialogWrite, NewAudit, NewMessage, last_seq
from server.store.dialogs import MessageRecord, message_at, to_record
from server.store.models import Dialog, DialogMessage, HandoffAudit, HandoffMailMark, User
from server.store.types import iso, utcnow

log = logging.getLogger(__name__)

HISTORY_TURNS = 20
RECENT_CLIENT_IDS = 128
RELEASE_QUIET_PERIOD = dt.timedelta(minutes=5)  # spec §8.3: no auto-request right after a release
AI_BLOCKED_REASON = "dialog_taken_over_during_processing"
SETTLE_TIMEOUT_SECS = 30.0
# Channels whose visitors may be handed to a human by the §8.3 detector.
DETECTING_CHANNELS = frozenset({"web", "telegram"})
UNAVAILABLE_TEXT = "Our assistant is unavailable right now."

# Where an answer goes: a `bridge.LoopReply` from the doors, or any object with the completing
# half of a `concurrent.futures.Future` (tests use those).
Reply = Any


# --- collaborators ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class DialogPolicy:
    sla_minutes: Mapping[str, int]
    request_ttl: dt.timedelta
    max_consecutive_fallbacks: int = MAX_CONSECUTIVE_FALLBACKS


@dataclasses.dataclass(slots=True)
class Generation:
    """An AI answer in flight for one dialog."""

    id: str
    question: MessageRecord
    cancel: CancelToken
    waiters: list[Reply]
    dialog_seq: int


class ClientIds:
    """Idempotency by `client_message_id`: the recent ids of a dialog, committed or on their way.

    The actor registers an id when it submits the message; the writer thread marks it committed
    (and hands back the replies of repeats that arrived meanwhile). Hence the lock.

    Committed ids map to their seq only: a dict of strings to ints is invisible to the garbage
    collector, where a record per id (for every dialog) made each full collection scan
    hundreds of thousands of objects (a third of a second per collection, measured).
    """

    NEW = -1
    PENDING = 0

    def __init__(self, capacity: int = RECENT_CLIENT_IDS) -> None:
        self._lock = threading.Lock()
        self._capacity = capacity
        self._committed: dict[str, int] = {}
        self._pending: dict[str, list[Reply]] = {}

    def find(self, cid: str, reply: Reply) -> int:
        """The seq of the stored message for a repeat; PENDING if the reply will come with the
        commit; NEW for a new id."""
        with self._lock:
            if cid in self._committed:
                return self._committed[cid]
            if cid in self._pending:
                self._pending[cid].append(reply)
                return self.PENDING
            return self.NEW

    def begin(self, cid: str) -> None:
        with self._lock:
            self._pending[cid] = []

    def commit(self, record: MessageRecord) -> list[Reply]:
        cid = record.client_message_id
        if cid is None:
            return []
        with self._lock:
            waiters = self._pending.pop(cid, [])
            self._committed[cid] = record.seq
            while len(self._committed) > self._capacity:
                self._committed.pop(next(iter(self._committed)))
            return waiters

    def forget_pending(self) -> list[Reply]:
        with self._lock:
            waiters = [reply for replies in self._pending.values() for reply in replies]
            self._pending.clear()
            return waiters


class Generations:
    """The answers in flight, by dialog id; shared by every incarnation of a dialog's actor."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_dialog: dict[int, Generation] = {}

    def get(self, dialog_id: int) -> Generation | None:
        with self._lock:
            return self._by_dialog.get(dialog_id)

    def put(self, dialog_id: int, generation: Generation) -> Generation | None:
        with self._lock:
            previous = self._by_dialog.get(dialog_id)
            self._by_dialog[dialog_id] = generation
            return previous

    def pop(self, dialog_id: int, generation_id: str) -> Generation | None:
        with self._lock:
            current = self._by_dialog.get(dialog_id)
            if current is None or current.id != generation_id:
                return None
            return self._by_dialog.pop(dialog_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_dialog)

    def cancel_all(self, reason: str) -> None:
        with self._lock:
            generations = list(self._by_dialog.values())
        for generation in generations:
            generation.cancel.cancel(reason)


@dataclasses.dataclass(frozen=True, slots=True)
class DialogDeps:
    db: Database
    writer: StoreWriter
    bus: EventBus
    engine: AnswerEngine
    loop: asyncio.AbstractEventLoop
    tell: Callable[[int, object], None]  # the directory's tell, for results of async work
    generations: Generations
    policy: DialogPolicy
    # (session, dialog_id, owner_id, reason, last_user_text, now, kind) -> queued?
    notify_owner: Callable[..., bool]
    release_operator_slot: Callable[[Session, int], object]
    refund: Callable[[Session, Any, str], object]


# --- messages ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class PostMessage:
    sender: str  # user | manager | assistant
    text: str
    reply: Reply
    client_message_id: str | None = None
    author_user_id: int | None = None
    author_name: str | None = None
    wait_for_answer: bool = False  # REST callers get the AI answer in their reply
    run_ai: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class ChangeHandoff:
    command: Command
    reply: Reply
    operator_slot_reserved: bool = False  # the door took the operator's slot atomically


@dataclasses.dataclass(frozen=True, slots=True)
class CheckTimers:
    at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Typing:
    """Someone in the dialog is typing: published with the dialog's current seq, not stored."""

    sender: str


@dataclasses.dataclass(frozen=True, slots=True)
class Posted:
    message: MessageRecord
    duplicate: bool = False
    answer: MessageRecord | None = None
    handed_off: bool = False  # a human handles the dialog: no AI answer
    handoff_triggered: bool = False
    handoff_status: str | None = None
    ai_blocked: str | None = None
    ai_error: AppError | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class HandoffChanged:
    state: HandoffState
    changed: bool


@dataclasses.dataclass(frozen=True, slots=True)
class _AnswerQuestion:
    question: MessageRecord
    waiters: tuple[Reply, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class _AnswerFinished:
    generation_id: str
    result: Any  # _AnswerResult, or the exception the coroutine raised


@dataclasses.dataclass(frozen=True, slots=True)
class _AnswerResult:
    prepared: PreparedAnswer | None
    outcome: AnswerOutcome | None
    error: AppError | None = None


class _WriteFailed:
    """The store refused a write: state in memory may be ahead of the store; reload."""


# --- the actor --------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Facts:
    owner_id: int
    assistant_id: int | None
    channel: str
    first_user_at: dt.datetime | None
    has_first_response: bool


class DialogActor(ThreadActor):
    def __init__(self, dialog_id: int, deps: DialogDeps) -> None:
        super().__init__()
        self.dialog_id = dialog_id
        self.deps = deps
        self.facts: _Facts | None = None
        self.handoff = HandoffState()
        self.manager_name: str | None = None
        self.last_seq = 0
        self.turns: deque[tuple[int, Turn]] = deque(maxlen=HISTORY_TURNS)
        self.client_ids = ClientIds()
        self.released_at: dt.datetime | None = None
        self.fallbacks = 0
        self.last_visitor_seq = 0
        self.sla_breached_for: dt.datetime | None = None
        self.channel_key = dialog_channel(dialog_id)

    # -- lifecycle ----------------------------------------------------------------------------

    def on_start(self) -> None:
        # A predecessor may have been passivated or evicted with writes still on their way to
        # the store: load only once they have settled, or seq and handoff state would be stale.
        if not self.deps.writer.wait_settled(self.dialog_id, SETTLE_TIMEOUT_SECS):
            log.warning("dialog %s: earlier writes still unsettled at start", self.dialog_id)
        with self.deps.db.read() as session:
            self._load(session)

    def _load(self, session: Session) -> None:
        row = session.get(Dialog, self.dialog_id)
        if row is None:
            return
        first_user_at = session.execute(
            select(DialogMessage.timestamp)
            .where(DialogMessage.dialog_id == self.dialog_id, DialogMessage.sender == "user")
            .order_by(DialogMessage.seq).limit(1)
        ).scalar_one_or_none()
        self.facts = _Facts(row.user_id, row.assistant_id, row.channel, first_user_at,
                            row.first_response_time is not None)
        self.handoff = state_of(row)
        if row.assigned_manager_id is not None:
            self.manager_name = session.execute(
                select(User.first_name).where(User.id == row.assigned_manager_id)
            ).scalar_one_or_none()
        self.last_seq = last_seq(session, self.dialog_id)
        recent = session.execute(
            select(DialogMessage)
            .where(DialogMessage.dialog_id == self.dialog_id)
            .order_by(DialogMessage.seq.desc())
            .limit(max(HISTORY_TURNS, 64))
        ).scalars().all()
        for message in reversed(recent):
            record = to_record(message)
            self.client_ids.commit(record)
            if record.sender == "user":
                self.last_visitor_seq = record.seq
            if record.sender != "system":
                name = self.manager_name if record.sender == "manager" else None
                self.turns.append((record.seq, Turn(record.sender, record.text, name)))
        if self.handoff.status == HandoffStatus.REQUESTED and self.handoff.requested_at:
            breached = session.execute(
                select(HandoffMailMark.sent_at).where(
                    HandoffMailMark.dialog_id == self.dialog_id,
                    HandoffMailMark.kind == "sla_breached",
                    HandoffMailMark.sent_at >= self.handoff.requested_at,
                )
            ).first()
            if breached is not None:
                self.sla_breached_for = self.handoff.requested_at
        self.released_at = session.execute(
            select(HandoffAudit.created_at)
            .where(HandoffAudit.dialog_id == self.dialog_id, HandoffAudit.to_status == "released")
            .order_by(HandoffAudit.id.desc()).limit(1)
        ).scalar_one_or_none()

    def on_receive(self, message: Any) -> Any:
        try:
            return self._handle(message)
        except Exception as exc:
            reply = getattr(message, "reply", None)
            if reply is not None and not reply.done():
                reply.set_exception(exc)
            raise  # crash: the directory restarts this dialog from the store

    def _handle(self, message: Any) -> Any:
        if self.facts is None and not isinstance(message, (_AnswerFinished, _WriteFailed, Typing)):
            if isinstance(message, (PostMessage, ChangeHandoff)):
                _resolve_error(message.reply, not_found("Dialog not found"))
            elif isinstance(message, _AnswerQuestion):
                for waiter in message.waiters:
                    _resolve_error(waiter, not_found("Dialog not found"))
            return None
        match message:
            case PostMessage():
                self._post(message)
            case ChangeHandoff():
                self._change_handoff(message)
            case _AnswerQuestion():
                self._start_answer(message.question, list(message.waiters))
            case _AnswerFinished():
                self._finish_answer(message)
            case CheckTimers():
                self._check_timers(message.at)
            case Typing():
                self._publish(self._event(events.TYPING_START, sender=message.sender))
            case _WriteFailed():
                self.stop()  # reload from the store on the next message
            case _:
                log.warning("dialog %s: unknown message %r", self.dialog_id, message)
        return None

    # -- posting ------------------------------------------------------------------------------

    def _post(self, cmd: PostMessage) -> None:
        facts = self.facts
        assert facts is not None
        cid = cmd.client_message_id
        if cid is not None:
            known = self.client_ids.find(cid, cmd.reply)
            if known > ClientIds.PENDING:
                _resolve(cmd.reply, Posted(self._stored(known), duplicate=True))
            if known != ClientIds.NEW:
                return
        if cmd.sender == "manager" and (
            self.handoff.status != HandoffStatus.ACTIVE
            or self.handoff.assigned_manager_id != cmd.author_user_id
        ):
            _resolve_error(cmd.reply, AppError(
                ErrorCode.CONFLICT,
                f"take the dialog over before replying (current state: {self.handoff.status})",
            ))
            return

        now = utcnow()
        message = self._new_message(cmd.sender, cmd.text, now, author_user_id=cmd.author_user_id,
                                    client_message_id=cid)
        visitor = cmd.sender == "user"
        write = DialogWrite(self.dialog_id, (message,))
        after: list[dict[str, Any]] = []
        outcome = "plain"
        if visitor:
            self.last_visitor_seq = message.seq
            if facts.first_user_at is None:
                facts.first_user_at = now
        if visitor and ai_blocked(self.handoff):
            outcome = "handed_off"
            notice = (events.HANDLING_NOTICE if facts.channel == "dashboard"
                      else events.RECEIVED_NOTICE)
            kind = (events.OPERATOR_HANDLING if facts.channel == "dashboard"
                    else events.MESSAGE_RECEIVED)
            after.append(events.envelope(kind, self.dialog_id, message.seq, message=notice))
        elif visitor and self._may_detect(now):
            detection = detect(cmd.text)
            if detection.should_handoff:
                decision = decide(self.handoff, RequestHandoff(
                    request_id=str(uuid.uuid4()), at=now, reason=detection.reason,  # type: ignore[arg-type]
                    last_user_text=cmd.text[:1000],
                ))
                if isinstance(decision, Accepted):
                    write, after = self._transition(decision, now, write, after)
                    outcome = "handoff"
        if visitor and outcome == "plain" and cmd.run_ai:
            outcome = "answer"

        if cid is not None:
            self.client_ids.begin(cid)
        reply, deps, dialog_id = cmd.reply, self.deps, self.dialog_id
        status = str(self.handoff.status)

        def committed(records: tuple[MessageRecord, ...]) -> None:
            record = records[0]
            self._publish_messages(records)
            for event in after:
                self._publish(event)
            for waiter in self.client_ids.commit(record):
                _resolve(waiter, Posted(record, duplicate=True))
            if outcome == "answer":
                waiters = (reply,) if cmd.wait_for_answer else ()
                if not cmd.wait_for_answer:
                    _resolve(reply, Posted(record))
                deps.tell(dialog_id, _AnswerQuestion(record, waiters))
            elif outcome == "handoff":
                _resolve(reply, Posted(record, handoff_triggered=True, handoff_status=status))
            else:
                _resolve(reply, Posted(record, handed_off=outcome == "handed_off"))

        self._submit(write, committed, [cmd.reply])

    def _stored(self, seq: int) -> MessageRecord:
        """A committed message of this dialog (a repeat's answer; rare, so read from the store)."""
        with self.deps.db.read() as session:
            record = message_at(session, self.dialog_id, seq)
        if record is None:
            raise AppError(ErrorCode.SERVICE_UNAVAILABLE, "The message is not readable yet",
                           status=503)
        return record

    def _may_detect(self, now: dt.datetime) -> bool:
        assert self.facts is not None
        if self.facts.channel not in DETECTING_CHANNELS:
            return False  # the owner's test chat, the landing chat's mirror
        return self.released_at is None or now - self.released_at >= RELEASE_QUIET_PERIOD

    # -- the AI answer -------------------------------------------------------------------------

    def _start_answer(self, question: MessageRecord, waiters: list[Reply]) -> None:
        facts = self.facts
        assert facts is not None
        if ai_blocked(self.handoff) or question.seq < self.last_visitor_seq:
            # A human took over, or a newer visitor message will be answered instead.
            blocked = Posted(question, ai_blocked=AI_BLOCKED_REASON, handed_off=True)
            for waiter in waiters:
                _resolve(waiter, blocked)
            return
        generation = Generation(uuid.uuid4().hex, question, CancelToken(), waiters,
                                self.last_seq)
        previous = self.deps.generations.put(self.dialog_id, generation)
        if previous is not None:
            previous.cancel.cancel("superseded")
            for waiter in previous.waiters:
                _resolve(waiter, Posted(previous.question, ai_blocked="superseded"))
        request = AnswerRequest(
            owner_id=facts.owner_id,
            assistant_id=facts.assistant_id,
            question=question.text,
            history=tuple(turn for seq, turn in self.turns if seq < question.seq),
            channel=_profile(facts.channel),
            related_id=question.id,
        )
        deps, dialog_id, generation_id = self.deps, self.dialog_id, generation.id
        run_on_loop(
            deps.loop,
            lambda: generate_answer(deps, dialog_id, generation, request),
            lambda result: deps.tell(dialog_id, _AnswerFinished(generation_id, result)),
        )

    def _finish_answer(self, finished: _AnswerFinished) -> None:
        generation = self.deps.generations.pop(self.dialog_id, finished.generation_id)
        result = finished.result
        if not isinstance(result, _AnswerResult):
            log.error("dialog %s: the answer crashed: %r", self.dialog_id, result)
            result = _AnswerResult(None, None, AppError(
                ErrorCode.SERVICE_UNAVAILABLE, "The assistant could not answer", status=503))
        earned = (result.outcome is not None and result.outcome.status == "completed"
                  and not result.outcome.offline and result.prepared is not None
                  and result.prepared.charge is not None)
        if generation is None or generation.cancel.is_cancelled or ai_blocked(self.handoff):
            # Superseded or taken over: the text is dropped and a charge for it given back.
            reason = (generation.cancel.reason if generation else None) or "superseded"
            if earned:
                self._refund(result.prepared, f"answer dropped: {reason}")
            if generation is not None:
                if not generation.cancel.is_cancelled:  # a cancel already sent typing_stop
                    self._publish(self._event(events.TYPING_STOP, sender="assistant"))
                for waiter in generation.waiters:
                    _resolve(waiter, Posted(generation.question, ai_blocked=AI_BLOCKED_REASON,
                                            handed_off=True))
            return
        outcome = result.outcome
        if result.error is not None or outcome is None or outcome.status != "completed" \
                or not outcome.text.strip():
            error = result.error or AppError(
                ErrorCode.SERVICE_UNAVAILABLE,
                f"The assistant could not answer ({outcome.error if outcome else 'no outcome'})",
                status=503,
            )
            self._publish(self._event(events.TYPING_STOP, sender="assistant"))
            for waiter in generation.waiters:
                _resolve(waiter, Posted(generation.question, ai_error=error))
            if error.status == 402 and not generation.waiters:
                self._hand_to_a_human(generation.question)
            return
        self._store_answer(generation, outcome)

    def _hand_to_a_human(self, question: MessageRecord) -> None:
        """A live-chat visitor whose owner cannot pay for an answer (DESIGN.md §7): tell them the
        assistant is unavailable and queue the dialog for an operator (reason `fallback`)."""
        now = utcnow()
        decision = decide(self.handoff, RequestHandoff(
            request_id=str(uuid.uuid4()), at=now, reason="fallback",
            last_user_text=question.text[:1000]))
        notice = self._new_message("system", UNAVAILABLE_TEXT, now)
        write, after = DialogWrite(self.dialog_id, (notice,)), []
        if isinstance(decision, Accepted):
            write, after = self._transition(decision, now, write, after)
        self._submit(write, lambda records: self._after(records, after), [])

    def _store_answer(self, generation: Generation, outcome: AnswerOutcome) -> None:
        facts = self.facts
        assert facts is not None
        now = utcnow()
        message = self._new_message("assistant", outcome.text.strip(), now)
        values: dict[str, Any] = {"auto_response": True}
        if not facts.has_first_response and facts.first_user_at is not None:
            values["first_response_time"] = max(0.0, (now - facts.first_user_at).total_seconds())
            facts.has_first_response = True
        write = DialogWrite(self.dialog_id, (message,), values)
        after: list[dict[str, Any]] = []
        question = generation.question
        detection = detect(question.text, outcome.text, self.fallbacks)
        self.fallbacks = self.fallbacks + 1 if detection.ai_fallback else 0
        if facts.channel != "dashboard" and self.fallbacks >= self.deps.policy.max_consecutive_fallbacks:
            decision = decide(self.handoff, RequestHandoff(
                request_id=str(uuid.uuid4()), at=now, reason="fallback",
                last_user_text=question.text[:1000],
            ))
            if isinstance(decision, Accepted):
                self.fallbacks = 0
                write, after = self._transition(decision, now, write, after)
        waiters = generation.waiters
        stop = self._event(events.TYPING_STOP, sender="assistant")

        def committed(records: tuple[MessageRecord, ...]) -> None:
            self._publish(stop)
            self._publish_messages(records)
            for event in after:
                self._publish(event)
            for waiter in waiters:
                _resolve(waiter, Posted(question, answer=records[0]))

        self._submit(write, committed, list(waiters))

    def _refund(self, prepared: PreparedAnswer | None, reason: str) -> None:
        if prepared is None or prepared.charge is None:
            return
        charge, refund = prepared.charge, self.deps.refund
        write = DialogWrite(self.dialog_id, extras=(lambda session: refund(session, charge, reason),))
        self._submit(write, lambda _records: None, [])

    # -- handoff --------------------------------------------------------------------------------

    def _change_handoff(self, cmd: ChangeHandoff) -> None:
        decision = decide(self.handoff, cmd.command)
        if isinstance(decision, Rejected):
            _resolve(cmd.reply, decision)
            return
        if decision.state == self.handoff and not decision.effects:
            _resolve(cmd.reply, HandoffChanged(self.handoff, changed=False))
            return
        now = getattr(cmd.command, "at", None) or utcnow()
        manager_name = getattr(cmd.command, "operator_name", None)
        if manager_name is not None and decision.state.status == HandoffStatus.ACTIVE:
            self.manager_name = manager_name
        write, after = self._transition(decision, now, DialogWrite(self.dialog_id), [],
                                        slot_reserved=cmd.operator_slot_reserved)
        state, reply = self.handoff, cmd.reply

        def committed(records: tuple[MessageRecord, ...]) -> None:
            self._publish_messages(records)
            for event in after:
                self._publish(event)
            _resolve(reply, HandoffChanged(state, changed=True))

        self._submit(write, committed, [cmd.reply])

    def _transition(
        self,
        decision: Accepted,
        now: dt.datetime,
        write: DialogWrite,
        after: list[dict[str, Any]],
        *,
        slot_reserved: bool = False,
    ) -> tuple[DialogWrite, list[dict[str, Any]]]:
        """Fold a decision's effects into `write`; returns it and the events to publish."""
        facts = self.facts
        assert facts is not None
        old = self.handoff
        self.handoff = decision.state
        if decision.state.status == HandoffStatus.RELEASED and old.status != HandoffStatus.RELEASED:
            self.released_at = now
        if decision.state.status != HandoffStatus.REQUESTED:
            self.sla_breached_for = None
        messages = list(write.messages)
        audits = list(write.audits)
        extras = list(write.extras)
        events_after = list(after)
        deps, dialog_id, owner_id = self.deps, self.dialog_id, facts.owner_id
        for effect in decision.effects:
            match effect:
                case CancelAiReply():
                    self._cancel_answer(effect.reason)
                case SystemMessage():
                    messages.append(self._new_message("system", effect.text, now,
                                                      system_type=effect.system_type))
                case Audit():
                    audits.append(NewAudit(str(effect.from_status), str(effect.to_status),
                                           effect.reason, effect.user_id, effect.request_id,
                                           self.last_seq, dict(effect.extra), now))
                case AdjustOperatorLoad():
                    if effect.delta < 0:
                        operator = effect.operator_id
                        extras.append(lambda s, op=operator: deps.release_operator_slot(s, op))
                    elif not slot_reserved:
                        log.warning("dialog %s: takeover without a reserved operator slot",
                                    dialog_id)
                case NotifyOwner():
                    reason, text = effect.reason, effect.last_user_text
                    extras.append(lambda s, r=reason, t=text: deps.notify_owner(
                        s, dialog_id=dialog_id, owner_id=owner_id, reason=r,
                        last_user_text=t, now=now, kind="requested"))
                case Publish():
                    events_after.append(self._handoff_event(effect.event_type, now))
        values = {**write.dialog_values, **_state_values(decision.state)}
        return (
            DialogWrite(dialog_id, tuple(messages), values, tuple(audits), tuple(extras)),
            events_after,
        )

    def _cancel_answer(self, reason: str) -> None:
        generation = self.deps.generations.get(self.dialog_id)
        if generation is not None and generation.cancel.cancel(reason):
            # Sent now, not after the commit: the visitor's typing bubble goes at once.
            self._publish(self._event(events.TYPING_STOP, sender="assistant"))

    def _handoff_event(self, event_type: str, now: dt.datetime) -> dict[str, Any]:
        state = self.handoff
        manager = events.manager_view(state.assigned_manager_id, self.manager_name)
        fields: dict[str, Any] = {"handoff": self.handoff_view(), "manager": manager}
        if manager is not None:
            fields["manager_id"] = manager["id"]
        return events.envelope(event_type, self.dialog_id, self.last_seq, now, **fields)

    def handoff_view(self) -> dict[str, Any]:
        """HandoffStatusOut (spec §4.9) without the queue position, which needs the store."""
        state = self.handoff
        channel = self.facts.channel if self.facts else "web"
        deadline = sla_deadline(state, "telegram" if channel == "telegram" else "web",
                                self.deps.policy.sla_minutes)
        return {
            "status": str(state.status),
            "assigned_manager": events.manager_view(state.assigned_manager_id, self.manager_name),
            "requested_at": iso(state.requested_at),
            "started_at": iso(state.started_at),
            "resolved_at": iso(state.resolved_at),
            "reason": state.reason,
            "request_id": state.request_id,
            "queue_position": None,
            "estimated_wait_minutes": None,
            "sla_deadline": iso(deadline),
        }

    # -- timers (spec §8.4) ---------------------------------------------------------------------

    def _check_timers(self, at: dt.datetime) -> None:
        facts = self.facts
        assert facts is not None
        if self.handoff.status != HandoffStatus.REQUESTED:
            return
        decision = decide(self.handoff, ExpireRequest(at=at, ttl=self.deps.policy.request_ttl))
        if isinstance(decision, Accepted) and decision.effects:
            write, after = self._transition(decision, at, DialogWrite(self.dialog_id), [])
            self._submit(write, lambda records: self._after(records, after), [])
            return
        channel = "telegram" if facts.channel == "telegram" else "web"
        deadline = sla_deadline(self.handoff, channel, self.deps.policy.sla_minutes)
        if deadline is None or at < deadline or self.sla_breached_for == self.handoff.requested_at:
            return
        self.sla_breached_for = self.handoff.requested_at
        deps, dialog_id, owner_id = self.deps, self.dialog_id, facts.owner_id
        reason = self.handoff.reason
        breach = self._handoff_event(events.SLA_BREACHED, at)
        write = DialogWrite(dialog_id, extras=(lambda s: deps.notify_owner(
            s, dialog_id=dialog_id, owner_id=owner_id, reason=reason, last_user_text=None,
            now=at, kind="sla_breached"),))
        self._submit(write, lambda records: self._after(records, [breach]), [])

    def _after(self, records: tuple[MessageRecord, ...], after: list[dict[str, Any]]) -> None:
        self._publish_messages(records)
        for event in after:
            self._publish(event)

    # -- plumbing -------------------------------------------------------------------------------

    def _new_message(self, sender: str, text: str, at: dt.datetime, *,
                     system_type: str | None = None, author_user_id: int | None = None,
                     client_message_id: str | None = None) -> NewMessage:
        self.last_seq += 1
        message = NewMessage(self.last_seq, sender, text, at, system_type, author_user_id,
                             client_message_id)
        if sender != "system":
            name = self.manager_name if sender == "manager" else None
            self.turns.append((message.seq, Turn(sender, text, name)))
        return message

    def _submit(self, write: DialogWrite, committed: Callable[[tuple[MessageRecord, ...]], None],
                replies: list[Reply]) -> None:
        """Hand the write to the store writer; `committed` runs in the writer's thread."""
        deps, dialog_id = self.deps, self.dialog_id

        def on_failed(error: BaseException) -> None:
            failure = AppError(ErrorCode.SERVICE_UNAVAILABLE,
                               "The message could not be stored; try again", status=503)
            for reply in replies + self.client_ids.forget_pending():
                _resolve_error(reply, failure)
            deps.tell(dialog_id, _WriteFailed())

        self.deps.writer.submit(write, committed, on_failed)

    def _publish_messages(self, records: tuple[MessageRecord, ...]) -> None:
        for record in records:
            self._publish(events.message_new(record))

    def _publish(self, event: dict[str, Any]) -> None:
        bus = self.deps.bus
        bus.publish(self.channel_key, event)
        if self.facts is None or event["type"] in _DIALOG_ONLY:
            return
        # The feed has no replay, so skipping it when no operator watches loses at most the
        # one event that races a feed's connect; the dialog channel is always published (its
        # sockets replay from the store, so they never depend on this).
        feed = owner_channel(self.facts.owner_id)
        if bus.may_deliver(feed):
            bus.publish(feed, events.feed_summary(event))

    def _event(self, event_type: str, **fields: Any) -> dict[str, Any]:
        return events.envelope(event_type, self.dialog_id, self.last_seq, **fields)


# Events the operator feed does not carry: streaming detail and notices meant for the visitor.
_DIALOG_ONLY = frozenset({events.TYPING_START, events.TYPING_STOP, events.AI_DELTA,
                          events.MESSAGE_RECEIVED})


async def generate_answer(
    deps: DialogDeps, dialog_id: int, generation: Generation, request: AnswerRequest
) -> _AnswerResult:
    """Runs on the event loop: prepare (in a worker thread), then stream deltas to the bus."""
    channel = dialog_channel(dialog_id)
    seq, cancel = generation.dialog_seq, generation.cancel
    deps.bus.publish(channel, events.envelope(events.TYPING_START, dialog_id, seq,
                                              sender="assistant"))
    try:
        prepared = await deps.engine.prepare_async(request)
    except AppError as exc:
        return _AnswerResult(None, None, exc)
    outcome = AnswerOutcome()
    async for delta in deps.engine.stream(prepared, outcome, cancel):
        if cancel.is_cancelled:  # checked right before publishing: no text after a takeover
            break
        deps.bus.publish(channel, events.envelope(
            events.AI_DELTA, dialog_id, seq, generation_id=generation.id, delta=delta))
    return _AnswerResult(prepared, outcome)


def _profile(channel: str) -> ChannelProfile:
    if channel == "telegram":
        return TELEGRAM
    if channel == "dashboard":
        return DASHBOARD
    return WIDGET


def _state_values(state: HandoffState) -> dict[str, Any]:
    return {
        "handoff_status": str(state.status),
        "handoff_reason": state.reason,
        "request_id": state.request_id,
        "handoff_requested_at": state.requested_at,
        "handoff_started_at": state.started_at,
        "handoff_resolved_at": state.resolved_at,
        "assigned_manager_id": state.assigned_manager_id,
        "is_taken_over": state.is_taken_over,
    }


def _resolve(reply: Reply | None, value: Any) -> None:
    if reply is not None and not reply.done():
        try:
            reply.set_result(value)
        except concurrent.futures.InvalidStateError:
            pass


def _resolve_error(reply: Reply | None, error: BaseException) -> None:
    if reply is not None and not reply.done():
        try:
            reply.set_exception(error)
        except concurrent.futures.InvalidStateError:
            pass
