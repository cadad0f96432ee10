"""The event bus: fan-out of dialog and operator-feed events to the WebSocket doors.

Channels are `dialog:{id}` (every event of one dialog) and `owner:{user_id}` (the tenant-wide
operator feed); see `dialog_channel` / `owner_channel`. An event is a plain JSON-serialisable
dict with at least `type` (dialog events also carry `dialog_id` and `seq`). One dict object is
handed to every local subscriber, so subscribers must treat it as read-only.

Publishing is safe from any thread and never blocks: `publish()` appends to a pending list under
a short lock and, only when that list goes from empty to non-empty, schedules ONE drain on the
event loop with `call_soon_threadsafe` (≈110 k calls/s on asyncio, so one call per batch, not one
per event). The drain fans the whole batch out in publish order. Code already on the loop may
use `publish_async()`, which keeps that same order.

A subscriber gets a `Subscription` with a bounded queue: when it is full the subscription is
marked `overflowed` and closed (the WebSocket door then closes the socket with 4008 and the
client resumes from the store by `seq`); the publisher never waits for a slow reader.

`MemoryEventBus` is the embedded default; `bus_redis.RedisEventBus` shares events between nodes.
`build_bus()` picks one from the settings. Lifecycle: `await bus.start()` on the loop,
`await bus.stop()` at shutdown (closes every subscription).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from server.config import Settings

log = logging.getLogger(__name__)

Event = dict[str, Any]
DEFAULT_SUBSCRIPTION_QUEUE = 256


def dialog_channel(dialog_id: int) -> str:
    return f"dialog:{dialog_id}"


def owner_channel(user_id: int) -> str:
    return f"owner:{user_id}"


class Subscription:
    """Events of one channel for one consumer: `async for event in subscription`.

    Iteration ends when the subscription is closed — by `close()`, by `bus.stop()`, or by an
    overflow (then `overflowed` is True and any events still buffered are discarded: the
    consumer is too slow and will resume from the store).
    """

    __slots__ = (
        "_bus",
        "_on_close",
        "_queue",
        "_sink",
        "_waiter",
        "channel",
        "closed",
        "max_queue",
        "overflowed",
    )

    def __init__(self, bus: EventBus, channel: str, max_queue: int) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.channel = channel
        self.max_queue = max_queue
        self.overflowed = False
        self.closed = False
        self._bus = bus
        # A list (bounded by max_queue), not a deque: an empty deque is half a KiB, and a
        # subscription per idle socket lives on after push_to() empties it.
        self._queue: list[Event] = []
        self._waiter: asyncio.Future[None] | None = None
        self._sink: Callable[[Event], object] | None = None
        self._on_close: Callable[[Subscription], object] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def push_to(self, sink: Callable[[Event], object],
                on_close: Callable[[Subscription], object] | None = None) -> None:
        """From now on hand each event straight to `sink` (on the loop, never awaited), after
        the events already buffered, instead of queueing them for `get()`. A consumer that
        keeps its own bounded queue (a WebSocket connection) saves a task and a hop per event.
        `on_close` is called once when the subscription closes (e.g. `bus.stop()`)."""
        buffered, self._queue = self._queue, []
        self._sink, self._on_close = sink, on_close
        for event in buffered:
            sink(event)
        if self.closed and on_close is not None:
            on_close(self)

    def _offer(self, event: Event) -> bool:
        """Called on the loop by the bus; never blocks. False when the event was not queued."""
        if self.closed:
            return False
        if self._sink is not None:
            self._sink(event)
            return True
        if len(self._queue) >= self.max_queue:
            self.overflowed = True
            log.info("bus: subscriber of %s overflowed (%d queued)", self.channel, self.max_queue)
            self.close()
            return False
        self._queue.append(event)
        self._wake()
        return True

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        """Stop receiving; idempotent. Wakes a consumer waiting in `get()` / `async for`."""
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        self._wake()
        self._bus._detach(self)
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close(self)

    async def get(self) -> Event | None:
        """The next event, or None once the subscription is closed (one consumer task only)."""
        while not self.closed:
            if self._queue:
                return self._queue.pop(0)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        event = await self.get()
        if event is None:
            raise StopAsyncIteration
        return event

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class EventBus:
    """Local fan-out plus the thread-to-loop hand-off; subclasses add transport to other nodes.

    Hooks for a distributed subclass: `_channel_opened` (first local subscriber of a channel,
    awaited before `subscribe()` returns), `_channel_closed` (last one left), `_forward` (a batch
    of events published on this node, after local delivery) and `_start`/`_stop`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._channels: dict[str, set[Subscription]] = {}
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Event]] = []
        self._drain_scheduled = False
        self._loop_thread: int | None = None
        self._stopped = False
        # Metrics: plain counters a metrics exporter may read.
        self.published = 0  # events accepted by publish()/publish_async()
        self.delivered = 0  # events put into a subscriber's queue
        self.overflows = 0  # subscriptions closed because their queue was full
        self.dropped = 0  # events refused because the bus was stopped

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop_thread = threading.get_ident()
        await self._start()

    async def stop(self) -> None:
        """Close every subscription and release transports; publishing afterwards is a no-op."""
        self._stopped = True
        with self._lock:
            self.dropped += len(self._pending)
            self._pending = []
        for subscriptions in list(self._channels.values()):
            for subscription in list(subscriptions):
                subscription.close()
        await self._stop()

    async def _start(self) -> None:
        return None

    async def _stop(self) -> None:
        return None

    # --- subscribing (on the loop) ------------------------------------------------------------

    async def subscribe(
        self, channel: str, *, max_queue: int = DEFAULT_SUBSCRIPTION_QUEUE
    ) -> Subscription:
        """A live subscription; events published after this returns are delivered to it."""
        if self._stopped:
            raise RuntimeError("the event bus is stopped")
        subscription = Subscription(self, channel, max_queue)
        subscribers = self._channels.setdefault(channel, set())
        subscribers.add(subscription)
        if len(subscribers) == 1:
            await self._channel_opened(channel)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.close()

    def subscriber_count(self, channel: str) -> int:
        return len(self._channels.get(channel, ()))

    def may_deliver(self, channel: str) -> bool:
        """Whether an event published on `channel` now could reach anyone (any thread). Only a
        hint for publishers that can skip work: a subscriber arriving right after the answer
        may miss that one event, so use it only where a missed event is tolerable."""
        return True

    def _detach(self, subscription: Subscription) -> None:
        subscribers = self._channels.get(subscription.channel)
        if subscribers is None or subscription not in subscribers:
            return
        subscribers.discard(subscription)
        if subscription.overflowed:
            self.overflows += 1
        if not subscribers:
            del self._channels[subscription.channel]
            self._channel_closed(subscription.channel)

    async def _channel_opened(self, channel: str) -> None:
        return None

    def _channel_closed(self, channel: str) -> None:
        return None

    # --- publishing ---------------------------------------------------------------------------

    def publish(self, channel: str, event: Event) -> None:
        """Thread-safe and non-blocking; delivery happens on the loop, in publish order."""
        _check_event(event)
        with self._lock:
            if self._stopped:
                self.dropped += 1
                return
            self._pending.append((channel, event))
            self.published += 1
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        try:
            if threading.get_ident() == self._loop_thread:
                self.loop.call_soon(self._drain)
            else:
                self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: the process is shutting down
            log.warning("bus: event loop closed, dropping events for %s", channel)
            with self._lock:
                self.dropped += len(self._pending)
                self._pending = []
                self._drain_scheduled = False

    async def publish_async(self, channel: str, event: Event) -> None:
        """For code on the loop: delivers now, after anything published earlier by publish()."""
        _check_event(event)
        with self._lock:
            if self._stopped:
                self.dropped += 1
                return
        self._drain()
        with self._lock:
            self.published += 1
        self._dispatch([(channel, event)])

    def _drain(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._drain_scheduled = False
        if batch and not self._stopped:
            self._dispatch(batch)

    def _dispatch(self, batch: list[tuple[str, Event]]) -> None:
        for channel, event in batch:
            self._fan_out(channel, event)
        self._forward(batch)

    def _fan_out(self, channel: str, event: Event) -> None:
        subscribers = self._channels.get(channel)
        if not subscribers:
            return
        for subscription in list(subscribers):
            if subscription._offer(event):
                self.delivered += 1

    def _forward(self, batch: list[tuple[str, Event]]) -> None:
        return None


class MemoryEventBus(EventBus):
    """The embedded default: one process, fan-out on the loop, nothing leaves the process."""

    def may_deliver(self, channel: str) -> bool:
        return channel in self._channels


def _check_event(event: Event) -> None:
    if not isinstance(event, dict) or "type" not in event:
        raise ValueError("an event is a dict with a 'type'")


def build_bus(
    settings_or_redis_url: Settings | str | None,
    loop: asyncio.AbstractEventLoop,
    **redis_options: Any,
) -> EventBus:
    """Redis pub/sub when a Redis URL is configured, else the in-process bus (not started yet)."""
    if settings_or_redis_url is None or isinstance(settings_or_redis_url, str):
        redis_url = settings_or_redis_url
    else:
        redis_url = settings_or_redis_url.redis_url
        redis_options.setdefault("prefix", settings_or_redis_url.bus_prefix)
    if not redis_url:
        return MemoryEventBus(loop)
    from server.actors.bus_redis import RedisEventBus  # imports redis only when it is used

    return RedisEventBus(loop, redis_url, **redis_options)
