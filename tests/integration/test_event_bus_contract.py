"""One contract for both event buses: the in-process one and Redis pub/sub (`redis_url` param).

No timing assertions: every wait is bounded by WAIT_SECS and fails the test when it runs out.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as redis

from server.actors.bus import (
    EventBus,
    MemoryEventBus,
    Subscription,
    build_bus,
    dialog_channel,
    owner_channel,
)
from server.actors.bus_redis import RedisEventBus

WAIT_SECS = 10.0
# Multi-node behaviour exists only on Redis: these run on the Redis parameter alone (the
# in-process bus is one node by design), so neither CI nor a developer run skips them.
REDIS_ONLY = pytest.mark.parametrize("redis_url", ["redis"], indirect=True)

BusFactory = Callable[..., Awaitable[EventBus]]


@pytest.fixture
async def make_bus(redis_url: str | None) -> AsyncIterator[BusFactory]:
    """Started buses on the test's loop; several share one prefix (so they are "nodes")."""
    prefix = f"test:{uuid.uuid4().hex}:"
    buses: list[EventBus] = []

    async def factory() -> EventBus:
        loop = asyncio.get_running_loop()
        bus = build_bus(redis_url, loop, prefix=prefix) if redis_url else build_bus(None, loop)
        await bus.start()
        buses.append(bus)
        return bus

    yield factory
    for bus in buses:
        await bus.stop()


def event(kind: str = "message:new", **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}


async def take(subscription: Subscription, count: int) -> list[dict[str, Any]]:
    """Exactly `count` events, within WAIT_SECS."""

    async def collect() -> list[dict[str, Any]]:
        return [await anext(subscription) for _ in range(count)]

    return await asyncio.wait_for(collect(), WAIT_SECS)


def run_threads(target: Callable[[int], None], count: int) -> None:
    threads = [threading.Thread(target=target, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


async def test_event_reaches_only_subscribers_of_its_channel(make_bus: BusFactory) -> None:
    bus = await make_bus()
    first = await bus.subscribe(dialog_channel(1))
    second = await bus.subscribe(dialog_channel(1))
    other = await bus.subscribe(dialog_channel(2))
    feed = await bus.subscribe(owner_channel(1))
    await bus.publish_async(dialog_channel(1), event(dialog_id=1, seq=1))
    await bus.publish_async(owner_channel(1), event("handoff_requested", dialog_id=1))
    await bus.publish_async(dialog_channel(2), event(dialog_id=2, seq=1))
    assert await take(first, 1) == [event(dialog_id=1, seq=1)]
    assert await take(second, 1) == [event(dialog_id=1, seq=1)]
    assert await take(feed, 1) == [event("handoff_requested", dialog_id=1)]
    assert await take(other, 1) == [event(dialog_id=2, seq=1)]
    assert len(first) == len(second) == len(feed) == len(other) == 0


async def test_events_keep_publish_order_per_channel(make_bus: BusFactory) -> None:
    bus = await make_bus()
    subscription = await bus.subscribe(dialog_channel(7), max_queue=1000)
    for seq in range(1, 301):
        if seq % 3:
            bus.publish(dialog_channel(7), event(dialog_id=7, seq=seq))
        else:
            await bus.publish_async(dialog_channel(7), event(dialog_id=7, seq=seq))
    received = await take(subscription, 300)
    assert [item["seq"] for item in received] == list(range(1, 301))


async def test_publishes_from_four_threads_arrive_complete_and_ordered(
    make_bus: BusFactory,
) -> None:
    bus = await make_bus()
    subscription = await bus.subscribe(dialog_channel(3), max_queue=5000)

    def publish_many(thread: int) -> None:
        for number in range(500):
            bus.publish(dialog_channel(3), event(thread=thread, number=number))

    await asyncio.to_thread(run_threads, publish_many, 4)
    received = await take(subscription, 2000)
    for thread in range(4):
        numbers = [item["number"] for item in received if item["thread"] == thread]
        assert numbers == list(range(500))


async def test_closed_subscription_receives_nothing_more(make_bus: BusFactory) -> None:
    bus = await make_bus()
    leaving = await bus.subscribe(dialog_channel(4))
    staying = await bus.subscribe(dialog_channel(4))
    await bus.publish_async(dialog_channel(4), event(seq=1))
    assert await take(leaving, 1) == [event(seq=1)]
    bus.unsubscribe(leaving)
    await bus.publish_async(dialog_channel(4), event(seq=2))
    assert await take(staying, 2) == [event(seq=1), event(seq=2)]
    assert leaving.closed and len(leaving) == 0
    assert await leaving.get() is None
    assert bus.subscriber_count(dialog_channel(4)) == 1


async def test_async_with_closes_the_subscription(make_bus: BusFactory) -> None:
    bus = await make_bus()
    async with await bus.subscribe(dialog_channel(5)) as subscription:
        await bus.publish_async(dialog_channel(5), event(seq=1))
        assert await take(subscription, 1) == [event(seq=1)]
    assert subscription.closed
    assert bus.subscriber_count(dialog_channel(5)) == 0
    assert [item async for item in subscription] == []


async def test_full_queue_marks_subscription_overflowed_without_blocking_publisher(
    make_bus: BusFactory,
) -> None:
    bus = await make_bus()
    slow = await bus.subscribe(dialog_channel(6), max_queue=10)
    healthy = await bus.subscribe(dialog_channel(6), max_queue=1000)

    def publish_burst(_: int) -> None:
        for seq in range(1, 501):
            bus.publish(dialog_channel(6), event(seq=seq))

    # The publishing thread returns although nobody reads `slow`: publish never waits.
    await asyncio.wait_for(asyncio.to_thread(run_threads, publish_burst, 1), WAIT_SECS)
    received = await take(healthy, 500)
    assert [item["seq"] for item in received] == list(range(1, 501))
    assert slow.overflowed and slow.closed
    assert [item async for item in slow] == []
    assert bus.overflows == 1
    assert bus.subscriber_count(dialog_channel(6)) == 1


async def test_thread_publishes_are_handed_to_the_loop_in_batches(
    make_bus: BusFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = await make_bus()
    loop = asyncio.get_running_loop()
    subscription = await bus.subscribe(dialog_channel(8), max_queue=2000)
    calls = 0
    original = loop.call_soon_threadsafe

    def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon_threadsafe", counting)

    def publish_thousand(_: int) -> None:
        for seq in range(1000):
            bus.publish(dialog_channel(8), event(seq=seq))

    await asyncio.to_thread(run_threads, publish_thousand, 1)
    assert len(await take(subscription, 1000)) == 1000
    # While the loop waits for the thread, the pending batch only grows: one hand-off for it.
    assert 1 <= calls < 100


async def test_stop_closes_subscriptions_and_ignores_later_publishes(
    make_bus: BusFactory,
) -> None:
    bus = await make_bus()
    subscription = await bus.subscribe(dialog_channel(9))
    waiting = asyncio.create_task(subscription.get())
    await asyncio.sleep(0)
    await bus.stop()
    assert await asyncio.wait_for(waiting, WAIT_SECS) is None
    assert subscription.closed and not subscription.overflowed
    bus.publish(dialog_channel(9), event(seq=1))
    await bus.publish_async(dialog_channel(9), event(seq=2))
    assert bus.dropped == 2
    with pytest.raises(RuntimeError):
        await bus.subscribe(dialog_channel(9))


@REDIS_ONLY
async def test_two_nodes_see_each_others_events_exactly_once(
    make_bus: BusFactory, redis_url: str | None
) -> None:
    if redis_url is None:
        pytest.skip("needs Redis: in-process buses are one node each by design")
    node_a, node_b = await make_bus(), await make_bus()
    channel = dialog_channel(10)
    at_a = await node_a.subscribe(channel, max_queue=1000)
    at_b = await node_b.subscribe(channel, max_queue=1000)
    for number in range(100):
        node_a.publish(channel, event(node="a", number=number))
        await node_b.publish_async(channel, event(node="b", number=number))
    for subscription in (at_a, at_b):
        received = await take(subscription, 200)
        for node in ("a", "b"):
            numbers = [item["number"] for item in received if item["node"] == node]
            assert numbers == list(range(100))
    # Fences: each node's fence is published after it saw the other's events, so any echo or
    # duplicate would be queued before the fence that the other node now waits for.
    await node_a.publish_async(channel, event("fence", node="a"))
    await node_b.publish_async(channel, event("fence", node="b"))
    assert sorted(item["node"] for item in await take(at_a, 2)) == ["a", "b"]
    assert sorted(item["node"] for item in await take(at_b, 2)) == ["a", "b"]
    assert len(at_a) == len(at_b) == 0


@REDIS_ONLY
async def test_node_stops_listening_to_redis_when_its_last_subscriber_leaves(
    make_bus: BusFactory, redis_url: str | None
) -> None:
    if redis_url is None:
        pytest.skip("needs Redis: the in-process bus has no Redis subscriptions")
    bus = await make_bus()
    assert isinstance(bus, RedisEventBus)
    redis_channel = bus.prefix + dialog_channel(11)
    client = redis.Redis.from_url(redis_url)
    try:
        subscription = await bus.subscribe(dialog_channel(11))
        assert dict(await client.pubsub_numsub(redis_channel))[redis_channel.encode()] == 1
        subscription.close()

        async def numsub() -> int:
            return int(dict(await client.pubsub_numsub(redis_channel))[redis_channel.encode()])

        async with asyncio.timeout(WAIT_SECS):
            while await numsub() != 0:
                await asyncio.sleep(0.01)
    finally:
        await client.aclose()


@REDIS_ONLY
async def test_node_reconnects_and_resubscribes_after_losing_redis(
    make_bus: BusFactory, redis_url: str | None
) -> None:
    if redis_url is None:
        pytest.skip("needs Redis: the in-process bus has no connection to lose")
    sender, receiver = await make_bus(), await make_bus()
    assert isinstance(receiver, RedisEventBus)
    subscription = await receiver.subscribe(dialog_channel(12), max_queue=10_000)
    client = redis.Redis.from_url(redis_url)
    try:
        clients = await client.client_list()
        name = f"replyx-bus-{receiver.node_id[:12]}"
        pubsub_ids = [c["id"] for c in clients if c["name"] == name and int(c["sub"]) > 0]
        assert len(pubsub_ids) == 1
        await client.execute_command("CLIENT", "KILL", "ID", pubsub_ids[0])
    finally:
        await client.aclose()
    # Events sent during the outage may be lost (the doors replay from the store), so send
    # probes until one arrives through the new connection.
    async with asyncio.timeout(WAIT_SECS):
        while True:
            await sender.publish_async(dialog_channel(12), event("probe"))
            try:
                await asyncio.wait_for(subscription.get(), 0.2)
                break
            except TimeoutError:
                continue
    assert receiver.connected


async def test_node_without_redis_still_delivers_locally_and_stops_cleanly() -> None:
    # Port 1 on loopback refuses at once: the node starts, logs, and keeps retrying.
    bus = build_bus("redis://127.0.0.1:1/0", asyncio.get_running_loop(), prefix="test:down:")
    await bus.start()
    try:
        assert isinstance(bus, RedisEventBus) and not bus.connected
        subscription = await asyncio.wait_for(bus.subscribe(dialog_channel(13)), WAIT_SECS)
        bus.publish(dialog_channel(13), event(seq=1))
        assert await take(subscription, 1) == [event(seq=1)]
    finally:
        await bus.stop()


def test_build_bus_uses_redis_only_when_configured() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(build_bus(None, loop), MemoryEventBus)
        assert isinstance(build_bus("", loop), MemoryEventBus)
        assert isinstance(build_bus("redis://127.0.0.1:6379/0", loop), RedisEventBus)
    finally:
        loop.close()


async def test_may_deliver_is_false_only_when_nobody_anywhere_could_listen(
    make_bus: BusFactory, redis_url: str | None
) -> None:
    bus = await make_bus()
    channel = dialog_channel(9)
    # One process knows its own subscribers; with Redis another node may be listening.
    assert bus.may_deliver(channel) is (redis_url is not None)
    subscription = await bus.subscribe(channel)
    assert bus.may_deliver(channel)
    subscription.close()
    assert bus.may_deliver(channel) is (redis_url is not None)
