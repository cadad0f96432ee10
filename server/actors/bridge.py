"""The one place that crosses between actor threads and the asyncio event loop (DESIGN.md §4).

Loop → actor: `ask_async(ref, message, timeout_secs)` puts the message in the actor's inbox with
a `ReplyFuture` as its `reply_to`. The actor thread completes that pykka future, which also
completes a `concurrent.futures.Future`; the loop awaits it with `asyncio.wrap_future`, so the
loop never blocks on `.get()` and no executor thread is held per ask.

Actor → loop: `run_on_loop(loop, coro_factory, on_done)` starts a coroutine on the loop and hands
its outcome to `on_done` (which typically `tell`s the actor a private message). The actor thread
never waits for it.

We build the envelope ourselves (`pykka._envelope.Envelope`, pykka 4.x) because `ActorRef.ask`
gives no way to choose the reply future's class; everything else uses pykka's public API.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from pykka import ActorDeadError, ActorRef
from pykka._envelope import Envelope

logger = logging.getLogger(__name__)

# Called with (the handler's return value, None) or (None, the exception it raised).
CompletionCallback: TypeAlias = Callable[[Any, BaseException | None], None]


class AskTimeout(TimeoutError):
    """An ask got no reply within its timeout (the actor may still handle the message later)."""


class ReplyFuture:
    """A pykka reply future that only calls `on_complete(value, error)` in the completing thread.

    Nobody blocks on it: the answer travels on through the callback. pykka only calls `set` and
    `set_exception` on an envelope's `reply_to`, so this is a plain object rather than a
    `ThreadingFuture`, whose queue and three conditions per message showed up as a tenth of a
    dialog message's cost.

    The completing thread is usually the actor's own; `on_complete` must be quick, must not
    block and must not raise (an exception escaping `set()` would kill the actor's loop), so it
    is guarded here.
    """

    __slots__ = ("_on_complete",)

    def __init__(self, on_complete: CompletionCallback) -> None:
        self._on_complete = on_complete

    def set(self, value: Any | None = None) -> None:
        self._notify(value, None)

    def set_exception(self, exc_info: Any = None) -> None:
        if exc_info is None:
            exc_info = sys.exc_info()
        exc_type, exc_value, _ = exc_info
        if exc_value is None and exc_type is not None:
            exc_value = exc_type()
        self._notify(None, exc_value)

    def _notify(self, value: Any, error: BaseException | None) -> None:
        try:
            self._on_complete(value, error)
        except Exception:
            logger.exception("reply callback failed")


def completing(cf: concurrent.futures.Future[Any]) -> ReplyFuture:
    """A reply future that resolves `cf` (ignoring a `cf` already cancelled by a timeout)."""

    def on_complete(value: Any, error: BaseException | None) -> None:
        if cf.done():
            return
        try:
            if error is None:
                cf.set_result(value)
            else:
                cf.set_exception(error)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled by the waiter between done() and set_*: the answer is unwanted

    return ReplyFuture(on_complete)


def post(ref: ActorRef[Any], message: Any, reply_to: ReplyFuture | None) -> None:
    """Put `message` in the actor's inbox; raise ActorDeadError if it has already stopped."""
    if not ref.is_alive():
        raise ActorDeadError(f"{ref} not found")
    ref.actor_inbox.put(Envelope(message, reply_to=reply_to))


async def await_reply(cf: concurrent.futures.Future[Any], timeout_secs: float, what: str) -> Any:
    """Await `cf` on the loop for at most `timeout_secs`; raise AskTimeout when it runs out."""
    waiter = asyncio.wrap_future(cf)
    # asyncio.wait (not wait_for) so that a TimeoutError raised by the handler itself is not
    # mistaken for our timeout.
    done, _ = await asyncio.wait({waiter}, timeout=timeout_secs)
    if not done:
        waiter.cancel()
        raise AskTimeout(f"no reply from {what} within {timeout_secs} s")
    return waiter.result()


async def ask_async(ref: ActorRef[Any], message: Any, timeout_secs: float) -> Any:
    """Ask an actor from the event loop without blocking it.

    Returns the handler's return value; re-raises the handler's exception; raises
    ActorDeadError if the actor is (or becomes, before handling) dead, AskTimeout on timeout.
    """
    cf: concurrent.futures.Future[Any] = concurrent.futures.Future()
    post(ref, message, completing(cf))
    return await await_reply(cf, timeout_secs, str(ref))


def run_on_loop(
    loop: asyncio.AbstractEventLoop,
    coro_factory: Callable[[], Awaitable[Any]],
    on_done: Callable[[Any], None],
) -> concurrent.futures.Future[Any]:
    """Start `coro_factory()` on `loop` from an actor thread; never blocks the caller.

    `on_done(result_or_exception)` is called once, in the loop's thread, with the coroutine's
    result, the exception it raised, or `asyncio.CancelledError()` if it was cancelled. Give it
    something that `tell`s the actor a private message. The returned future can be cancelled
    (e.g. a takeover stopping an AI reply). If the loop is closed, `on_done` gets the error at once
    in the calling thread.
    """

    async def run() -> Any:
        # The factory is called on the loop, so it may create loop-bound objects.
        return await coro_factory()

    coro = run()
    try:
        cf = asyncio.run_coroutine_threadsafe(coro, loop)
    except RuntimeError as exc:  # loop closed
        coro.close()
        _deliver_outcome(on_done, exc)
        failed: concurrent.futures.Future[Any] = concurrent.futures.Future()
        failed.set_exception(exc)
        return failed

    def on_finished(future: concurrent.futures.Future[Any]) -> None:
        if future.cancelled():
            outcome: Any = asyncio.CancelledError()
        elif future.exception() is not None:
            outcome = future.exception()
        else:
            outcome = future.result()
        _deliver_outcome(on_done, outcome)

    cf.add_done_callback(on_finished)
    return cf


def _deliver_outcome(on_done: Callable[[Any], None], outcome: Any) -> None:
    try:
        on_done(outcome)
    except Exception:
        logger.exception("run_on_loop: on_done failed (is the actor gone?)")


class LoopReply:
    """A one-shot answer from any thread to one coroutine on the loop.

    What `concurrent.futures.Future` + `asyncio.wrap_future` + `asyncio.wait` do for an ask,
    at a fraction of the cost: no condition variable, and the completions of many replies reach
    the loop in one batch (`LoopReplies`), with one wake-up of the loop instead of one each.
    Duck-types the completing half of a `concurrent.futures.Future` (`done`, `set_result`,
    `set_exception`), so an actor treats both alike. Create it on the loop.
    """

    __slots__ = ("_completed", "_future", "_hub")

    def __init__(self, hub: LoopReplies) -> None:
        self._hub = hub
        self._future: asyncio.Future[Any] = hub.loop.create_future()
        self._completed = False

    def done(self) -> bool:
        return self._completed

    def set_result(self, value: Any) -> None:
        self._complete(value, None)

    def set_exception(self, error: BaseException) -> None:
        self._complete(None, error)

    def _complete(self, value: Any, error: BaseException | None) -> None:
        # A racing second completion is harmless: the loop side keeps only the first.
        if self._completed:
            return
        self._completed = True
        self._hub.deliver(self._future, value, error)

    async def wait(self, timeout_secs: float, what: str) -> Any:
        """The answer; AskTimeout after `timeout_secs` (the actor may still answer later).

        The timeout is enforced by the hub's sweep, up to `TIMEOUT_RESOLUTION_SECS` late: a
        timer handle per ask kept a heap of thousands of handles under load, each push and
        pop comparing handles in Python."""
        self._hub.expire_after(timeout_secs, self._future, what)
        return await self._future


def _expire(future: asyncio.Future[Any], what: str, timeout_secs: float) -> None:
    if not future.done():
        future.set_exception(AskTimeout(f"no reply from {what} within {timeout_secs} s"))


TIMEOUT_RESOLUTION_SECS = 0.25


class LoopReplies:
    """Hands completions of `LoopReply`s to the loop in batches (one wake-up per batch), and
    expires the ones nobody answered in time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        self._scheduled = False
        self._loop_thread = threading.get_ident() if _running_loop() is loop else None
        # One FIFO per timeout length: within it, deadlines come in order, so expiring is
        # popping from the left (a few distinct lengths are in use: asks, answers).
        self._deadlines: dict[float, collections.deque[tuple[float, asyncio.Future[Any], str]]] = {}
        self._sweep: asyncio.TimerHandle | None = None

    def expire_after(self, timeout_secs: float, future: asyncio.Future[Any], what: str) -> None:
        """On the loop: fail `future` with AskTimeout if it is not done in `timeout_secs`."""
        waiting = self._deadlines.get(timeout_secs)
        if waiting is None:
            waiting = self._deadlines[timeout_secs] = collections.deque()
        waiting.append((self.loop.time() + timeout_secs, future, what))
        if self._sweep is None:
            self._sweep = self.loop.call_later(TIMEOUT_RESOLUTION_SECS, self._expire_due)

    def _expire_due(self) -> None:
        self._sweep = None
        now = self.loop.time()
        for timeout_secs, waiting in list(self._deadlines.items()):
            while waiting and (waiting[0][0] <= now or waiting[0][1].done()):
                _deadline, future, what = waiting.popleft()
                if not future.done():
                    _expire(future, what, timeout_secs)
            if not waiting:
                del self._deadlines[timeout_secs]
        if self._deadlines:
            self._sweep = self.loop.call_later(TIMEOUT_RESOLUTION_SECS, self._expire_due)

    def new(self) -> LoopReply:
        return LoopReply(self)

    def deliver(self, future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
        with self._lock:
            self._pending.append((future, value, error))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            if threading.get_ident() == self._loop_thread:
                self.loop.call_soon(self._drain)
            else:
                self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            with self._lock:
                self._pending.clear()
                self._scheduled = False

    def _drain(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._scheduled = False
        for future, value, error in batch:
            if future.done():
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
