"""The DialogActor through a real LiveSystem (directory, store writer, bus, answer engine) on
the test's event loop, on SQLite and PostgreSQL; no HTTP. Where a test needs a slow database it
swaps the dialogs' store writer for one it can hold (`GatedWriter`).

Covered: seq 1..N under concurrent posts, commit before publish, idempotent client message
ids, the manager's 409, a takeover cancelling a streaming answer (fake OpenAI server, charge
refunded), crash restart, passivation and LRU eviction, re-delivery to a stopping actor, and
the handoff timers (TTL, SLA breach, an operator gone offline).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from fakes.fixtures import fake_openai  # noqa: F401  (pytest finds fixtures by name)
from fakes.openai_server import FakeOpenAI, reply
from live_kit import (
    WAIT_SECS,
    Recorder,
    audits,
    eventually,
    fund,
    handoff_status,
    new_assistant,
    new_dialog,
    post,
    request_handoff,
    settle,
    start_live,
    stored,
    take_over,
    tell_handoff,
    tell_post,
    use_gated_writer,
    with_llm,
)
from sqlalchemy import select

from server.actors import events
from server.actors.bus import MemoryEventBus, dialog_channel, owner_channel
from server.actors.dialog import (
    AI_BLOCKED_REASON,
    CheckTimers,
    DialogActor,
    HandoffChanged,
    Posted,
    Typing,
)
from server.actors.handoff import SYSTEM_TEXTS, RequestHandoff
from server.context import Services
from server.errors import AppError
from server.live import LiveSystem
from server.store import billing as billing_store
from server.store import presence as presence_store
from server.store.db import Database
from server.store.dialog_writes import DialogWrite
from server.store.models import BalanceTransaction, DialogMessage, MailOutbox
from server.store.types import utcnow
from server.store.users import UserRecord

MakeLive = Callable[..., Awaitable[LiveSystem]]
TTL = dt.timedelta(minutes=10)  # Settings defaults: request TTL 10 min, web SLA 5 min
SLA = dt.timedelta(minutes=5)


@pytest.fixture
async def make_live(services: Services) -> AsyncIterator[MakeLive]:
    made: list[LiveSystem] = []

    async def make(system_services: Services | None = None, **options: Any) -> LiveSystem:
        live = await start_live(system_services or services, **options)
        made.append(live)
        return live

    yield make
    for live in made:
        await asyncio.wait_for(live.stop(), WAIT_SECS * 3)
        if live.services.llm is not services.llm:
            await live.services.llm.aclose()


@pytest.fixture
async def live(make_live: MakeLive) -> LiveSystem:
    return await make_live()


async def drained(live: LiveSystem, dialog_id: int, recorder: Recorder) -> None:
    """Wait until everything the dialog has published or queued for publication reaches
    `recorder`. A marker typing event shows the actor handled all earlier messages; then a
    marker write behind theirs shows the store writer committed them and ran their callbacks
    (it runs them in submission order, and the bus keeps publication order)."""
    marker = f"marker-{uuid.uuid4().hex[:6]}"
    live.dialogs.tell(dialog_id, Typing(sender=marker))
    await recorder.wait_for(lambda event: event.get("sender") == marker)
    channel = dialog_channel(dialog_id)
    live.writer.submit(
        DialogWrite(dialog_id),
        lambda _records: live.bus.publish(channel, {"type": "test_marker", "marker": marker}),
        lambda error: live.bus.publish(channel, {"type": "test_marker", "error": repr(error)}),
    )
    done = await recorder.wait_for(lambda event: event.get("marker") == marker
                                   or "error" in event and event["type"] == "test_marker")
    assert "error" not in done, done


def mail_kinds(db: Database) -> list[str]:
    with db.read() as session:
        return sorted(session.execute(select(MailOutbox.kind)).scalars())


# --- seq, commit before publish, idempotency, the manager's 409 ---------------------------------


async def test_concurrent_posts_from_threads_and_tasks_get_seq_1_to_n(
    live: LiveSystem, user: UserRecord
) -> None:
    dialog_id = new_dialog(live.services.db, user.id)
    threads, per_thread, tasks = 6, 25, 30
    replies: list[Any] = []
    lock = threading.Lock()

    def send(worker: int) -> None:
        for index in range(per_thread):
            future = tell_post(live, dialog_id, f"thread {worker} message {index}")
            with lock:
                replies.append(future)

    senders = [threading.Thread(target=send, args=(worker,)) for worker in range(threads)]
    for sender in senders:
        sender.start()
    from_tasks = await asyncio.gather(*(
        post(live, dialog_id, f"task message {index}") for index in range(tasks)))
    for sender in senders:
        await asyncio.to_thread(sender.join, WAIT_SECS)
    posted: list[Posted] = [await settle(future) for future in replies] + list(from_tasks)

    total = threads * per_thread + tasks
    assert sorted(p.message.seq for p in posted) == list(range(1, total + 1))
    assert not any(p.duplicate for p in posted)
    assert stored(live.services.db, dialog_id) == sorted(
        (p.message.seq, "user", p.message.text, None) for p in posted)
    with live.services.db.read() as session:
        ids = dict(session.execute(select(DialogMessage.seq, DialogMessage.id)
                                   .where(DialogMessage.dialog_id == dialog_id)).all())
    assert ids == {p.message.seq: p.message.id for p in posted}


class CommitCheckingBus(MemoryEventBus):
    """Looks the message up in the store at the moment a `message:new` is published."""

    def __init__(self, loop: asyncio.AbstractEventLoop, db: Database) -> None:
        super().__init__(loop)
        self.db = db
        self.checked = 0
        self.missing: list[tuple[int, int]] = []

    def publish(self, channel: str, event: dict[str, Any]) -> None:
        if event["type"] == events.MESSAGE_NEW and channel.startswith("dialog:"):
            self.checked += 1
            if not is_stored(self.db, event):
                self.missing.append((event["dialog_id"], event["seq"]))
        super().publish(channel, event)


def is_stored(db: Database, event: dict[str, Any]) -> bool:
    message = event["message"]
    with db.read() as session:
        found = session.execute(
            select(DialogMessage.dialog_id, DialogMessage.seq, DialogMessage.text)
            .where(DialogMessage.id == message["id"])
        ).one_or_none()
    return found is not None and tuple(found) == (
        event["dialog_id"], message["seq"], message["text"])


async def test_no_message_new_is_published_before_its_row_is_committed(
    make_live: MakeLive, services: Services, user: UserRecord
) -> None:
    bus = CommitCheckingBus(asyncio.get_running_loop(), services.db)
    live = await make_live(bus=bus)
    dialog_ids = [new_dialog(services.db, user.id) for _ in range(3)]
    seen_missing: list[tuple[int, int]] = []

    def check(event: dict[str, Any]) -> None:  # the subscriber reads the store, too
        if event["type"] == events.MESSAGE_NEW and not is_stored(services.db, event):
            seen_missing.append((event["dialog_id"], event["seq"]))

    recorders = [await Recorder.on(bus, dialog_channel(d), check) for d in dialog_ids]
    # Visitor messages answered by the offline responder, a handoff and a manager's reply.
    posted = await asyncio.gather(*(
        post(live, d, f"question {n} about delivery", run_ai=True, wait_for_answer=True)
        for n in range(8) for d in dialog_ids))
    assert all(p.answer is not None or p.ai_blocked or p.handed_off for p in posted)
    await request_handoff(live, dialog_ids[0])
    await take_over(live, dialog_ids[0], user.id)
    await post(live, dialog_ids[0], "Hello, Anna here", sender="manager",
               author_user_id=user.id)
    for dialog_id, recorder in zip(dialog_ids, recorders, strict=True):
        await drained(live, dialog_id, recorder)

    total_stored = sum(len(stored(services.db, d)) for d in dialog_ids)
    assert bus.checked == total_stored > 3 * 8
    assert bus.missing == [] and seen_missing == []
    for dialog_id, recorder in zip(dialog_ids, recorders, strict=True):
        seqs = [event["seq"] for event in recorder.of_type(events.MESSAGE_NEW)]
        assert seqs == [seq for seq, *_ in stored(services.db, dialog_id)]  # in seq order


async def test_a_repeat_that_arrives_before_the_first_commit_is_stored_once(
    make_live: MakeLive, user: UserRecord
) -> None:
    live = await make_live()
    gated = use_gated_writer(live)
    dialog_id = new_dialog(live.services.db, user.id)
    gated.hold()
    first = tell_post(live, dialog_id, "Hi", client_message_id="c-1")
    repeat = tell_post(live, dialog_id, "Hi", client_message_id="c-1")
    other = tell_post(live, dialog_id, "Hi again", client_message_id="c-2")
    assert await eventually(lambda: gated.held == 2)  # c-1 and c-2: the repeat wrote nothing
    assert not (first.done() or repeat.done() or other.done())  # nothing answers before commit
    gated.release()

    original, again, second = await settle(first), await settle(repeat), await settle(other)
    assert not original.duplicate and again.duplicate
    assert again.message == original.message
    assert (original.message.seq, second.message.seq) == (1, 2)
    assert stored(live.services.db, dialog_id) == [(1, "user", "Hi", None),
                                                   (2, "user", "Hi again", None)]


async def test_a_repeat_after_the_commit_and_after_reactivation_is_stored_once(
    live: LiveSystem, user: UserRecord
) -> None:
    dialog_id = new_dialog(live.services.db, user.id)
    original = await post(live, dialog_id, "Hi", client_message_id="c-1")
    again = await post(live, dialog_id, "Hi", client_message_id="c-1")
    assert again.duplicate and again.message == original.message

    ref = live.dialogs.get_or_start(dialog_id)
    live.dialogs.idle_timeout_secs = 0
    live.dialogs.sweep()
    assert await eventually(lambda: not ref.is_alive())
    after_restart = await post(live, dialog_id, "Hi", client_message_id="c-1")

    assert after_restart.duplicate and after_restart.message.id == original.message.id
    assert after_restart.message.seq == 1
    assert stored(live.services.db, dialog_id) == [(1, "user", "Hi", None)]


async def test_a_manager_message_needs_the_dialog_active_for_that_operator(
    live: LiveSystem, user: UserRecord, make_user: Callable[..., UserRecord]
) -> None:
    other = make_user()
    dialog_id = new_dialog(live.services.db, user.id)

    async def manager_says(author: int, text: str) -> Any:
        return await post(live, dialog_id, text, sender="manager", author_user_id=author)

    with pytest.raises(AppError) as refused:
        await manager_says(user.id, "before any handoff")
    assert refused.value.status == 409 and "current state: none" in str(refused.value.detail)

    await request_handoff(live, dialog_id)
    with pytest.raises(AppError) as refused:
        await manager_says(user.id, "while requested")
    assert refused.value.status == 409 and "current state: requested" in str(refused.value.detail)

    changed = await take_over(live, dialog_id, user.id)
    assert isinstance(changed, HandoffChanged) and changed.state.assigned_manager_id == user.id
    with pytest.raises(AppError) as refused:
        await manager_says(other.id, "not my dialog")
    assert refused.value.status == 409

    accepted = await manager_says(user.id, "Hello, Anna here")
    assert accepted.message.sender == "manager" and accepted.message.seq == 3
    assert stored(live.services.db, dialog_id) == [
        (1, "system", SYSTEM_TEXTS["handoff_requested"], "handoff_requested"),
        (2, "system", "Anna has joined the chat.", "handoff_started"),
        (3, "manager", "Hello, Anna here", None),
    ]


# --- a takeover while the AI answer streams -----------------------------------------------------


@pytest.mark.parametrize("handoff", ["force takeover", "request"])
async def test_a_handoff_during_a_streaming_answer_cancels_and_refunds_it(
    make_live: MakeLive, services: Services, user: UserRecord, admin: UserRecord,
    fake_openai: FakeOpenAI, handoff: str,  # noqa: F811
) -> None:
    """The owner's force takeover (LegacyTakeOver: none → active; a plain TakeOver needs a
    request, and the request itself already cancels the answer) or a handoff request."""
    fund(services.db, admin.id, user.id, "20.00")
    live = await make_live(with_llm(services, fake_openai.base_url))
    dialog_id = new_dialog(services.db, user.id, assistant_id=new_assistant(services.db, user.id))
    words = " ".join(f"word{index}" for index in range(60))
    fake_openai.enqueue(reply(words, chunks=60, chunk_delay_secs=0.1))  # ≈ 6 s if never cut
    recorder = await Recorder.on(live.bus, dialog_channel(dialog_id))

    waiting = tell_post(live, dialog_id, "Which shoes do you have?", run_ai=True,
                        wait_for_answer=True)
    await recorder.wait_for(lambda event: event["type"] == events.AI_DELTA)
    with services.db.read() as session:
        assert billing_store.get_balance(session, user.id) == Decimal("15.00")  # charged first
    if handoff == "request":
        await request_handoff(live, dialog_id)
        event_type, notice = "handoff_requested", SYSTEM_TEXTS["handoff_requested"]
    else:
        await take_over(live, dialog_id, user.id, legacy=True)
        event_type, notice = "handoff_started", "Anna has joined the chat."

    answered = await settle(waiting)
    assert answered.ai_blocked == AI_BLOCKED_REASON and answered.handed_off
    assert answered.answer is None
    await drained(live, dialog_id, recorder)
    kinds = recorder.types()
    started = kinds.index(event_type)
    assert events.AI_DELTA in kinds[:started]
    assert events.AI_DELTA not in kinds[started:]
    assert "typing_stop" in kinds[:started]  # the typing bubble went with the cancel
    assert stored(services.db, dialog_id) == [
        (1, "user", "Which shoes do you have?", None),
        (2, "system", notice, event_type),
    ]

    def refunds() -> list[tuple[str, Decimal]]:
        with services.db.read() as session:
            rows = session.execute(
                select(BalanceTransaction.transaction_type, BalanceTransaction.amount)
                .where(BalanceTransaction.user_id == user.id,
                       BalanceTransaction.transaction_type == "refund")).all()
        return [(kind, Decimal(amount)) for kind, amount in rows]

    assert await eventually(lambda: len(refunds()) == 1)
    assert refunds() == [("refund", Decimal("5.00"))]
    with services.db.read() as session:
        assert billing_store.get_balance(session, user.id) == Decimal("20.00")
    assert await eventually(lambda: fake_openai.requests[-1].disconnected)  # the stream was cut
    assert len(live.generations) == 0


async def start_superseded_answer(
    make_live: MakeLive, services: Services, user: UserRecord, admin: UserRecord,
    fake_openai: FakeOpenAI,  # noqa: F811
) -> tuple[LiveSystem, int, Posted, Posted]:
    """A visitor asks twice while the first answer still streams: the second supersedes it.
    Returns the system, the dialog and the two waiting replies."""
    fund(services.db, admin.id, user.id, "20.00")
    live = await make_live(with_llm(services, fake_openai.base_url))
    dialog_id = new_dialog(services.db, user.id, assistant_id=new_assistant(services.db, user.id))
    slow = " ".join(f"word{index}" for index in range(60))
    fake_openai.enqueue(reply(slow, chunks=60, chunk_delay_secs=0.1), reply("Sneakers and boots."))
    recorder = await Recorder.on(live.bus, dialog_channel(dialog_id))
    first = tell_post(live, dialog_id, "Which shoes do you have?", run_ai=True,
                      wait_for_answer=True)
    await recorder.wait_for(lambda event: event["type"] == events.AI_DELTA)
    second = tell_post(live, dialog_id, "Boots in particular?", run_ai=True,
                       wait_for_answer=True)
    return live, dialog_id, await settle(first), await settle(second)


async def test_a_newer_visitor_message_supersedes_the_streaming_answer(
    make_live: MakeLive, services: Services, user: UserRecord, admin: UserRecord,
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    _live, dialog_id, first, second = await start_superseded_answer(
        make_live, services, user, admin, fake_openai)

    assert first.ai_blocked == "superseded" and first.answer is None
    assert second.answer is not None and second.answer.text == "Sneakers and boots."
    assert [(seq, sender) for seq, sender, *_ in stored(services.db, dialog_id)] == [
        (1, "user"), (2, "user"), (3, "assistant")]

    def balance() -> Decimal:
        with services.db.read() as session:
            return billing_store.get_balance(session, user.id)

    assert await eventually(lambda: balance() == Decimal("15.00"))  # the cut answer refunded


async def test_a_superseded_callers_reply_names_their_own_message(
    make_live: MakeLive, services: Services, user: UserRecord, admin: UserRecord,
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    _live, _dialog_id, first, second = await start_superseded_answer(
        make_live, services, user, admin, fake_openai)

    assert second.message.seq == 2
    assert (first.message.seq, first.message.text) == (1, "Which shoes do you have?")


# --- crash, passivation, eviction, re-delivery --------------------------------------------------


async def test_a_crashed_actor_restarts_with_seq_and_handoff_state_from_the_store(
    live: LiveSystem, user: UserRecord, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dialog_id = new_dialog(live.services.db, user.id)
    await post(live, dialog_id, "one")
    await request_handoff(live, dialog_id)
    crashed = live.dialogs.get_or_start(dialog_id)
    original = DialogActor._post
    explosions = []

    def explode_once(self: DialogActor, cmd: Any) -> None:
        if cmd.text == "boom" and not explosions:
            explosions.append(cmd)
            raise RuntimeError("boom in the handler")
        original(self, cmd)

    monkeypatch.setattr(DialogActor, "_post", explode_once)
    with caplog.at_level(logging.ERROR, logger="server.actors.runtime"):
        boom = tell_post(live, dialog_id, "boom")
        behind = tell_post(live, dialog_id, "behind the crash", run_ai=True)  # queued behind it
        with pytest.raises(RuntimeError, match="boom in the handler"):
            await settle(boom)
        queued = await settle(behind)
    assert any("crashed" in record.getMessage() for record in caplog.records)
    assert await eventually(lambda: not crashed.is_alive())
    assert live.dialogs.get_or_start(dialog_id) is not crashed

    assert queued.message.seq == 3 and queued.handed_off  # still requested: the AI stays quiet
    after = await post(live, dialog_id, "and after", run_ai=True)
    assert after.message.seq == 4 and after.handed_off
    assert [(seq, sender) for seq, sender, *_ in stored(live.services.db, dialog_id)] == [
        (1, "user"), (2, "system"), (3, "user"), (4, "user")]
    assert handoff_status(live.services.db, dialog_id) == "requested"


async def test_passivation_keeps_seq_and_handoff_state(
    live: LiveSystem, user: UserRecord
) -> None:
    dialog_id = new_dialog(live.services.db, user.id)
    recorder = await Recorder.on(live.bus, dialog_channel(dialog_id))
    await post(live, dialog_id, "one")
    await post(live, dialog_id, "two")
    request_id = str(uuid.uuid4())
    await request_handoff(live, dialog_id, request_id=request_id)
    first = live.dialogs.get_or_start(dialog_id)

    live.dialogs.idle_timeout_secs = 0
    live.dialogs.sweep()
    assert await eventually(lambda: not first.is_alive() and live.dialogs.live_count() == 0)
    live.dialogs.idle_timeout_secs = 3600

    again = await post(live, dialog_id, "anyone there?", run_ai=True, wait_for_answer=True)
    assert live.dialogs.get_or_start(dialog_id) is not first
    assert again.message.seq == 4 and again.handed_off and again.answer is None
    replay = await settle(tell_handoff(live, dialog_id, RequestHandoff(
        request_id=request_id, at=utcnow())))
    assert isinstance(replay, HandoffChanged) and not replay.changed  # request_id reloaded too
    assert replay.state.status == "requested"
    await drained(live, dialog_id, recorder)
    assert recorder.of_type(events.MESSAGE_RECEIVED)[-1]["seq"] == 4
    assert events.TYPING_START not in [e["type"] for e in recorder.events
                                       if e.get("sender") == "assistant"]
    assert [(seq, sender) for seq, sender, *_ in stored(live.services.db, dialog_id)] == [
        (1, "user"), (2, "user"), (3, "system"), (4, "user")]


async def test_lru_eviction_keeps_seq_and_handoff_state(
    live: LiveSystem, user: UserRecord
) -> None:
    first_dialog = new_dialog(live.services.db, user.id)
    second_dialog = new_dialog(live.services.db, user.id)
    live.dialogs.max_live = 1
    await post(live, first_dialog, "one")
    await take_over(live, first_dialog, user.id, legacy=True)
    first = live.dialogs.get_or_start(first_dialog)

    await post(live, second_dialog, "elsewhere")  # the cap of 1 evicts the first dialog
    assert await eventually(lambda: not first.is_alive())
    assert live.dialogs.live_count() == 1

    visitor = await post(live, first_dialog, "still there?", run_ai=True)
    manager = await post(live, first_dialog, "Yes!", sender="manager", author_user_id=user.id)
    assert (visitor.message.seq, visitor.handed_off) == (3, True)
    assert manager.message.seq == 4  # the new incarnation knows who holds the dialog
    assert [(seq, sender) for seq, sender, *_ in stored(live.services.db, first_dialog)] == [
        (1, "user"), (2, "system"), (3, "user"), (4, "manager")]


async def test_a_message_told_to_a_stopping_dialog_is_handled_by_its_successor(
    live: LiveSystem, user: UserRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialog_id = new_dialog(live.services.db, user.id)
    await post(live, dialog_id, "one")
    inside, gate = threading.Event(), threading.Event()
    block_at = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
    original = DialogActor._check_timers

    def blocking(self: DialogActor, at: dt.datetime) -> None:
        if at == block_at:
            inside.set()
            gate.wait(WAIT_SECS)
        original(self, at)

    monkeypatch.setattr(DialogActor, "_check_timers", blocking)
    live.dialogs.tell(dialog_id, CheckTimers(block_at))  # keeps the actor busy
    assert await asyncio.to_thread(inside.wait, WAIT_SECS)
    stopping = live.dialogs.get_or_start(dialog_id)
    stopping.stop(block=False)  # queued behind the busy handler
    redelivered = tell_post(live, dialog_id, "two")  # lands behind the stop
    gate.set()

    posted = await settle(redelivered)
    assert posted.message.seq == 2 and not posted.duplicate
    assert not stopping.is_alive()
    assert live.dialogs.get_or_start(dialog_id) is not stopping
    assert [(seq, text) for seq, _, text, _ in stored(live.services.db, dialog_id)] == [
        (1, "one"), (2, "two")]


async def test_an_actor_evicted_with_a_write_in_flight_hands_on_the_right_seq(
    make_live: MakeLive, user: UserRecord
) -> None:
    live = await make_live()
    gated = use_gated_writer(live)
    dialog_id = new_dialog(live.services.db, user.id)
    other_dialog = new_dialog(live.services.db, user.id)
    live.dialogs.max_live = 1
    await post(live, dialog_id, "one")
    first = live.dialogs.get_or_start(dialog_id)

    gated.hold()  # the database is slow: the next commits wait
    two = tell_post(live, dialog_id, "two")
    assert await eventually(lambda: gated.held == 1)  # handled; its write is in flight
    live.dialogs.get_or_start(other_dialog)  # the cap evicts the idle first dialog
    assert await eventually(lambda: not first.is_alive())
    three = tell_post(live, dialog_id, "three")  # a successor starts, and waits for "two"
    await asyncio.sleep(0.2)
    assert gated.held == 1 and not three.done()  # it loads nothing before "two" settles
    gated.release()

    assert (await settle(two)).message.seq == 2
    assert (await settle(three)).message.seq == 3
    assert [(seq, text) for seq, _, text, _ in stored(live.services.db, dialog_id)] == [
        (1, "one"), (2, "two"), (3, "three")]


# --- timers -------------------------------------------------------------------------------------


async def test_a_request_past_its_ttl_is_cancelled_with_a_message_and_an_audit_row(
    live: LiveSystem, user: UserRecord
) -> None:
    dialog_id = new_dialog(live.services.db, user.id)
    recorder = await Recorder.on(live.bus, dialog_channel(dialog_id))
    asked_at = utcnow()
    await request_handoff(live, dialog_id, at=asked_at)

    live.dialogs.tell(dialog_id, CheckTimers(asked_at + TTL - dt.timedelta(seconds=1)))
    live.dialogs.tell(dialog_id, CheckTimers(asked_at + TTL + dt.timedelta(seconds=1)))
    cancelled = await recorder.wait_for(lambda e: e["type"] == "handoff_cancelled")

    assert cancelled["handoff"]["status"] == "cancelled" and cancelled["seq"] == 2
    assert stored(live.services.db, dialog_id) == [
        (1, "system", SYSTEM_TEXTS["handoff_requested"], "handoff_requested"),
        (2, "system", SYSTEM_TEXTS["request_expired"], "handoff_cancelled"),
    ]
    assert audits(live.services.db, dialog_id) == [("none", "requested", "manual"),
                                                   ("requested", "cancelled", "expired")]
    assert handoff_status(live.services.db, dialog_id) == "cancelled"
    answered = await post(live, dialog_id, "ok, then the AI", run_ai=True, wait_for_answer=True)
    assert answered.answer is not None  # the AI answers again


async def test_an_sla_breach_is_published_once_and_mails_the_owner(
    live: LiveSystem, user: UserRecord
) -> None:
    dialog_id = new_dialog(live.services.db, user.id)
    recorder = await Recorder.on(live.bus, dialog_channel(dialog_id))
    feed = await Recorder.on(live.bus, owner_channel(user.id))
    asked_at = utcnow()
    await request_handoff(live, dialog_id, at=asked_at)
    assert await eventually(lambda: mail_kinds(live.services.db) == ["handoff_requested"])

    live.dialogs.tell(dialog_id, CheckTimers(asked_at + SLA - dt.timedelta(seconds=1)))
    live.dialogs.tell(dialog_id, CheckTimers(asked_at + SLA + dt.timedelta(seconds=1)))
    live.dialogs.tell(dialog_id, CheckTimers(asked_at + SLA + dt.timedelta(minutes=1)))
    await drained(live, dialog_id, recorder)
    await feed.wait_for(lambda e: e["type"] == events.SLA_BREACHED)

    (breach,) = recorder.of_type(events.SLA_BREACHED)
    assert breach["handoff"]["status"] == "requested" and breach["dialog_id"] == dialog_id
    assert len(feed.of_type(events.SLA_BREACHED)) == 1
    assert await eventually(lambda: mail_kinds(live.services.db) == [
        "handoff_requested", "handoff_sla_breached"])
    assert handoff_status(live.services.db, dialog_id) == "requested"  # still waiting
    assert len(stored(live.services.db, dialog_id)) == 1  # no message for a breach


async def test_an_sla_breach_is_not_published_again_after_passivation(
    live: LiveSystem, user: UserRecord
) -> None:
    dialog_id = new_dialog(live.services.db, user.id)
    recorder = await Recorder.on(live.bus, dialog_channel(dialog_id))
    asked_at = utcnow()
    await request_handoff(live, dialog_id, at=asked_at)
    live.dialogs.tell(dialog_id, CheckTimers(asked_at + SLA + dt.timedelta(seconds=1)))
    await recorder.wait_for(lambda e: e["type"] == events.SLA_BREACHED)
    first = live.dialogs.get_or_start(dialog_id)

    live.dialogs.idle_timeout_secs = 0
    live.dialogs.sweep()
    assert await eventually(lambda: not first.is_alive())
    live.dialogs.idle_timeout_secs = 3600
    live.dialogs.tell(dialog_id, CheckTimers(asked_at + SLA + dt.timedelta(minutes=1)))
    await drained(live, dialog_id, recorder)

    assert len(recorder.of_type(events.SLA_BREACHED)) == 1


async def test_sweep_sends_a_stale_operators_dialog_back_to_the_queue(
    live: LiveSystem, user: UserRecord
) -> None:
    dialog_id = new_dialog(live.services.db, user.id)
    recorder = await Recorder.on(live.bus, dialog_channel(dialog_id))
    beat_at = utcnow()
    with live.services.db.write() as session:
        presence_store.heartbeat(session, user.id, "online", beat_at)
    await request_handoff(live, dialog_id)
    await take_over(live, dialog_id, user.id)
    threshold = live.services.settings.operator_offline_threshold_seconds

    await live.sweep(now=beat_at + dt.timedelta(seconds=threshold - 1))  # not stale yet
    assert handoff_status(live.services.db, dialog_id) == "active"
    swept_at = beat_at + dt.timedelta(seconds=threshold + 1)
    await live.sweep(now=swept_at)
    requeued = await recorder.wait_for(
        lambda e: e["type"] == "handoff_requested" and e["seq"] == 3)

    assert requeued["handoff"]["status"] == "requested"
    assert requeued["handoff"]["assigned_manager"] is None
    assert stored(live.services.db, dialog_id)[-1] == (
        3, "system", SYSTEM_TEXTS["operator_left"], "handoff_requested")
    assert audits(live.services.db, dialog_id)[-1] == ("active", "requested", "operator_offline")
    with live.services.db.read() as session:
        presence = presence_store.get_presence(session, user.id)
    assert presence is not None and (presence.status, presence.active_chats) == ("offline", 0)
    waiting = await post(live, dialog_id, "hello?", run_ai=True, wait_for_answer=True)
    assert waiting.handed_off and waiting.answer is None  # back in the queue: the AI stays quiet
    # The new request restarted the timers: an operator can take it again.
    with live.services.db.write() as session:
        presence_store.heartbeat(session, user.id, "online", utcnow())
    again = await take_over(live, dialog_id, user.id)
    assert isinstance(again, HandoffChanged) and again.state.status == "active"
