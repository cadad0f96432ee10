"""The background writer of `ai_token_usage` rows, on both databases: order, batching, foreign
keys that vanished meanwhile, an outage, and draining on close."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from server.ai.usage_writer import UsageWriter
from server.context import Services
from server.store import ai_usage
from server.store.ai_usage import UsageRow
from server.store.db import Database
from server.store.models import Assistant
from server.store.users import UserRecord

QUICK_RETRY_SECS = 0.01


def _row(user_id: int, model: str, **fields: Any) -> dict[str, Any]:
    return ai_usage.usage_values(token_id=None, user_id=user_id, model=model, prompt_tokens=3,
                                 completion_tokens=2, **fields)


def _rows(services: Services) -> list[UsageRow]:
    with services.db.read() as session:
        return ai_usage.recent_usage(session)


def _assistant(services: Services, owner_id: int) -> int:
    with services.db.write() as session:
        assistant = Assistant(user_id=owner_id, name="Shop")
        session.add(assistant)
        session.flush()
        return assistant.id


class _Outage:
    """The store, except that its first `failures` write transactions fail to connect."""

    def __init__(self, db: Database, failures: int) -> None:
        self._db = db
        self.failures = failures

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        if self.failures > 0:
            self.failures -= 1
            raise OperationalError("BEGIN", {}, ConnectionError("the database is away"))
        with self._db.write() as session:
            yield session


def test_flush_commits_every_row_in_the_order_submitted(
    services: Services, make_user: Callable[..., UserRecord]
) -> None:
    owner = make_user()
    writer = UsageWriter(services.db)
    try:
        for n in range(30):
            writer.submit(_row(owner.id, f"model-{n}"))
        assert writer.flush()
        rows = _rows(services)
        assert [row.model_used for row in rows] == [f"model-{n}" for n in range(30)]
        assert {(row.user_id, row.total_tokens, row.success) for row in rows} == {
            (owner.id, 5, True)
        }
    finally:
        assert writer.close()


def test_a_row_naming_a_deleted_assistant_is_kept_without_it(
    services: Services, make_user: Callable[..., UserRecord]
) -> None:
    owner = make_user()
    kept = _assistant(services, owner.id)
    writer = UsageWriter(services.db)
    try:
        writer.submit(_row(owner.id, "before", assistant_id=kept))
        writer.submit(_row(owner.id, "orphan", assistant_id=kept + 1000))
        writer.submit(_row(owner.id, "after", assistant_id=kept))
        assert writer.flush()
    finally:
        assert writer.close()
    rows = {row.model_used: row for row in _rows(services)}
    assert set(rows) == {"before", "orphan", "after"}
    assert rows["orphan"].assistant_id is None and rows["orphan"].total_tokens == 5
    assert rows["before"].assistant_id == rows["after"].assistant_id == kept


def test_a_row_of_a_deleted_owner_is_dropped_and_the_others_are_written(
    services: Services, make_user: Callable[..., UserRecord]
) -> None:
    owner = make_user()
    writer = UsageWriter(services.db)
    try:
        writer.submit(_row(owner.id, "mine"))
        writer.submit(_row(owner.id + 1000, "gone"))
        writer.submit(_row(owner.id, "mine too"))
        assert writer.flush()
    finally:
        assert writer.close()
    assert [row.model_used for row in _rows(services)] == ["mine", "mine too"]


def test_rows_outlive_a_database_outage(
    services: Services, make_user: Callable[..., UserRecord]
) -> None:
    owner = make_user()
    outage = _Outage(services.db, failures=3)
    writer = UsageWriter(outage, retry_secs=QUICK_RETRY_SECS)  # type: ignore[arg-type]
    try:
        writer.submit(_row(owner.id, "first"))
        writer.submit(_row(owner.id, "second"))
        assert writer.flush()
    finally:
        assert writer.close()
    assert outage.failures == 0
    assert [row.model_used for row in _rows(services)] == ["first", "second"]


def test_close_drains_the_queue_and_a_later_row_starts_the_writer_again(
    services: Services, make_user: Callable[..., UserRecord]
) -> None:
    owner = make_user()
    writer = UsageWriter(services.db)
    writer.submit(_row(owner.id, "one"))
    assert writer.close()
    assert not writer.running
    assert [row.model_used for row in _rows(services)] == ["one"]
    writer.submit(_row(owner.id, "two"))
    assert writer.running
    assert writer.close()
    assert [row.model_used for row in _rows(services)] == ["one", "two"]
