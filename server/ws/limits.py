"""How many WebSocket connections one process holds: per dialog and in total (spec §6.8).

A door takes a slot after `accept()` and before subscribing; when there is none it closes the
socket with 1013 (`CloseCode.TRY_AGAIN_LATER`, the client retries with backoff):

    try:
        async with limits.slot(dialog_id):
            ...  # subscribe and serve
    except LimitExceeded as exc:
        await websocket.close(CloseCode.TRY_AGAIN_LATER, exc.reason)

The operator feed passes `dialog_id=None`: it counts toward the process limit only. Counters
live on the event loop (no locks).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

MAX_CONNECTIONS_PER_DIALOG: Final = 50
MAX_CONNECTIONS_PER_PROCESS: Final = 1000


class LimitExceeded(Exception):
    """No connection slot left; `reason` fits a close frame."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectionLimits:
    def __init__(
        self,
        per_dialog: int = MAX_CONNECTIONS_PER_DIALOG,
        per_process: int = MAX_CONNECTIONS_PER_PROCESS,
    ) -> None:
        if per_dialog < 1 or per_process < 1:
            raise ValueError("connection limits must be at least 1")
        self.per_dialog = per_dialog
        self.per_process = per_process
        self.total = 0
        self._per_dialog: dict[int, int] = {}

    def count(self, dialog_id: int) -> int:
        return self._per_dialog.get(dialog_id, 0)

    def acquire(self, dialog_id: int | None) -> None:
        """Take a slot or raise `LimitExceeded`; every success needs one `release`."""
        if self.total >= self.per_process:
            raise LimitExceeded("too many connections")
        if dialog_id is not None:
            held = self._per_dialog.get(dialog_id, 0)
            if held >= self.per_dialog:
                raise LimitExceeded("too many connections to this dialog")
            self._per_dialog[dialog_id] = held + 1
        self.total += 1

    def release(self, dialog_id: int | None) -> None:
        if self.total <= 0:
            raise RuntimeError("release() without acquire()")
        self.total -= 1
        if dialog_id is None:
            return
        held = self._per_dialog.get(dialog_id, 0)
        if held <= 1:
            # Drop the key so the map stays as small as the set of connected dialogs.
            self._per_dialog.pop(dialog_id, None)
        else:
            self._per_dialog[dialog_id] = held - 1

    @contextlib.asynccontextmanager
    async def slot(self, dialog_id: int | None) -> AsyncIterator[None]:
        """A slot for the life of the block; raises `LimitExceeded` before entering it."""
        self.acquire(dialog_id)
        try:
            yield
        finally:
            self.release(dialog_id)
