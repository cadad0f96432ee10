"""The store writer: group-commits the writes of every dialog (DESIGN.md §4).

A commit per message is ≈ 2,300/s on one PostgreSQL connection; one transaction with many rows
is 20× cheaper per row. So dialog actors do not write themselves: they `submit` a `DialogWrite`
with two callbacks, and this writer commits whatever has arrived since its last commit in one
transaction, then runs each `on_committed` (which publishes the events and answers the caller).
Under light load a batch is one write and nothing waits; under heavy load batches grow by
themselves while the previous commit runs. No timer adds latency.

Order: requests are committed and their callbacks run in submission order, so a dialog's events
are published in `seq` order. If a batch fails, each of its writes is retried alone, so one bad
write cannot fail its neighbours; only a write that fails alone gets `on_failed`.

It is a thread with its own queue rather than a pykka actor because it must take everything
waiting in its inbox at once, which pykka's one-message-at-a-time handler cannot.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable

from server.store.db import Database
from server.store.dialog_writes import DialogWrite, apply_writes
from server.store.dialogs import MessageRecord

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 500
_STOP = object()

Committed = Callable[[tuple[MessageRecord, ...]], None]
Failed = Callable[[BaseException], None]


class WriterStopped(RuntimeError):
    """The writer has been stopped; the write was not made."""


@dataclasses.dataclass(frozen=True, slots=True)
class WriteRequest:
    write: DialogWrite
    on_committed: Committed
    on_failed: Failed


class StoreWriter:
    def __init__(self, db: Database, *, max_batch: int = DEFAULT_MAX_BATCH,
                 name: str = "store-writer") -> None:
        self._db = db
        self._max_batch = max_batch
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopping = False
        self._stop_lock = threading.Lock()
        # Writes submitted and not yet settled, per dialog: a dialog's next actor waits for
        # them before it loads its state (its predecessor may have been stopped while they
        # were on their way, and would otherwise hand out a seq twice). The lock guards only
        # this dict, for O(1) per submit and per dialog of a batch: a lock held longer on this
        # path (every message passes here) made the actor threads queue up behind the writer.
        self._pending: dict[int, int] = {}
        self._pending_lock = threading.Lock()
        self._settled = threading.Condition(threading.Lock())
        self._waiters = 0
        self.batches = 0
        self.writes = 0
        self.largest_batch = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, write: DialogWrite, on_committed: Committed, on_failed: Failed) -> None:
        """Thread-safe; never blocks. After `stop` the write fails (at once, or when `stop`
        drains what arrived while it was stopping)."""
        if self._stopping:
            _call(on_failed, WriterStopped("the store writer is stopped"))
            return
        key = write.dialog_id
        with self._pending_lock:
            self._pending[key] = self._pending.get(key, 0) + 1
        self._inbox.put(WriteRequest(write, on_committed, on_failed))

    def wait_settled(self, dialog_id: int, timeout_secs: float) -> bool:
        """Block until no write of this dialog is on its way (False on timeout). Called by a
        dialog actor's `on_start`, never on the event loop."""
        with self._settled:
            self._waiters += 1
            try:
                return self._settled.wait_for(lambda: dialog_id not in self._pending,
                                              timeout_secs)
            finally:
                self._waiters -= 1

    def _settle(self, batch: list[WriteRequest]) -> None:
        done = collections.Counter(request.write.dialog_id for request in batch)
        with self._pending_lock:
            for key, count in done.items():
                left = self._pending.get(key, 0) - count
                if left > 0:
                    self._pending[key] = left
                else:
                    self._pending.pop(key, None)
        if self._waiters:
            with self._settled:
                self._settled.notify_all()

    def stop(self, timeout_secs: float = 10.0) -> None:
        """Commit what is queued, then end the thread; a write that raced the stop fails."""
        with self._stop_lock:
            if self._stopping:
                return
            self._stopping = True
            self._inbox.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout_secs)
        while True:
            try:
                late = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(late, WriteRequest):
                _call(late.on_failed, WriterStopped("the store writer is stopped"))
                self._settle([late])

    # --- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        stop_seen = False
        while not stop_seen:
            first = self._inbox.get()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop_seen = True
                    break
                batch.append(item)
            self._commit(batch)  # type: ignore[arg-type]

    def _commit(self, batch: list[WriteRequest]) -> None:
        try:
            with self._db.write() as session:
                results = apply_writes(session, [request.write for request in batch])
        except Exception as exc:
            if len(batch) == 1:
                log.exception("store writer: a write failed",
                              extra={"dialog_id": batch[0].write.dialog_id})
                _call(batch[0].on_failed, exc)
                self._settle(batch)
                return
            log.warning("store writer: a batch of %d failed; retrying one by one", len(batch))
            for request in batch:
                self._commit([request])
            return
        self.batches += 1
        self.writes += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        for request, records in zip(batch, results, strict=True):
            _call(request.on_committed, records)
        self._settle(batch)


def _call(callback: Callable[..., None], argument: object) -> None:
    try:
        callback(argument)
    except Exception:
        log.exception("store writer: a callback failed")
