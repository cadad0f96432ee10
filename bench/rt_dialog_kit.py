"""The real DialogActor as an actor kit for bench/rt_actors.py (`--actor dialog`).

Seeds one owner and `count` dialogs into a fresh, migrated SQLite file, builds the dialog
dependencies the way the server does (`server.live.LiveSystem`, in-process bus) and starts
`DialogActor`s for those dialogs. The message is `CheckTimers(now)`: every actor loads its
dialog from the store when it starts (the real activation cost) and answers it without
writing (no dialog is in `requested`). A subclass counts handled messages for the flood.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from bench.rt_actors import ActorKit
from bench.rt_common import Unavailable

SEED_BATCH = 10_000


def dialog_kit(count: int, loop: asyncio.AbstractEventLoop) -> ActorKit:
    try:
        from server.actors.bus import MemoryEventBus
        from server.actors.dialog import CheckTimers, DialogActor
        from server.live import LiveSystem
    except ImportError as exc:
        raise Unavailable(f"the dialog actor is not there yet: {exc}") from exc
    from server.config import Settings
    from server.context import build_services
    from server.store import users as user_store
    from server.store.models import Dialog
    from server.store.types import utcnow

    folder = Path(tempfile.mkdtemp(prefix="rt-dialogs-"))
    settings = Settings(database_url=f"sqlite:///{folder / 'bench.db'}", data_dir=folder,
                        secret_key="bench-secret-" + "k" * 40,
                        site_secret="bench-site-" + "s" * 40, max_live_dialog_actors=count)
    services = build_services(settings)
    services.db.migrate()
    with services.db.write() as session:
        owner = user_store.create_user(session, email="owner@bench.example",
                                       hashed_password="no-login", is_email_confirmed=True)
        for first in range(0, count, SEED_BATCH):
            rows = [{"user_id": owner.id, "channel": "web", "guest_id": f"guest-{n}"}
                    for n in range(first, min(count, first + SEED_BATCH))]
            session.execute(insert(Dialog), rows)
    with services.db.read() as session:
        keys: list[Hashable] = list(session.execute(
            select(Dialog.id).order_by(Dialog.id)).scalars())
    live = LiveSystem(services, loop, MemoryEventBus(loop))
    counter = itertools.count()
    handled = [0]

    class CountedDialogActor(DialogActor):
        def on_receive(self, message: Any) -> Any:
            try:
                return super().on_receive(message)
            finally:
                handled[0] = next(counter) + 1

    def close() -> None:
        live.dialogs.stop_all()
        services.db.dispose()
        shutil.rmtree(folder, ignore_errors=True)

    return ActorKit(
        keys=keys,
        factory=lambda key: CountedDialogActor.start(int(key), live.deps),  # type: ignore[arg-type]
        message=lambda _key: CheckTimers(utcnow()),
        handled=lambda: handled[0],
        close=close,
    )
