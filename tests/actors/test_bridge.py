from __future__ import annotations

import asyncio
import threading

import pytest
from counter_actor import (
    Add,
    CounterActor,
    Explode,
    FakeWorld,
    FetchOnLoop,
    GetCount,
    WaitFor,
    wait_until,
)
from pykka import ActorDeadError

from server.actors.bridge import AskTimeout, ask_async, run_on_loop

ASK_LIMIT_SECS = 5.0


async def test_ask_async_returns_the_reply(world: FakeWorld) -> None:
    ref = CounterActor.start("a", world)
    assert await ask_async(ref, Add(2), ASK_LIMIT_SECS) == 2
    assert await ask_async(ref, GetCount(), ASK_LIMIT_SECS) == 2


async def test_ask_async_leaves_the_loop_free_while_the_actor_works(world: FakeWorld) -> None:
    # The actor only finishes once a coroutine on this loop has run; a blocked loop would
    # leave it waiting until its bound and reply False.
    ref = CounterActor.start("a", world)
    released = threading.Event()

    async def release_from_the_loop() -> None:
        await asyncio.sleep(0)
        released.set()

    releaser = asyncio.create_task(release_from_the_loop())
    assert await ask_async(ref, WaitFor(released), ASK_LIMIT_SECS) is True
    await releaser


async def test_ask_async_without_reply_in_time_raises_ask_timeout(world: FakeWorld) -> None:
    ref = CounterActor.start("a", world)
    never = threading.Event()
    try:
        with pytest.raises(AskTimeout):
            await ask_async(ref, WaitFor(never), 0.05)
    finally:
        never.set()


async def test_ask_async_reraises_the_handlers_exception(world: FakeWorld) -> None:
    ref = CounterActor.start("a", world)
    with pytest.raises(ValueError, match="boom in a"):
        await ask_async(ref, Explode(), ASK_LIMIT_SECS)
    assert ref.is_alive()


async def test_ask_async_to_a_stopped_actor_raises_actor_dead(world: FakeWorld) -> None:
    ref = CounterActor.start("a", world)
    await asyncio.to_thread(ref.stop)
    with pytest.raises(ActorDeadError):
        await ask_async(ref, GetCount(), ASK_LIMIT_SECS)


async def test_run_on_loop_delivers_the_result_back_as_a_message(world: FakeWorld) -> None:
    ref = CounterActor.start("a", world)
    ref.tell(FetchOnLoop(asyncio.get_running_loop()))
    assert await asyncio.to_thread(wait_until, lambda: world.fetched == [42])


async def test_run_on_loop_delivers_the_exception_back_as_a_message(world: FakeWorld) -> None:
    ref = CounterActor.start("a", world)
    ref.tell(FetchOnLoop(asyncio.get_running_loop(), fail=True))
    assert await asyncio.to_thread(wait_until, lambda: len(world.fetched) == 1)
    assert isinstance(world.fetched[0], LookupError)


def test_run_on_loop_with_a_closed_loop_reports_the_error_at_once() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    outcomes: list[object] = []

    async def never_started() -> int:
        return 1

    run_on_loop(loop, never_started, outcomes.append)
    assert len(outcomes) == 1 and isinstance(outcomes[0], RuntimeError)


async def test_loop_replies_carry_answers_from_threads_in_order() -> None:
    from server.actors.bridge import LoopReplies

    hub = LoopReplies(asyncio.get_running_loop())
    replies = [hub.new() for _ in range(50)]

    def answer_all() -> None:
        for number, reply in enumerate(replies):
            reply.set_result(number)
        replies[0].set_result("late second answer, ignored")

    threading.Thread(target=answer_all).start()
    assert [await reply.wait(5.0, "test") for reply in replies] == list(range(50))


async def test_a_loop_reply_nobody_answers_times_out() -> None:
    from server.actors.bridge import LoopReplies

    hub = LoopReplies(asyncio.get_running_loop())
    answered, silent = hub.new(), hub.new()
    answered.set_exception(ValueError("refused"))

    with pytest.raises(ValueError, match="refused"):
        await answered.wait(0.1, "answered")
    with pytest.raises(AskTimeout, match="silent"):
        await silent.wait(0.1, "silent")
