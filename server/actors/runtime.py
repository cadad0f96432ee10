"""The actor directory: get-or-start by key, passivation, an LRU cap, supervision (DESIGN.md §4).

One `Directory` per actor kind, each with its own factory, idle timeout, cap, dict and lock: the
design's `get_or_start(kind, key)` is `directories[kind].get_or_start(key)`.

Contract for the actors: `factory(key)` starts one (e.g. `DialogActor.start(...)`); it loads its
state from the store in `on_start` and persists each change while handling a message, so it can
be stopped whenever it is idle (a successor may start while its `on_stop` runs).

Messages sent through the directory carry a `ReplyFuture` receipt. It counts messages in flight
(only idle actors are passivated or evicted) and, when the actor stopped before handling the
message (ActorDeadError), re-delivers it to a fresh actor, at most `max_redeliveries` times: a
message meets the old actor or a new one, never none (possibly after newer messages). A `tell`
whose handler raises crashes the actor as plain pykka would (`on_failure` runs; logged with the
key; the next message restarts it from the store; messages queued behind it are re-delivered).
An `ask` whose handler raises gets the exception back and the actor lives on.

Thread-safe. `tell`/`ask`/`get_or_start` never wait on an actor; `stop_all` waits (bounded).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import gc
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from itertools import takewhile
from typing import Any

import pykka
from pykka import ActorDeadError, ActorRef, ActorRegistry, Timeout
from pykka._envelope import Envelope  # pykka-private, see bridge.py
from pykka.messages import _ActorStop

from server.actors.bridge import CompletionCallback, ReplyFuture, await_reply

logger = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT_SECS = 300.0
DEFAULT_MAX_LIVE = 2_000
DEFAULT_SWEEP_INTERVAL_SECS = 5.0
DEFAULT_MAX_REDELIVERIES = 10
DEFAULT_STOP_TIMEOUT_SECS = 10.0

ActorFactory = Callable[[Hashable], ActorRef[Any]]
ReplySlot = concurrent.futures.Future[Any] | None  # where an ask's answer goes; None for a tell


class ThreadActor(pykka.ThreadingActor):
    """Base of our actors: a pykka thread actor whose inbox is a `queue.SimpleQueue`.

    pykka only puts, gets and checks `empty()` on an inbox; the C-implemented SimpleQueue does
    that without the lock and two conditions of `queue.Queue`, and every message of every
    dialog passes through one.
    """

    @staticmethod
    def _create_actor_inbox() -> Any:
        return queue.SimpleQueue()


class DirectoryClosed(RuntimeError):
    """`stop_all` ran: the directory starts no more actors."""


@dataclass(slots=True)
class _Entry:
    ref: ActorRef[Any]
    last_used: float  # time.monotonic()
    # Messages in flight = sent - done. `sent` changes under the directory's lock; `done` only
    # in the actor's own thread (when it finishes a message), so completing a message takes no
    # shared lock: that lock was the hottest spot of the message path under load.
    sent: int = 0
    done: int = 0

    @property
    def in_flight(self) -> int:
        return self.sent - self.done


class Directory:
    def __init__(
        self,
        factory: ActorFactory,
        *,
        name: str = "actors",
        idle_timeout_secs: float = DEFAULT_IDLE_TIMEOUT_SECS,
        max_live: int = DEFAULT_MAX_LIVE,
        sweep_interval_secs: float = DEFAULT_SWEEP_INTERVAL_SECS,
        max_redeliveries: int = DEFAULT_MAX_REDELIVERIES,
    ) -> None:
        if max_live < 1:
            raise ValueError("max_live must be at least 1")
        self._factory = factory
        self.name = name
        self.idle_timeout_secs = idle_timeout_secs
        self.max_live = max_live
        self.max_redeliveries = max_redeliveries
        # Re-entrant: a receipt completing in this thread may re-deliver while we hold it.
        self._lock = threading.RLock()
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()  # oldest use first
        self._closed = False
        self._sweeper_stop = threading.Event()
        self._sweeper = threading.Thread(
            target=self._sweep_forever, args=(sweep_interval_secs,), name=f"{name}-sweeper"
        )
        self._sweeper.daemon = True  # stop_all ends it; never keeps the process alive
        self._sweeper.start()

    def get_or_start(self, key: Hashable) -> ActorRef[Any]:
        """The live actor for `key`, started by the factory if there is none (or it died)."""
        with self._lock:
            entry, dead = self._live_entry(key)
        self._drain_dead(dead)
        return entry.ref

    def tell(self, key: Hashable, message: Any) -> None:
        """Send without waiting; re-delivered to a fresh actor if the current one is stopping."""
        self._deliver(key, message, None, 0)

    async def ask(self, key: Hashable, message: Any, timeout_secs: float) -> Any:
        """Ask from the event loop; re-raises the handler's exception; AskTimeout on timeout."""
        cf: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._deliver(key, message, cf, 0)
        return await await_reply(cf, timeout_secs, f"{self.name}[{key!r}]")

    def live_count(self) -> int:
        with self._lock:
            return len(self._entries)

    def sweep(self) -> None:
        """Passivate actors idle beyond the timeout (the sweeper's job); O(expired), as the
        dict is kept in order of last use."""
        deadline = time.monotonic() - self.idle_timeout_secs
        with self._lock:
            unused = takewhile(lambda item: item[1].last_used <= deadline, self._entries.items())
            expired = [(key, entry.ref) for key, entry in unused
                       if entry.in_flight == 0 or not entry.ref.is_alive()]
            for key, _ in expired:
                del self._entries[key]
        for key, ref in expired:
            if ref.is_alive():
                logger.debug("passivating idle %s actor %r", self.name, key)
                ref.stop(block=False)
            else:
                self._drain_dead([ref])

    def stop_all(self, timeout_secs: float = DEFAULT_STOP_TIMEOUT_SECS) -> None:
        """Stop every actor in parallel, waiting at most `timeout_secs`. Not on the event loop."""
        self._sweeper_stop.set()
        with self._lock:
            self._closed = True
            refs = [entry.ref for entry in self._entries.values()]
            self._entries.clear()
        stopping = [ref.stop(block=False) for ref in refs]
        deadline = time.monotonic() + timeout_secs
        for ref, future in zip(refs, stopping, strict=True):
            try:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
            except Timeout:
                logger.warning("%s actor %s did not stop within %s s", self.name, ref, timeout_secs)
        if self._sweeper is not threading.current_thread():
            self._sweeper.join(timeout=max(0.0, deadline - time.monotonic()))

    def _deliver(self, key: Hashable, message: Any, cf: ReplySlot, attempt: int) -> None:
        if attempt > self.max_redeliveries:
            logger.error("%s[%r]: %r undelivered after %d tries", self.name, key, message, attempt)
            _settle(cf, None, ActorDeadError(f"{self.name}[{key!r}] kept dying"))
            return
        with self._lock:
            if self._closed:
                if attempt == 0:
                    raise DirectoryClosed(f"{self.name} directory is stopped")
                logger.warning("%s[%r]: %r dropped at shutdown", self.name, key, message)
                _settle(cf, None, DirectoryClosed(f"{self.name} directory is stopped"))
                return
            entry, dead = self._live_entry(key)
            ref = entry.ref
            entry.sent += 1
            receipt = ReplyFuture(self._receipt_handler(key, message, cf, attempt, entry))
            ref.actor_inbox.put(Envelope(message, reply_to=receipt))
            if not ref.is_alive():
                # Stopped by someone else between our check and our put: pykka's teardown may
                # already have drained the inbox, so pull back what is left ourselves.
                dead.append(ref)
                if self._entries.get(key) is entry:
                    del self._entries[key]
        self._drain_dead(dead)

    def _receipt_handler(
        self, key: Hashable, message: Any, cf: ReplySlot, attempt: int, entry: _Entry
    ) -> CompletionCallback:
        ref = entry.ref

        def on_complete(value: Any, error: BaseException | None) -> None:
            entry.done += 1
            if isinstance(error, ActorDeadError):
                self._deliver(key, message, cf, attempt + 1)
            elif error is not None and cf is None:
                self._crash(key, ref, error)
            else:
                _settle(cf, value, error)

        return on_complete

    def _crash(self, key: Hashable, ref: ActorRef[Any], error: BaseException) -> None:
        """Runs in the actor's thread: stop it the way pykka stops an actor whose tell raised."""
        logger.error(
            "%s actor %r crashed; it restarts on its next message", self.name, key, exc_info=error
        )
        with self._lock:  # under the lock, so no directory put lands after pykka's teardown
            entry = self._entries.get(key)
            if entry is not None and entry.ref is ref:
                del self._entries[key]
            ActorRegistry.unregister(ref)
            ref.actor_stopped.set()  # its loop exits, answering queued messages ActorDeadError
        actor = ref._actor_weakref()
        if actor is not None:
            try:
                actor.on_failure(type(error), error, error.__traceback__)
            except Exception:
                logger.exception("%s actor %r: on_failure raised", self.name, key)

    def _live_entry(self, key: Hashable) -> tuple[_Entry, list[ActorRef[Any]]]:
        if self._closed:
            raise DirectoryClosed(f"{self.name} directory is stopped")
        dead: list[ActorRef[Any]] = []
        entry = self._entries.get(key)
        if entry is not None and not entry.ref.is_alive():
            logger.warning("%s actor %r found stopped; starting a fresh one", self.name, key)
            dead.append(entry.ref)
            del self._entries[key]
            entry = None
        if entry is None:
            self._make_room()
            entry = _Entry(ref=self._factory(key), last_used=time.monotonic())
            self._entries[key] = entry
        else:
            entry.last_used = time.monotonic()
            self._entries.move_to_end(key)
        return entry, dead

    def _make_room(self) -> None:
        """Passivate least-recently-used idle actors until one more fits under `max_live`
        (busy ones are skipped: the cap is exceeded only while more than that are all busy)."""
        excess = len(self._entries) + 1 - self.max_live
        if excess <= 0:
            return
        victims = [key for key, entry in self._entries.items() if entry.in_flight == 0][:excess]
        for key in victims:
            ref = self._entries.pop(key).ref
            logger.debug("evicting least-recently-used %s actor %r", self.name, key)
            if ref.is_alive():
                ref.stop(block=False)

    def _drain_dead(self, refs: list[ActorRef[Any]]) -> None:
        """Answer what is left in dead actors' inboxes as pykka's teardown would."""
        for ref in refs:
            while True:
                try:
                    envelope = ref.actor_inbox.get_nowait()  # type: ignore[attr-defined]
                except queue.Empty:
                    break
                if envelope.reply_to is None:
                    continue
                if isinstance(envelope.message, _ActorStop):
                    envelope.reply_to.set(None)
                else:
                    dead_error = ActorDeadError(f"{ref} stopped before handling the message")
                    envelope.reply_to.set_exception((ActorDeadError, dead_error, None))

    def _sweep_forever(self, interval_secs: float) -> None:
        while not self._sweeper_stop.wait(interval_secs):
            try:
                self.sweep()
            except Exception:
                logger.exception("%s sweeper failed", self.name)


def _settle(cf: ReplySlot, value: Any, error: BaseException | None) -> None:
    if cf is None or cf.done():
        return
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # the asker timed out
        if error is not None:
            cf.set_exception(error)
        else:
            cf.set_result(value)


# Process start-up helpers (DESIGN.md §4, "What we measured of pykka").
PR_FUTEX_HASH = 78
PR_FUTEX_HASH_SET_SLOTS = 1


def opt_out_of_futex_hash() -> bool:
    """Use the global futex hash, not the 16-slot per-process one (Linux ≥ 6.17); True if done.

    Call at start-up before any thread exists; older kernels refuse it, harmlessly.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        result = libc.prctl(PR_FUTEX_HASH, PR_FUTEX_HASH_SET_SLOTS, 0, 0, 0)
    except (OSError, AttributeError):
        return False
    if result != 0:
        logger.debug("prctl(PR_FUTEX_HASH) not applied (errno %d)", ctypes.get_errno())
        return False
    return True


# Young-generation size and how often older generations are collected. CPython's default
# (700, 10, 10) collects gen 0 every 700 allocations; under live-chat load that promoted the
# objects of messages still in flight (events, futures) into the old generations, whose full
# collections then scanned every actor's and every socket's objects: 300+ ms pauses every few
# seconds (measured: steady p99 86 ms, saturation 3,100 msg/s). With a young generation of
# 20,000 nearly all of them die before a collection: p99 6 ms, 4,900 msg/s (bench/realtime.py).
GC_THRESHOLDS = (20_000, 50, 100)


def freeze_gc() -> None:
    """After warm-up: hide everything alive now from the collector (cheaper gen-2 runs) and
    size the generations for a server that allocates a lot of short-lived objects."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
