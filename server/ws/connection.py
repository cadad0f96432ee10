"""One accepted WebSocket for its whole life: outbound queue, heartbeat, client frames, resume.

A door authenticates, `accept()`s, takes a `ConnectionLimits` slot, subscribes to the bus and
then hands everything to `serve()`:

    connection = Connection(websocket)
    await serve(connection, subscription, dialog_id=dialog_id, since=since,
                replay=replay, on_frame=on_frame)

`serve` sends the stored events with `seq > since` (`replay`), then `ready`, then the live
events of the subscription — the subscription is opened BEFORE the replay is read, so an event
committed in between arrives twice and its second copy is dropped by `seq` (message:new only:
it is the one event whose `seq` is its own). Meanwhile it reads client frames, answers
heartbeats and closes idle or abusive clients. It returns when the socket is closed, by either
side, and always closes the subscription.

After the replay, everything sent goes through one bounded queue drained by one sender task,
so `offer()` never waits: an actor callback or the bus may call it on the loop. A full queue
means the client does not read fast enough: the socket is closed with 4008 and the client
resumes from the store by `seq`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from starlette.websockets import WebSocket, WebSocketDisconnect

from server.actors.bus import Subscription
from server.errors import AppError, CloseCode, ErrorCode
from server.ws.protocol import (
    BAD_FRAME,
    LEGACY_PONG,
    PING,
    ClientFrame,
    FrameError,
    LegacyPing,
    LegacyPong,
    Pong,
    SendText,
    Typing,
    close_reason,
    encode,
    error_frame,
    parse_client_frame,
    ready_frame,
)

log = logging.getLogger(__name__)

SENDER_LINGER_SECS: Final = 5.0
_SHARED_RNG = random.Random()  # jitter only; one per connection cost 2.5 KB each

OUTBOUND_QUEUE_SIZE: Final = 256
HEARTBEAT_INTERVAL_SECS: Final = 25.0
HEARTBEAT_JITTER: Final = 0.2  # ± fraction of the interval, so clients do not ping in step
IDLE_TIMEOUT_SECS: Final = 60.0
# A client that does not read cannot take our close frame either: give up writing it then.
CLOSE_TIMEOUT_SECS: Final = 5.0
MAX_BAD_FRAMES_IN_A_ROW: Final = 20
OVERSIZED_FRAMES_BEFORE_CLOSE: Final = 2

FrameHandler = Callable[[SendText | Typing], Awaitable[None]]
Replay = Callable[[int], Awaitable[Sequence[Mapping[str, Any]]]]
# The outbound queue holds events (encoded by the sender) or ready-made text frames.
Outbound = Mapping[str, Any] | str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    interval_secs: float = HEARTBEAT_INTERVAL_SECS
    jitter: float = HEARTBEAT_JITTER
    idle_timeout_secs: float = IDLE_TIMEOUT_SECS

    def next_delay(self, rng: random.Random) -> float:
        return self.interval_secs * rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)


class Connection:
    """An accepted WebSocket; see the module docstring. Create it on the event loop."""

    # Slots: one per socket, 10,000 idle sockets per process (no per-instance dict).
    __slots__ = (
        "_beat_handle",
        "_catching_up",
        "_closed_waiter",
        "_finished",
        "_loop",
        "_next_ping",
        "_outbound",
        "_queue_size",
        "_rng",
        "_sender",
        "_sender_waiting",
        "close_code",
        "close_reason",
        "close_timeout_secs",
        "disconnected",
        "heartbeat",
        "last_received",
        "websocket",
    )

    def __init__(
        self,
        websocket: WebSocket,
        *,
        queue_size: int = OUTBOUND_QUEUE_SIZE,
        heartbeat: Heartbeat | None = None,
        close_timeout_secs: float = CLOSE_TIMEOUT_SECS,
        rng: random.Random | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.websocket = websocket
        self.heartbeat = heartbeat or Heartbeat()
        self.close_timeout_secs = close_timeout_secs
        self.close_code: int | None = None  # the first close asked for wins
        self.close_reason = ""
        self.disconnected = False  # the client went away first: no close frame to send
        self._loop = asyncio.get_running_loop()
        # A list and one waiter rather than an asyncio.Queue (five objects, an Event among
        # them), and a future made only when someone waits rather than an asyncio.Event: an
        # empty deque alone is a 64-slot block (half a KiB), and there are 10,000 idle sockets.
        self._queue_size = queue_size
        self._outbound: list[Outbound] = []
        self._sender_waiting: asyncio.Future[None] | None = None
        # The task that writes queued frames: started when a frame is queued, it ends after
        # SENDER_LINGER_SECS without one, so an idle socket holds no task for sending.
        self._sender: asyncio.Task[None] | None = None
        self._catching_up = True  # until `ready` is written, frames wait in the queue
        self._finished = False
        self._closed_waiter: asyncio.Future[None] | None = None
        self._rng = rng or _SHARED_RNG
        self.last_received = self._loop.time()
        self._beat_handle: asyncio.TimerHandle | None = None
        self._next_ping = 0.0

    @property
    def closing(self) -> bool:
        """True once a close was asked for or the client went away; offers are dropped."""
        return self._finished

    def offer(self, event: Mapping[str, Any]) -> bool:
        """Queue one event for the client without waiting. False when it was dropped: the
        connection is closing, or its queue is full (then it is closed with 4008)."""
        return self._enqueue(event)

    def close(self, code: int, reason: str = "") -> None:
        """Ask for the socket to be closed with `code`; idempotent, never waits. `serve()`
        stops its tasks and writes the close frame."""
        if self.close_code is None and not self.disconnected:
            self.close_code = int(code)
            self.close_reason = close_reason(reason)
        self._finish()

    async def wait_closed(self) -> None:
        if self._finished:
            return
        if self._closed_waiter is None:
            self._closed_waiter = self._loop.create_future()
        await asyncio.shield(self._closed_waiter)

    def _finish(self) -> None:
        self._finished = True
        waiter = self._closed_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- internals used by serve() ------------------------------------------------------------

    def _enqueue(self, item: Outbound) -> bool:
        if self._finished:
            return False
        if len(self._outbound) >= self._queue_size:
            log.info("ws: slow consumer, closing (%d frames queued)", self._queue_size)
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer")
            return False
        self._outbound.append(item)
        waiting = self._sender_waiting
        if waiting is not None and not waiting.done():
            waiting.set_result(None)
        elif self._sender is None and not self._catching_up:
            self._start_sender()
        return True

    def _start_sender(self) -> None:
        self._sender = self._loop.create_task(self._run_sender())

    async def _run_sender(self) -> None:
        # Unlike the receive loop, the sender may end on its own (it lingers, then goes).
        try:
            await self._send_loop()
        except Exception:
            log.exception("ws: sending failed")
            self.close(CloseCode.INTERNAL_ERROR, "internal error")

    async def _write(self, item: Outbound) -> bool:
        """Write one frame now (waits while the client does not read); False once it is gone.

        The catch-up (replay, `ready`) writes here directly, so a long replay waits on the
        socket instead of filling the queue that pings and errors share; the sender task starts
        after it, so there is never a second writer (no lock needed).
        """
        if isinstance(item, str):
            text = item
        else:
            try:
                text = encode(item)
            except TypeError:  # orjson.JSONEncodeError: a bug in a producer, not the client
                log.exception("ws: event %r cannot be serialised, dropped", item.get("type"))
                return True
        try:
            await self.websocket.send_text(text)
        except (WebSocketDisconnect, RuntimeError):
            self._gone()
            return False
        return True

    def _gone(self) -> None:
        self.disconnected = True
        self._finish()

    async def _send_loop(self) -> None:
        outbound = self._outbound
        while True:
            if not outbound:
                self._sender_waiting = self._loop.create_future()
                linger = self._loop.call_later(SENDER_LINGER_SECS, _settle, self._sender_waiting)
                try:
                    await self._sender_waiting
                finally:
                    self._sender_waiting = None
                    linger.cancel()
                if not outbound:  # nothing came while lingering: let the task go
                    self._sender = None
                    return
            if not await self._write(outbound.pop(0)):
                return  # the client is gone (_write marked it)

    def _start_heartbeat(self) -> None:
        """Pings and the idle check run on a timer, not a task: an idle connection costs a
        timer handle rather than a coroutine frame (10,000 idle sockets add up)."""
        self._next_ping = self._loop.time() + self.heartbeat.next_delay(self._rng)
        self._schedule_beat()

    def _schedule_beat(self) -> None:
        idle_deadline = self.last_received + self.heartbeat.idle_timeout_secs
        self._beat_handle = self._loop.call_at(min(self._next_ping, idle_deadline), self._beat)

    def _beat(self) -> None:
        self._beat_handle = None
        if self.closing:
            return
        now = self._loop.time()
        if now >= self.last_received + self.heartbeat.idle_timeout_secs:
            self.close(CloseCode.GOING_AWAY, "idle timeout")
            return
        if now >= self._next_ping:
            self._enqueue(PING)
            self._next_ping = now + self.heartbeat.next_delay(self._rng)
        self._schedule_beat()

    def _stop_heartbeat(self) -> None:
        if self._beat_handle is not None:
            self._beat_handle.cancel()
            self._beat_handle = None

    async def _receive_loop(self, on_frame: FrameHandler | None) -> None:
        abuse = _Abuse()
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self._gone()
                return
            self.last_received = self._loop.time()
            data = message.get("text")
            if data is None:
                data = message.get("bytes")
            if data is None:
                continue
            try:
                frame = parse_client_frame(data)
            except FrameError as exc:
                if abuse.refused(exc):
                    self.close(CloseCode.PROTOCOL_VIOLATION, "too many bad frames")
                    return
                self._enqueue(error_frame(exc.code, exc.detail))
                continue
            abuse.accepted()
            await self._handle(frame, on_frame)

    async def _handle(self, frame: ClientFrame, on_frame: FrameHandler | None) -> None:
        if isinstance(frame, LegacyPing):
            self._enqueue(LEGACY_PONG)
            return
        if isinstance(frame, Pong | LegacyPong):
            return  # receiving it already reset the idle clock
        if on_frame is None:
            self._enqueue(error_frame(BAD_FRAME, "this socket does not accept messages"))
            return
        try:
            await on_frame(frame)
        except AppError as exc:
            self._enqueue(error_frame(exc.code.value, exc.detail))
        except FrameError as exc:
            self._enqueue(error_frame(exc.code, exc.detail))
        except Exception:  # one failing frame must not end the connection
            log.exception("ws: handling a %s frame failed", type(frame).__name__)
            self._enqueue(error_frame(ErrorCode.INTERNAL_ERROR.value, "internal error"))

    async def _write_close(self) -> None:
        if self.disconnected:
            return
        code = self.close_code if self.close_code is not None else CloseCode.NORMAL
        try:
            await asyncio.wait_for(
                self.websocket.close(code, self.close_reason), self.close_timeout_secs
            )
        except TimeoutError:
            log.info("ws: close frame %d not written in time, dropping the socket", code)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client is gone already


class _Abuse:
    """Counts refused frames: a run of them, or oversized ones, end the connection (1008)."""

    __slots__ = ("in_a_row", "oversized")

    def __init__(self) -> None:
        self.in_a_row = 0
        self.oversized = 0

    def refused(self, error: FrameError) -> bool:
        """Record a refused frame; True when the connection should be closed."""
        self.in_a_row += 1
        if error.oversized:
            self.oversized += 1
        return (
            self.in_a_row > MAX_BAD_FRAMES_IN_A_ROW
            or self.oversized >= OVERSIZED_FRAMES_BEFORE_CLOSE
        )

    def accepted(self) -> None:
        self.in_a_row = 0


class _SeqFilter:
    """Drops a message:new of this dialog whose seq was already sent; other events pass."""

    __slots__ = ("dialog_id", "last_seq")

    def __init__(self, dialog_id: int | None, since: int | None) -> None:
        self.dialog_id = dialog_id
        self.last_seq = since

    def admit(self, event: Mapping[str, Any]) -> bool:
        if self.dialog_id is None or event.get("type") != "message:new":
            return True
        seq = event.get("seq")
        if not isinstance(seq, int):
            return True
        if self.last_seq is not None and seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True


async def serve(
    connection: Connection,
    subscription: Subscription,
    *,
    dialog_id: int | None = None,
    since: int | None = None,
    replay: Replay | None = None,
    on_frame: FrameHandler | None = None,
    skip_types: frozenset[str] = frozenset(),
) -> None:
    """Run one connection until it closes; see the module docstring.

    `dialog_id` None is the operator feed: no replay and no de-duplication (its seqs belong to
    many dialogs). `replay(since)` returns the stored message:new events with seq > since in seq
    order; it needs `since`. Live events whose type is in `skip_types` are not sent (a notice
    meant for the other side of the dialog). `on_frame` handles SendText/Typing (None: they are refused with an
    `error` frame); an `AppError` it raises becomes an `error` frame with its code and detail.
    Client frames are handled one at a time, in order: a slow `on_frame` delays the next read.
    """
    if replay is not None and (since is None or dialog_id is None):
        raise ValueError("replay needs a dialog_id and since")
    tasks = [_start(connection, lambda: connection._receive_loop(on_frame))]
    connection._start_heartbeat()
    try:
        if await _catch_up(connection, subscription, dialog_id, since, replay, skip_types):
            connection._catching_up = False
            if connection._outbound:
                connection._start_sender()
            await connection.wait_closed()
    finally:
        connection._stop_heartbeat()
        if connection._sender is not None:
            tasks.append(connection._sender)
        for task in tasks:
            task.cancel()
        # wait, not gather: a child's CancelledError must not escape an enclosing anyio scope
        await asyncio.wait(tasks)
        subscription.close()
        await connection._write_close()


async def _catch_up(
    connection: Connection,
    subscription: Subscription,
    dialog_id: int | None,
    since: int | None,
    replay: Replay | None,
    skip_types: frozenset[str] = frozenset(),
) -> bool:
    """Replay, `ready`, then switch the subscription to pushing live events straight into the
    connection's queue (no task per connection for it). False if the socket went meanwhile."""
    seqs = _SeqFilter(dialog_id, since)
    if replay is not None and since is not None:
        try:
            stored = await replay(since)
        except Exception:
            log.exception("ws: replay failed")
            connection.close(CloseCode.INTERNAL_ERROR, "internal error")
            return False
        for event in stored:
            if seqs.admit(event) and not await connection._write(event):
                return False
    if not await connection._write(ready_frame(dialog_id, seqs.last_seq)):
        return False

    def push(event: Mapping[str, Any]) -> None:
        if event.get("type") not in skip_types and seqs.admit(event):
            connection.offer(event)  # a full queue closes the connection with 4008

    def closed(sub: Subscription) -> None:
        if sub.overflowed:
            connection.close(CloseCode.SLOW_CONSUMER, "slow consumer")
        else:  # closed by bus.stop() at shutdown, or by the door
            connection.close(CloseCode.GOING_AWAY, "server going away")

    subscription.push_to(push, closed)
    return True


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _start(
    connection: Connection, work: Callable[[], Coroutine[Any, Any, None]]
) -> asyncio.Task[None]:
    # The coroutine is made inside the task: a task cancelled before its first step then
    # leaves no never-awaited coroutine behind.
    return asyncio.get_running_loop().create_task(_guarded(connection, work))


async def _guarded(connection: Connection, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Any task ending on its own ends the connection; an unexpected error closes it 1011."""
    try:
        await work()
    except Exception:
        log.exception("ws: connection task failed")
        connection.close(CloseCode.INTERNAL_ERROR, "internal error")
        return
    if not connection.closing:
        log.error("ws: a connection task ended without closing the connection")
        connection.close(CloseCode.INTERNAL_ERROR, "internal error")
