"""Usage rows written off the answer's path, in batches, by one background thread.

An answer is done when its last chunk has arrived; the `ai_token_usage` row of the attempt is
bookkeeping nobody waits for. So `submit()` only queues the row (no thread hop, no
transaction: it is called on the event loop), and a daemon thread commits whatever has queued
in one transaction (while it writes, the next rows queue up: batches grow with the load).

Rows are never dropped for a passing failure: a batch that cannot be written stays queued and
is retried every RETRY_SECS. A row the database refuses for good (a foreign key to a user,
assistant or key deleted meanwhile) is written without the vanished reference, as the
schema's ON DELETE rules would have left it; only a row of a deleted owner is given up (that
owner's rows are deleted with it). `flush()` waits until every row queued so far is committed
(tests, the admin's reports); `close()` flushes and stops the thread (the app's shutdown, via
`LlmGateway.aclose()`); a writer still open at interpreter exit is flushed then.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError

from server.store import ai_usage
from server.store.db import Database

log = logging.getLogger(__name__)

MAX_BATCH_ROWS = 500
RETRY_SECS = 0.5
CLOSE_TIMEOUT_SECS = 10.0
# A refused row is retried without these references, in turn (SET NULL on delete).
_NULLABLE_REFERENCES = ("assistant_id", "token_id")

Row = Mapping[str, Any]

_open_writers: weakref.WeakSet[UsageWriter] = weakref.WeakSet()


class UsageWriter:
    def __init__(self, db: Database, *, retry_secs: float = RETRY_SECS) -> None:
        self._db = db
        self._retry_secs = retry_secs
        self._changed = threading.Condition()
        self._queue: list[Row] = []
        self._queued = 0  # rows ever submitted
        self._settled = 0  # rows committed (or given up), always a prefix of the submitted
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(self, row: Row) -> None:
        """Queue one row built by `ai_usage.usage_values`; returns at once."""
        with self._changed:
            self._queue.append(row)
            self._queued += 1
            if self._thread is None:
                self._start()
            self._changed.notify_all()

    def flush(self, timeout_secs: float = CLOSE_TIMEOUT_SECS) -> bool:
        """Block until every row submitted before this call is committed; False on timeout."""
        with self._changed:
            target = self._queued
            return self._changed.wait_for(lambda: self._settled >= target, timeout_secs)

    @property
    def running(self) -> bool:
        return self._thread is not None

    def close(self, timeout_secs: float = CLOSE_TIMEOUT_SECS) -> bool:
        """Flush and stop the thread (a later `submit` starts a new one); False on timeout."""
        with self._changed:
            thread = self._thread
            if thread is None:
                return True
            self._stopping = True
            self._changed.notify_all()
        thread.join(timeout_secs)
        if thread.is_alive():
            log.error("usage rows still unwritten at close", extra={"rows": len(self._queue)})
            return False
        return True

    def _start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ai-usage-writer", daemon=True)
        self._thread.start()
        _open_writers.add(self)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._queue) or self._stopping)
                if not self._queue:  # stopping, and everything is written
                    self._thread = None
                    _open_writers.discard(self)
                    return
                batch = self._queue[:MAX_BATCH_ROWS]
            settled = self._write(batch)
            if settled:
                with self._changed:
                    del self._queue[:settled]
                    self._settled += settled
                    self._changed.notify_all()
            if settled < len(batch):
                # The rest stays queued; try again after a pause (close() stops waiting after
                # its timeout, the thread keeps trying).
                time.sleep(self._retry_secs)

    def _write(self, batch: list[Row]) -> int:
        """Write a batch; how many rows from its front are settled (written or given up)."""
        try:
            with self._db.write() as session:
                ai_usage.add_usage_rows(session, batch)
            return len(batch)
        except IntegrityError:
            return self._write_one_by_one(batch)
        except Exception:  # the database is away or busy: keep the rows, retry
            log.warning("usage rows not written yet; retrying", exc_info=True,
                        extra={"rows": len(batch)})
            return 0

    def _write_one_by_one(self, batch: list[Row]) -> int:
        for settled, row in enumerate(batch):
            if not self._write_refused(row):
                return settled
        return len(batch)

    def _write_refused(self, row: Row) -> bool:
        """One row of a refused batch: as is, else without vanished references; True when it
        is settled (written or given up), False to retry it later."""
        attempt = dict(row)
        for stripped in (None, *_NULLABLE_REFERENCES):
            if stripped is not None:
                attempt[stripped] = None
            try:
                with self._db.write() as session:
                    ai_usage.add_usage_rows(session, [attempt])
                return True
            except IntegrityError:
                continue
            except Exception:
                log.warning("usage row not written yet; retrying", exc_info=True)
                return False
        # Only the owner's reference is left: a deleted owner's rows are deleted with it.
        log.warning("usage row dropped: the database refuses it",
                    extra={"user_id": row.get("user_id"), "model": row.get("model_used")})
        return True


@atexit.register
def _flush_open_writers() -> None:
    for writer in list(_open_writers):
        writer.close()
