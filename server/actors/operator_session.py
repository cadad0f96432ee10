"""OperatorSessionActor: one per operator with a live connection (DESIGN.md §4).

It owns the operator's presence while they are connected: heartbeats from the panel
(`POST /api/operator/heartbeat`) and the liveness of their feed socket (`/ws/operator`, which
answers our pings) become one stream of presence writes, debounced so a busy socket does not
write a row every few seconds. When the last connection goes, nothing is written: the sweeper
marks the operator offline after `OPERATOR_OFFLINE_THRESHOLD_SECONDS` of silence, which also
covers a process that died without saying goodbye.

The row in `operator_presence` stays the shared truth (several processes, the takeover's atomic
slot reservation); the actor only decides when to write it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

from server.actors.runtime import ThreadActor
from server.store import presence as presence_store
from server.store.db import Database
from server.store.types import utcnow

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Connected:
    reply: Any


@dataclasses.dataclass(frozen=True, slots=True)
class Disconnected:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class SocketAlive:
    """The feed socket answered recently: the operator is still there."""


@dataclasses.dataclass(frozen=True, slots=True)
class Heartbeat:
    status: str
    reply: Any
    max_active_chats_web: int | None = None
    max_active_chats_telegram: int | None = None


class OperatorSessionActor(ThreadActor):
    def __init__(self, user_id: int, db: Database, debounce_secs: float) -> None:
        super().__init__()
        self.user_id = user_id
        self.db = db
        self.debounce = dt.timedelta(seconds=debounce_secs)
        self.connections = 0
        self.status = "online"
        self.last_written: dt.datetime | None = None

    def on_receive(self, message: Any) -> Any:
        match message:
            case Connected():
                self.connections += 1
                self.status = "online"
                self._answer(message.reply, lambda: self._write(force=True))
            case Disconnected():
                self.connections = max(0, self.connections - 1)
            case SocketAlive():
                if self.connections and self.status == "online":
                    self._write(force=False)
            case Heartbeat():
                self.status = message.status
                self._answer(message.reply, lambda: self._write(
                    force=True,
                    max_web=message.max_active_chats_web,
                    max_telegram=message.max_active_chats_telegram,
                ))
        return None

    @staticmethod
    def _answer(reply: Any, work: Any) -> None:
        try:
            result = work()
        except Exception as exc:  # noqa: BLE001 - handed to the asking door, which re-raises it
            if not reply.done():
                reply.set_exception(exc)
            return
        if not reply.done():
            reply.set_result(result)

    def _write(self, *, force: bool, max_web: int | None = None,
               max_telegram: int | None = None) -> presence_store.PresenceRecord | None:
        now = utcnow()
        if not force and self.last_written is not None and now - self.last_written < self.debounce:
            return None
        with self.db.write() as session:
            record = presence_store.heartbeat(session, self.user_id, self.status, now,
                                              max_web, max_telegram)
        self.last_written = now
        return record
