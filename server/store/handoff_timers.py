"""Which dialogs the handoff sweeper must look at (spec §8.4).

Only the dialogs still waiting since before the earliest deadline (the shortest of the SLAs and
the request TTL) are handed to their actors, which decide with their own state whether a
deadline really passed; the index on (handoff_status, handoff_requested_at) serves the query.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.store.models import Dialog

MAX_PER_SWEEP = 5_000


def requests_waiting_since(session: Session, before: dt.datetime) -> list[int]:
    return list(session.execute(
        select(Dialog.id)
        .where(Dialog.handoff_status == "requested", Dialog.handoff_requested_at <= before)
        .order_by(Dialog.handoff_requested_at)
        .limit(MAX_PER_SWEEP)
    ).scalars())
