"""The live-chat system: the event bus, the store writer and the dialog actors, behind one door.

REST endpoints and WebSocket channels are thin doors: they check who calls and what they own,
then call `post`/`change_handoff` here, which tell the dialog's actor and await its reply
without blocking the loop (every wait has a timeout). The actor replies after the commit.

Started and stopped by the app's lifespan (it needs the running loop for the bus and the
bridge). A sweeper task runs the time-driven parts of spec §8.4 every
`HANDOFF_SWEEP_INTERVAL_SECS`: requests past their SLA or TTL get a `CheckTimers`, operators
silent for `OPERATOR_OFFLINE_THRESHOLD_SECONDS` go offline and their active dialogs go back to
the queue, and the operators' load counters are recounted (they drift when a process dies).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import logging
from typing import Any

from anyio import to_thread

from server.actors import operator_session
from server.actors.bridge import LoopReplies, LoopReply
from server.actors.bus import EventBus, Subscription, build_bus
from server.actors.dialog import (
    ChangeHandoff,
    CheckTimers,
    DialogActor,
    DialogDeps,
    DialogPolicy,
    Generations,
    HandoffChanged,
    Posted,
    PostMessage,
)
from server.actors.handoff import (
    Command,
    LegacyTakeOver,
    OperatorWentOffline,
    Rejected,
    TakeOver,
)
from server.actors.operator_session import OperatorSessionActor
from server.actors.runtime import Directory
from server.actors.store_writer import StoreWriter
from server.context import Services
from server.errors import AppError, CloseCode, ErrorCode
from server.handoff_mail import queue_handoff_email
from server.security import sha256_hex
from server.store import assistants as assistant_store
from server.store import billing as billing_store
from server.store import handoff_timers
from server.store import presence as presence_store
from server.store.assistants import AssistantRecord
from server.store.presence import PresenceRecord
from server.store.types import utcnow
from server.ws.connection import Connection
from server.ws.limits import ConnectionLimits

log = logging.getLogger(__name__)

ASSISTANT_CHANGES = "assistants:changed"


@dataclasses.dataclass(frozen=True, slots=True)
class VisitorGrant:
    """What let a visitor's socket in: a site token (its version and domains) or the widget
    variant (assistant id + guest id, allowed while the website integration is on)."""

    via_token: bool
    widget_version: int | None = None
    domains_hash: str | None = None

    def still_valid(self, assistant: AssistantRecord | None) -> bool:
        if assistant is None or not assistant.is_active:
            return False
        if not self.via_token:
            return assistant.website_integration_enabled
        if self.widget_version is None:
            return True  # an account-level token: not bound to a version
        return (self.widget_version == assistant.widget_version
                and self.domains_hash == sha256_hex(assistant.allowed_domains))


class LiveSystem:
    def __init__(self, services: Services, loop: asyncio.AbstractEventLoop, bus: EventBus) -> None:
        settings = services.settings
        self.services = services
        self.loop = loop
        self.bus = bus
        self.writer = StoreWriter(services.db)
        self.generations = Generations()
        self.policy = DialogPolicy(
            sla_minutes={"web": settings.handoff_sla_web_minutes,
                         "telegram": settings.handoff_sla_telegram_minutes},
            request_ttl=dt.timedelta(minutes=settings.handoff_request_ttl_minutes),
        )
        self.dialogs = Directory(
            self._start_dialog,
            name="dialogs",
            idle_timeout_secs=settings.dialog_idle_timeout_secs,
            max_live=settings.max_live_dialog_actors,
        )
        self.deps = DialogDeps(
            db=services.db,
            writer=self.writer,
            bus=bus,
            engine=services.engine,
            loop=loop,
            tell=self.dialogs.tell,
            generations=self.generations,
            policy=self.policy,
            notify_owner=lambda session, **kw: queue_handoff_email(
                session, settings, mailer=services.mailer, **kw),
            release_operator_slot=presence_store.release_slot,
            refund=billing_store.refund,
        )
        self.operators = Directory(
            lambda user_id: OperatorSessionActor.start(
                int(user_id), services.db, settings.operator_heartbeat_interval_seconds / 2),
            name="operators",
            idle_timeout_secs=max(settings.dialog_idle_timeout_secs,
                                  2 * settings.operator_heartbeat_interval_seconds),
        )
        self.ws_limits = ConnectionLimits(settings.ws_max_connections_per_dialog,
                                          settings.ws_max_connections)
        self._connections: set[Connection] = set()
        # Visitor sockets by assistant, with what let them in: re-checked when the assistant
        # changes (embed code rotated, domains changed, integration off, deleted).
        self._visitors: dict[int, dict[Connection, VisitorGrant]] = {}
        self._assistant_changes: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.replies = LoopReplies(loop)

    def _start_dialog(self, dialog_id: Any) -> Any:
        return DialogActor.start(int(dialog_id), self.deps)

    # --- lifecycle -----------------------------------------------------------------------------

    @classmethod
    async def start(cls, services: Services) -> LiveSystem:
        loop = asyncio.get_running_loop()
        bus = build_bus(services.settings, loop)
        await bus.start()
        live = cls(services, loop, bus)
        live.writer.start()
        live._sweeper = loop.create_task(live._sweep_forever(), name="handoff-sweeper")
        live._assistant_changes = await bus.subscribe(ASSISTANT_CHANGES)
        live._assistant_changes.push_to(live._on_assistant_changed)
        return live

    async def stop(self) -> None:
        for connection in list(self._connections):
            connection.close(CloseCode.GOING_AWAY, "server going away")
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self.generations.cancel_all("shutdown")
        await to_thread.run_sync(self.dialogs.stop_all)
        await to_thread.run_sync(self.operators.stop_all)
        await to_thread.run_sync(self.writer.stop)
        await self.bus.stop()

    # --- the doors' calls ----------------------------------------------------------------------

    async def post(
        self,
        dialog_id: int,
        *,
        sender: str,
        text: str,
        client_message_id: str | None = None,
        author_user_id: int | None = None,
        author_name: str | None = None,
        wait_for_answer: bool = False,
        run_ai: bool = True,
    ) -> Posted:
        settings = self.services.settings
        reply = self.replies.new()
        self.dialogs.tell(dialog_id, PostMessage(
            sender=sender, text=text, reply=reply, client_message_id=client_message_id,
            author_user_id=author_user_id, author_name=author_name,
            wait_for_answer=wait_for_answer, run_ai=run_ai,
        ))
        timeout = settings.answer_timeout_secs if wait_for_answer else settings.actor_ask_timeout_secs
        return await self._await(reply, timeout, dialog_id)

    async def change_handoff(
        self, dialog_id: int, command: Command, *, slot_reserved: bool = False
    ) -> HandoffChanged:
        """Run a handoff command; a refusal raises the 409 naming the current state."""
        reply = self.replies.new()
        self.dialogs.tell(dialog_id, ChangeHandoff(command, reply, slot_reserved))
        outcome = await self._await(reply, self.services.settings.actor_ask_timeout_secs,
                                    dialog_id)
        if isinstance(outcome, Rejected):
            raise AppError(ErrorCode.CONFLICT, outcome.detail, status=409)
        return outcome

    async def take_over(self, dialog_id: int, channel: str, operator_id: int,
                        operator_name: str, *, legacy: bool = False) -> HandoffChanged:
        """An operator takes a dialog. Their capacity is reserved first with one conditional
        update (`presence.reserve_slot`), so an operator is never over capacity even when
        taking two dialogs at once; if the dialog then refuses (another operator won the race,
        spec §4.9), the slot is given back."""
        now = utcnow()
        kind = "telegram" if channel == "telegram" else "web"

        def reserve() -> str | None:
            with self.services.db.write() as session:
                return presence_store.reserve_slot(session, operator_id, kind, now)

        refusal = await to_thread.run_sync(reserve)
        if refusal is not None:
            raise AppError(ErrorCode.CONFLICT, refusal, status=409)
        command_type = LegacyTakeOver if legacy else TakeOver
        command = command_type(operator_id=operator_id, operator_name=operator_name, at=now)
        try:
            return await self.change_handoff(dialog_id, command, slot_reserved=True)
        except BaseException:
            await to_thread.run_sync(self._release_slot, operator_id)
            raise

    def _release_slot(self, operator_id: int) -> None:
        with self.services.db.write() as session:
            presence_store.release_slot(session, operator_id)

    async def _await(self, reply: LoopReply, timeout: float, key: int) -> Any:
        try:
            return await reply.wait(timeout, f"actor {key}")
        except TimeoutError as exc:
            raise AppError(ErrorCode.SERVICE_UNAVAILABLE,
                           "The dialog did not answer in time; try again", status=503) from exc

    # --- sockets and operators -----------------------------------------------------------------

    def track(self, connection: Connection) -> None:
        self._connections.add(connection)

    def untrack(self, connection: Connection) -> None:
        self._connections.discard(connection)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def track_visitor(self, assistant_id: int, connection: Connection,
                      grant: VisitorGrant) -> None:
        self._visitors.setdefault(assistant_id, {})[connection] = grant

    def untrack_visitor(self, assistant_id: int, connection: Connection) -> None:
        sockets = self._visitors.get(assistant_id)
        if sockets is not None:
            sockets.pop(connection, None)
            if not sockets:
                del self._visitors[assistant_id]

    def assistant_changed(self, assistant_id: int) -> None:
        """Tell every node to re-check the visitor sockets of this assistant (a rotated embed
        code or new domains revoke the older site tokens of sockets already open: 4002)."""
        self.bus.publish(ASSISTANT_CHANGES, {"type": "assistant_changed",
                                             "assistant_id": assistant_id})

    def _on_assistant_changed(self, event: dict[str, Any]) -> None:
        assistant_id = event.get("assistant_id")
        if isinstance(assistant_id, int) and assistant_id in self._visitors:
            self.loop.create_task(self._revalidate_visitors(assistant_id))

    async def _revalidate_visitors(self, assistant_id: int) -> None:
        def load() -> AssistantRecord | None:
            with self.services.db.read() as session:
                return assistant_store.get_assistant(session, assistant_id)

        try:
            assistant = await to_thread.run_sync(load)
        except Exception:
            log.exception("live: re-checking the visitors of assistant %s failed", assistant_id)
            return
        for connection, grant in list(self._visitors.get(assistant_id, {}).items()):
            if not grant.still_valid(assistant):
                connection.close(CloseCode.CREDENTIAL_INVALID, "credential revoked")

    async def operator_connected(self, user_id: int) -> None:
        reply = self.replies.new()
        self.operators.tell(user_id, operator_session.Connected(reply))
        await self._await(reply, self.services.settings.actor_ask_timeout_secs, user_id)

    async def operator_disconnected(self, user_id: int) -> None:
        self.operators.tell(user_id, operator_session.Disconnected())

    def operator_alive(self, user_id: int) -> None:
        self.operators.tell(user_id, operator_session.SocketAlive())

    async def heartbeat(self, user_id: int, status: str, max_active_chats_web: int | None,
                        max_active_chats_telegram: int | None) -> PresenceRecord:
        reply = self.replies.new()
        self.operators.tell(user_id, operator_session.Heartbeat(
            status, reply, max_active_chats_web, max_active_chats_telegram))
        return await self._await(reply, self.services.settings.actor_ask_timeout_secs, user_id)

    # --- time-driven handoff (spec §8.4) ---------------------------------------------------------

    async def _sweep_forever(self) -> None:
        interval = self.services.settings.handoff_sweep_interval_secs
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("handoff sweep failed")

    async def sweep(self, now: dt.datetime | None = None) -> None:
        """One pass of the timers; also called by tests with a chosen `now`."""
        at = now or utcnow()
        settings = self.services.settings
        earliest = min(settings.handoff_sla_web_minutes, settings.handoff_sla_telegram_minutes,
                       settings.handoff_request_ttl_minutes)

        def scan() -> tuple[list[int], list[tuple[int, list[int]]]]:
            with self.services.db.write() as session:
                due = handoff_timers.requests_waiting_since(
                    session, at - dt.timedelta(minutes=earliest))
                gone = presence_store.mark_stale_offline(
                    session, at, settings.operator_offline_threshold_seconds)
                orphaned = [(operator, presence_store.active_dialog_ids(session, operator))
                            for operator in gone]
            return due, orphaned

        due, orphaned = await to_thread.run_sync(scan)
        for dialog_id in due:
            self.dialogs.tell(dialog_id, CheckTimers(at))
        for operator_id, dialog_ids in orphaned:
            for dialog_id in dialog_ids:
                reply: concurrent.futures.Future[Any] = concurrent.futures.Future()
                self.dialogs.tell(dialog_id, ChangeHandoff(
                    OperatorWentOffline(operator_id=operator_id, at=at), reply))
        await to_thread.run_sync(self._resync_loads)

    def _resync_loads(self) -> None:
        with self.services.db.write() as session:
            presence_store.resync_active_chats(session)
