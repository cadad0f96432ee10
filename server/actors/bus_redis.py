"""The event bus over Redis pub/sub, for several nodes sharing one Redis (DESIGN.md §9).

A node delivers its own events to its own subscribers directly (no round trip) and PUBLISHes
them to Redis for the other nodes. Every Redis message is `<node id> <orjson event>`; a node
ignores messages carrying its own id, so a local subscriber sees each event exactly once.

One pub/sub connection per node. A Redis channel (`<prefix><channel>`, prefix "replyx:bus:" by
default, so tests can isolate themselves) is SUBSCRIBEd only while this node has a local
subscriber of it, and `subscribe()` returns only after Redis confirmed the subscription — so a
door that subscribes, then replays from the store, then streams live misses nothing. Subscribe
and unsubscribe commands go through one ordered queue, so a quick unsubscribe/resubscribe of a
channel cannot reach Redis in the wrong order.

If Redis drops, the node logs it, reconnects with exponential backoff and re-subscribes every
channel that still has local subscribers; local delivery keeps working meanwhile. Events
published to or from other nodes during the outage ARE LOST — pub/sub has no memory. That is
why every dialog event carries `seq` and the doors replay from the store on reconnect.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid

import orjson
import redis.asyncio as redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from server.actors.bus import Event, EventBus

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "replyx:bus:"
RECONNECT_MIN_SECS = 0.1
RECONNECT_MAX_SECS = 5.0
SUBSCRIBE_CONFIRM_TIMEOUT_SECS = 5.0
CANCEL_RETRY_SECS = 0.5
# Encoded events waiting for PUBLISH; beyond this (Redis slow or away) new ones are dropped
# rather than letting memory grow: remote nodes recover them from the store by seq.
MAX_OUTBOX = 100_000


class RedisEventBus(EventBus):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        redis_url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        node_id: str | None = None,
    ) -> None:
        super().__init__(loop)
        self.node_id = node_id or uuid.uuid4().hex
        self.prefix = prefix
        self._node_tag = self.node_id.encode() + b" "
        # No retries inside redis-py: reconnecting (and re-subscribing) is ours to do.
        self._redis = redis.Redis.from_url(
            redis_url.removeprefix("async+"),
            retry=Retry(NoBackoff(), 0),
            client_name=f"replyx-bus-{self.node_id[:12]}",
        )
        self._commands: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        # Per channel, one entry per SUBSCRIBE sent, in order: the futures its confirmation resolves.
        self._confirmations: dict[str, collections.deque[list[asyncio.Future[None]]]] = {}
        self._outbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self._outbox_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._first_attempt = asyncio.Event()
        self.connected = False
        self.remote_published = 0  # events PUBLISHed to Redis
        self.remote_received = 0  # events from other nodes delivered here
        self.remote_dropped = 0  # events that could not be sent to Redis

    # --- lifecycle -----------------------------------------------------------------------------

    async def _start(self) -> None:
        """Start the connection tasks; wait (bounded) for the first connection attempt."""
        self._tasks = [
            asyncio.create_task(self._pubsub_supervisor(), name="bus-redis-pubsub"),
            asyncio.create_task(self._publisher(), name="bus-redis-publisher"),
        ]
        try:
            await asyncio.wait_for(self._first_attempt.wait(), SUBSCRIBE_CONFIRM_TIMEOUT_SECS)
        except TimeoutError:
            log.warning("bus: no answer from Redis at start; carrying on and retrying")

    async def _stop(self) -> None:
        # The flag, not only cancel(): redis-py can swallow a cancellation (its pipeline shields
        # returning the connection to the pool), so every loop also checks it.
        self._closing = True
        self._outbox_ready.set()
        self._commands.put_nowait(("stop", ""))
        await _cancel_all(self._tasks)
        self._tasks = []
        self._release_waiters()
        await self._redis.aclose()

    # --- subscriptions ----------------------------------------------------------------------

    def _redis_channel(self, channel: str) -> str:
        return self.prefix + channel

    async def _channel_opened(self, channel: str) -> None:
        """Queue SUBSCRIBE and wait (bounded) until Redis confirms it."""
        confirmed = self.loop.create_future()
        self._confirmations.setdefault(channel, collections.deque()).append([confirmed])
        self._commands.put_nowait(("subscribe", channel))
        if not self.connected:
            return  # Redis is away: don't stall the door; the reconnect subscribes it
        try:
            await asyncio.wait_for(asyncio.shield(confirmed), SUBSCRIBE_CONFIRM_TIMEOUT_SECS)
        except TimeoutError:
            # Redis went away meanwhile: local delivery works; the reconnect subscribes it.
            log.warning("bus: Redis did not confirm SUBSCRIBE %s in time", channel)

    def _channel_closed(self, channel: str) -> None:
        if not self._stopped:
            self._commands.put_nowait(("unsubscribe", channel))

    def _confirm(self, channel: str) -> None:
        waiters = self._confirmations.get(channel)
        if not waiters:
            return
        _resolve(waiters.popleft())
        if not waiters:
            del self._confirmations[channel]

    def _release_waiters(self) -> None:
        for waiters in self._confirmations.values():
            for futures in waiters:
                _resolve(futures)
        self._confirmations.clear()

    # --- the pub/sub connection ----------------------------------------------------------------

    async def _pubsub_supervisor(self) -> None:
        delay = RECONNECT_MIN_SECS
        while not self._closing:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.connect()
                self._resubscribe_all()
                log.info("bus: connected to Redis pub/sub as node %s", self.node_id)
                self.connected = True
                self._first_attempt.set()
                delay = RECONNECT_MIN_SECS
                await self._serve(pubsub)
            except (RedisError, OSError) as error:
                _reraise_if_cancelled()
                self._first_attempt.set()
                log.warning("bus: Redis pub/sub unavailable (%s); retrying in %.1f s", error, delay)
            finally:
                self.connected = False
                await pubsub.aclose()
            _reraise_if_cancelled()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECS)

    def _resubscribe_all(self) -> None:
        """On a fresh connection: replace queued commands by one SUBSCRIBE per wanted channel.

        Whoever still waits for a confirmation of a wanted channel waits for that SUBSCRIBE's;
        waiters of channels no longer wanted are released.
        """
        while not self._commands.empty():
            self._commands.get_nowait()
        previous, self._confirmations = self._confirmations, {}
        for channel in self._channels:
            merged = [future for futures in previous.pop(channel, ()) for future in futures]
            self._confirmations[channel] = collections.deque([merged])
            self._commands.put_nowait(("subscribe", channel))
        for waiters in previous.values():
            for futures in waiters:
                _resolve(futures)

    async def _serve(self, pubsub: PubSub) -> None:
        """Run the reader and the command writer until either fails; re-raise its error."""
        tasks = [
            asyncio.create_task(self._read(pubsub), name="bus-redis-reader"),
            asyncio.create_task(self._write_commands(pubsub), name="bus-redis-commands"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            await _cancel_all(tasks)

    async def _write_commands(self, pubsub: PubSub) -> None:
        while not self._closing:
            command, channel = await self._commands.get()
            if command == "subscribe":
                await pubsub.subscribe(self._redis_channel(channel))
            elif command == "unsubscribe":
                await pubsub.unsubscribe(self._redis_channel(channel))

    async def _read(self, pubsub: PubSub) -> None:
        prefix_length = len(self.prefix)
        while not self._closing:
            message = await pubsub.get_message(timeout=None)
            if message is None:
                continue
            kind = message["type"]
            channel = message["channel"].decode()[prefix_length:]
            if kind == "subscribe":
                self._confirm(channel)
            elif kind == "message":
                self._receive(channel, message["data"])

    def _receive(self, channel: str, data: bytes) -> None:
        node, _, body = data.partition(b" ")
        if node == self._node_tag[:-1]:
            return  # our own echo: local subscribers already have it
        try:
            event = orjson.loads(body)
        except orjson.JSONDecodeError:
            log.warning("bus: undecodable message on %s ignored", channel)
            return
        self.remote_received += 1
        self._fan_out(channel, event)

    # --- publishing to the other nodes -----------------------------------------------------------

    def _forward(self, batch: list[tuple[str, Event]]) -> None:
        room = MAX_OUTBOX - len(self._outbox)
        if room < len(batch):
            self.remote_dropped += len(batch) - max(room, 0)
            batch = batch[: max(room, 0)]
        for channel, event in batch:
            try:
                payload = self._node_tag + orjson.dumps(event)
            except TypeError:  # orjson.JSONEncodeError: a publisher's bug, not the others' problem
                log.exception("bus: event of type %r on %s is not JSON", event.get("type"), channel)
                self.remote_dropped += 1
                continue
            self._outbox.append((self._redis_channel(channel), payload))
        if batch:
            self._outbox_ready.set()

    async def _publisher(self) -> None:
        """PUBLISH queued events in one pipeline per round, in order, over the client's pool."""
        delay = RECONNECT_MIN_SECS
        while not self._closing:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            round_ = list(self._outbox)
            self._outbox.clear()
            if not round_:
                continue
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for redis_channel, payload in round_:
                        pipe.publish(redis_channel, payload)
                    await pipe.execute()
                _reraise_if_cancelled()
                self.remote_published += len(round_)
                delay = RECONNECT_MIN_SECS
            except (RedisError, OSError) as error:
                _reraise_if_cancelled()
                self.remote_dropped += len(round_)
                log.warning("bus: %d events not published to Redis (%s)", len(round_), error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_SECS)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _reraise_if_cancelled() -> None:
    """redis-py may swallow a cancellation or turn it into a connection error; stop() must win."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel and wait; cancel again any task whose cancellation a library swallowed."""
    pending = [task for task in tasks if not task.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CANCEL_RETRY_SECS)
        pending = [task for task in pending if not task.done()]
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.debug("bus: task %s ended with %r", task.get_name(), task.exception())
