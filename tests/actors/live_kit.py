"""Helpers for the actor-level live-chat tests (no HTTP): a `LiveSystem` on the test's loop,
dialogs made straight in the store, a recorder of bus events, a store writer that can be held
(as if the database were slow), and short readers of what was committed.

Every wait is bounded (`WAIT_SECS`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from server.actors.bus import EventBus, MemoryEventBus, Subscription
from server.actors.dialog import ChangeHandoff, PostMessage
from server.actors.handoff import Command, LegacyTakeOver, RequestHandoff, TakeOver
from server.actors.store_writer import Committed, Failed, StoreWriter
from server.ai.engine import AnswerEngine
from server.ai.llm import LlmGateway
from server.billing import do_topup, seed_prices
from server.context import Services
from server.live import LiveSystem
from server.store import dialogs as dialog_store
from server.store import presence as presence_store
from server.store.db import Database
from server.store.dialog_writes import DialogWrite
from server.store.models import Assistant, Dialog, DialogMessage, HandoffAudit
from server.store.types import utcnow

WAIT_SECS = 10.0
POLL_SECS = 0.01


# --- the system under test ----------------------------------------------------------------------


async def start_live(services: Services, *, bus: EventBus | None = None) -> LiveSystem:
    """What `LiveSystem.start` does, minus the periodic sweeper (tests call `sweep` themselves)
    and with the bus of the test's choice."""
    loop = asyncio.get_running_loop()
    bus = bus or MemoryEventBus(loop)
    await bus.start()
    live = LiveSystem(services, loop, bus)
    live.writer.start()
    return live


def with_llm(services: Services, base_url: str, key: str = "sk-live-test") -> Services:
    """The services with an OpenAI key pointing at the fake server (a gateway of their own)."""
    settings = dataclasses.replace(services.settings, openai_api_key=key, openai_base_url=base_url)
    gateway = LlmGateway(settings, services.db)
    return dataclasses.replace(services, settings=settings, llm=gateway,
                               engine=AnswerEngine(services.db, gateway))


# --- store set-up -------------------------------------------------------------------------------


def new_dialog(db: Database, owner_id: int, *, channel: str = "web",
               assistant_id: int | None = None) -> int:
    with db.write() as session:
        return dialog_store.get_or_create_guest_dialog(
            session, owner_id, f"guest-{uuid.uuid4().hex[:8]}", channel, assistant_id=assistant_id)


def new_assistant(db: Database, owner_id: int) -> int:
    with db.write() as session:
        assistant = Assistant(user_id=owner_id, name="Shop", system_prompt="You sell shoes.")
        session.add(assistant)
        session.flush()
        return assistant.id


def fund(db: Database, admin_id: int, owner_id: int, amount: str) -> None:
    seed_prices(db)
    do_topup(db, admin_id, owner_id, Decimal(amount), None)


def reserve_slot(db: Database, operator_id: int, channel: str = "web") -> None:
    """What the takeover door does before it asks the dialog (the operator's slot, atomically)."""
    with db.write() as session:
        assert presence_store.reserve_slot(session, operator_id, channel, utcnow()) is None


# --- talking to the dialog actor ----------------------------------------------------------------


Reply = concurrent.futures.Future


def tell_post(live: LiveSystem, dialog_id: int, text: str, *, sender: str = "user",
              run_ai: bool = False, **fields: Any) -> Reply[Any]:
    reply: Reply[Any] = concurrent.futures.Future()
    live.dialogs.tell(dialog_id, PostMessage(sender=sender, text=text, reply=reply,
                                             run_ai=run_ai, **fields))
    return reply


def tell_handoff(live: LiveSystem, dialog_id: int, command: Command, *,
                 slot_reserved: bool = False) -> Reply[Any]:
    reply: Reply[Any] = concurrent.futures.Future()
    live.dialogs.tell(dialog_id, ChangeHandoff(command, reply, slot_reserved))
    return reply


async def settle(reply: Reply[Any], timeout: float = WAIT_SECS) -> Any:
    """The reply's value (or its exception, raised), awaited without blocking the loop."""
    return await asyncio.wait_for(asyncio.wrap_future(reply), timeout)


async def post(live: LiveSystem, dialog_id: int, text: str, **fields: Any) -> Any:
    return await settle(tell_post(live, dialog_id, text, **fields))


async def request_handoff(live: LiveSystem, dialog_id: int, *, at: dt.datetime | None = None,
                          request_id: str | None = None) -> Any:
    return await settle(tell_handoff(live, dialog_id, RequestHandoff(
        request_id=request_id or str(uuid.uuid4()), at=at or utcnow())))


async def take_over(live: LiveSystem, dialog_id: int, operator_id: int, *,
                    legacy: bool = False, name: str = "Anna") -> Any:
    reserve_slot(live.services.db, operator_id)
    kind = LegacyTakeOver if legacy else TakeOver
    command = kind(operator_id=operator_id, operator_name=name, at=utcnow())
    return await settle(tell_handoff(live, dialog_id, command, slot_reserved=True))


async def eventually(condition: Callable[[], bool], timeout: float = WAIT_SECS) -> bool:
    """Poll `condition` on the loop (yielding between polls) for at most `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return condition()
        await asyncio.sleep(POLL_SECS)
    return True


# --- the bus ------------------------------------------------------------------------------------


class Recorder:
    """Every event of one bus channel, in delivery order, collected by a task on the loop.

    `check(event)`, if given, runs on the loop for each event before it is recorded (a test
    uses it to look at the database at the moment the subscriber sees the event)."""

    def __init__(self, subscription: Subscription,
                 check: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.subscription = subscription
        self.events: list[dict[str, Any]] = []
        self._check = check
        self._task = asyncio.get_running_loop().create_task(self._collect())

    @classmethod
    async def on(cls, bus: EventBus, channel: str,
                 check: Callable[[dict[str, Any]], None] | None = None) -> Recorder:
        return cls(await bus.subscribe(channel, max_queue=100_000), check)

    async def _collect(self) -> None:
        async for event in self.subscription:
            if self._check is not None:
                self._check(event)
            self.events.append(event)

    def types(self) -> list[str]:
        return [event["type"] for event in self.events]

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == event_type]

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                       timeout: float = WAIT_SECS) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [event for event in self.events if predicate(event)]
            return bool(found)

        if not await eventually(seen, timeout):
            raise AssertionError(f"no matching event within {timeout} s: {self.types()}")
        return found[0]

    async def close(self) -> None:
        self.subscription.close()
        await asyncio.wait_for(self._task, WAIT_SECS)


# --- a store writer the test can hold -----------------------------------------------------------


class GatedWriter:
    """Wraps the real store writer. While held, writes wait here in order, as if the database
    were slow to commit; `release()` passes them on. Thread-safe, never blocks a caller."""

    def __init__(self, inner: StoreWriter) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._held: list[tuple[DialogWrite, Committed, Failed]] = []
        self._holding = False

    def wait_settled(self, dialog_id: int, timeout_secs: float) -> bool:
        """As the real writer's: held writes count as on their way."""
        deadline = time.monotonic() + timeout_secs
        with self._released:
            if not self._released.wait_for(
                lambda: all(write.dialog_id != dialog_id for write, _, _ in self._held),
                timeout_secs,
            ):
                return False
        return self.inner.wait_settled(dialog_id, max(0.0, deadline - time.monotonic()))

    def hold(self) -> None:
        with self._lock:
            self._holding = True

    def release(self) -> None:
        with self._lock:  # submitted under the lock, so nothing overtakes the held writes
            self._holding = False
            held, self._held = self._held, []
            for write, on_committed, on_failed in held:
                self.inner.submit(write, on_committed, on_failed)
            self._released.notify_all()

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def submit(self, write: DialogWrite, on_committed: Committed, on_failed: Failed) -> None:
        with self._lock:
            if self._holding:
                self._held.append((write, on_committed, on_failed))
                return
            self.inner.submit(write, on_committed, on_failed)


def use_gated_writer(live: LiveSystem) -> GatedWriter:
    """Swap the dialogs' writer for a gated one; call before any dialog actor starts."""
    gated = GatedWriter(live.writer)
    live.deps = dataclasses.replace(live.deps, writer=gated)  # type: ignore[arg-type]
    return gated


# --- what was committed -------------------------------------------------------------------------


def stored(db: Database, dialog_id: int) -> list[tuple[int, str, str, str | None]]:
    """(seq, sender, text, system_type) of every stored message, by seq."""
    with db.read() as session:
        rows = session.execute(
            select(DialogMessage.seq, DialogMessage.sender, DialogMessage.text,
                   DialogMessage.system_type)
            .where(DialogMessage.dialog_id == dialog_id).order_by(DialogMessage.seq)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


def handoff_status(db: Database, dialog_id: int) -> str:
    with db.read() as session:
        return session.execute(
            select(Dialog.handoff_status).where(Dialog.id == dialog_id)).scalar_one()


def audits(db: Database, dialog_id: int) -> list[tuple[str, str, str | None]]:
    """(from_status, to_status, reason) of the dialog's audit rows, oldest first."""
    with db.read() as session:
        rows = session.execute(
            select(HandoffAudit.from_status, HandoffAudit.to_status, HandoffAudit.reason)
            .where(HandoffAudit.dialog_id == dialog_id).order_by(HandoffAudit.id)
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]
