"""A cancellation flag shared by the thread that decides and the coroutine that streams.

A takeover is decided in an actor thread (or on the loop) while the LLM answer streams as a
coroutine on the event loop (DESIGN.md §4). `CancelToken.cancel()` may be called from any
thread, any number of times. The streaming side either checks `is_cancelled` between chunks or
awaits `wait()`, which wakes at once when the token is set, so a generation blocked on a slow
server is interrupted promptly instead of after the next chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class CancelToken:
    """Set once, from anywhere; observed by any number of coroutines on any loops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._reason: str | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def is_cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str | None:
        return self._reason

    def cancel(self, reason: str = "cancelled") -> bool:
        """Set the token; True the first time, False when it was already set. Thread-safe."""
        with self._lock:
            if self._event.is_set():
                return False
            self._reason = reason
            self._event.set()
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            # A waiter's loop may have closed since it registered; nobody is left to wake there.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future)
        return True

    async def wait(self) -> None:
        """Return as soon as the token is set (at once if it already is)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._event.is_set():
                return
            entry = (loop, future)
            self._waiters.append(entry)
        try:
            await future
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def wait_blocking(self, timeout: float | None = None) -> bool:
        """For threads: block until set or `timeout`; True when set."""
        return self._event.wait(timeout)

    def cancel_task_on_cancel(self, task: asyncio.Task[object]) -> None:
        """Cancel `task` as soon as the token is set, for hard stops. Call on the task's loop."""
        loop = task.get_loop()

        async def watch() -> None:
            await self.wait()
            task.cancel()

        watcher = loop.create_task(watch())
        # The watcher must not outlive the task it guards.
        task.add_done_callback(lambda _done: watcher.cancel())

    def __repr__(self) -> str:
        state = f"cancelled: {self._reason}" if self.is_cancelled else "live"
        return f"<CancelToken {state}>"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Cancelled(Exception):
    """Raised by `race()` when the token was set before the awaited work finished."""


def cancel_waiter(token: CancelToken | None) -> asyncio.Task[None] | None:
    """A task that finishes when `token` is set; the caller cancels it when done with it."""
    return None if token is None else asyncio.ensure_future(token.wait())


async def race(
    work: Awaitable[T], waiter: asyncio.Future[None] | None, deadline: float
) -> T:
    """Await `work` until it finishes, the waiter fires, or the monotonic `deadline` passes.

    Raises `Cancelled` or `TimeoutError`; unfinished work is cancelled and awaited, so a
    half-read HTTP response is closed before this returns. A result that is ready wins over a
    cancel that fired at the same moment: callers check the token before using text.
    """
    task = asyncio.ensure_future(work)
    waiters: set[asyncio.Future[Any]] = {task} if waiter is None else {task, waiter}
    try:
        await asyncio.wait(waiters, timeout=max(0.0, deadline - time.monotonic()),
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if not task.cancelled():
        return task.result()
    if waiter is not None and waiter.done():
        raise Cancelled()
    raise TimeoutError()
