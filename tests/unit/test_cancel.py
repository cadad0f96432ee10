"""The cancellation token shared by actor threads and the streaming coroutine."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from server.ai.cancel import Cancelled, CancelToken, cancel_waiter, race

WAIT_SECS = 5.0


def test_new_token_is_live() -> None:
    token = CancelToken()
    assert not token.is_cancelled
    assert token.reason is None


def test_cancel_sets_flag_and_reason_once() -> None:
    token = CancelToken()
    assert token.cancel("takeover") is True
    assert token.cancel("again") is False
    assert token.is_cancelled
    assert token.reason == "takeover"


async def test_wait_returns_at_once_when_already_cancelled() -> None:
    token = CancelToken()
    token.cancel()
    await asyncio.wait_for(token.wait(), WAIT_SECS)


async def test_cancel_from_another_thread_wakes_a_waiting_coroutine() -> None:
    token = CancelToken()
    waiting = asyncio.ensure_future(token.wait())
    await asyncio.sleep(0)
    thread = threading.Thread(target=token.cancel, args=("operator took over",))
    thread.start()
    await asyncio.wait_for(waiting, WAIT_SECS)
    thread.join(WAIT_SECS)
    assert token.reason == "operator took over"


async def test_many_waiters_all_wake() -> None:
    token = CancelToken()
    waiters = [asyncio.ensure_future(token.wait()) for _ in range(5)]
    await asyncio.sleep(0)
    token.cancel()
    await asyncio.wait_for(asyncio.gather(*waiters), WAIT_SECS)


async def test_abandoned_waiter_is_forgotten() -> None:
    token = CancelToken()
    waiting = asyncio.ensure_future(token.wait())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert token.cancel() is True  # nothing left to wake, no error


def test_wait_blocking_sees_cancel_from_another_thread() -> None:
    token = CancelToken()
    timer = threading.Timer(0.01, token.cancel)
    timer.start()
    assert token.wait_blocking(WAIT_SECS) is True
    timer.join(WAIT_SECS)


async def test_race_returns_the_result_of_finished_work() -> None:
    token = CancelToken()
    waiter = cancel_waiter(token)
    assert waiter is not None

    async def work() -> str:
        return "done"

    assert await race(work(), waiter, time.monotonic() + WAIT_SECS) == "done"
    waiter.cancel()


async def test_race_raises_cancelled_and_stops_the_work() -> None:
    token = CancelToken()
    waiter = cancel_waiter(token)
    stopped = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.set()

    asyncio.get_running_loop().call_soon(token.cancel)
    with pytest.raises(Cancelled):
        await race(slow(), waiter, time.monotonic() + 3600)
    assert stopped.is_set()


async def test_race_raises_timeout_at_the_deadline() -> None:
    async def slow() -> None:
        await asyncio.sleep(3600)

    with pytest.raises(TimeoutError):
        await race(slow(), None, time.monotonic() + 0.01)


async def test_cancel_task_on_cancel_stops_the_task() -> None:
    token = CancelToken()
    task = asyncio.ensure_future(asyncio.sleep(3600))
    token.cancel_task_on_cancel(task)
    threading.Thread(target=token.cancel).start()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_SECS)
