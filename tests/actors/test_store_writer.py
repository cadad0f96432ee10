"""The store writer on SQLite and PostgreSQL: group commit, callbacks in submission order, a bad
write failing alone, and a clean stop.

The writer takes everything waiting in its inbox as one batch. To make batches deterministic a
test first submits a write whose extra statement blocks inside the transaction until the test
lets it go: whatever is submitted meanwhile is waiting in the inbox when the writer comes back.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from live_kit import WAIT_SECS, audits, new_dialog, stored
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.actors.store_writer import StoreWriter, WriterStopped
from server.context import Services
from server.store.dialog_writes import DialogWrite, NewAudit, NewMessage
from server.store.dialogs import MessageRecord
from server.store.models import Dialog
from server.store.types import utcnow
from server.store.users import UserRecord


class Outcomes:
    """What the writer reported, in the order it reported it (from its own thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, Any]] = []  # (tag, "committed" | "failed", payload)
        self.done = threading.Condition(self.lock)

    def callbacks(self, tag: str) -> tuple[Callable[[tuple[MessageRecord, ...]], None],
                                          Callable[[BaseException], None]]:
        def committed(records: tuple[MessageRecord, ...]) -> None:
            with self.lock:
                self.log.append((tag, "committed", records))
                self.done.notify_all()

        def failed(error: BaseException) -> None:
            with self.lock:
                self.log.append((tag, "failed", error))
                self.done.notify_all()

        return committed, failed

    def wait_for(self, count: int) -> list[tuple[str, str, Any]]:
        with self.lock:
            assert self.done.wait_for(lambda: len(self.log) >= count, WAIT_SECS), self.log
            return list(self.log)


class Gate:
    """An extra statement that blocks the writer inside its transaction until `open()`."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._open = threading.Event()

    def __call__(self, _session: Session) -> None:
        self.entered.set()
        assert self._open.wait(WAIT_SECS), "the test never opened the gate"

    def open(self) -> None:
        self._open.set()


def message(seq: int, text: str | None = None) -> NewMessage:
    return NewMessage(seq, "user", text or f"message {seq}", utcnow())


def write(dialog_id: int, *seqs: int) -> DialogWrite:
    return DialogWrite(dialog_id, tuple(message(seq) for seq in seqs))


@pytest.fixture
def writer(services: Services) -> Iterator[StoreWriter]:
    made = StoreWriter(services.db, name="test-writer")
    made.start()
    yield made
    made.stop(timeout_secs=WAIT_SECS)


@pytest.fixture
def dialogs(services: Services, user: UserRecord) -> tuple[int, int]:
    return new_dialog(services.db, user.id), new_dialog(services.db, user.id)


def block_writer(writer: StoreWriter, dialog_id: int, outcomes: Outcomes) -> Gate:
    gate = Gate()
    writer.submit(DialogWrite(dialog_id, extras=(gate,)), *outcomes.callbacks("gate"))
    assert gate.entered.wait(WAIT_SECS)
    return gate


def test_writes_submitted_together_are_committed_in_one_transaction(
    services: Services, writer: StoreWriter, dialogs: tuple[int, int]
) -> None:
    first, second = dialogs
    outcomes = Outcomes()
    gate = block_writer(writer, first, outcomes)
    for seq in range(1, 26):  # 50 writes, two dialogs interleaved
        writer.submit(write(first, seq), *outcomes.callbacks(f"a{seq}"))
        writer.submit(write(second, seq), *outcomes.callbacks(f"b{seq}"))
    gate.open()
    outcomes.wait_for(51)

    assert writer.writes == 51
    assert writer.batches == 2  # the gate alone, then the 50 that waited behind it
    assert writer.largest_batch == 50
    assert [seq for seq, *_ in stored(services.db, first)] == list(range(1, 26))
    assert [seq for seq, *_ in stored(services.db, second)] == list(range(1, 26))
    with services.db.read() as session:
        counters = dict(session.execute(select(Dialog.id, Dialog.last_seq)).all())
    assert counters == {first: 25, second: 25}


def test_callbacks_run_in_submission_order_with_their_own_records(
    services: Services, writer: StoreWriter, dialogs: tuple[int, int]
) -> None:
    first, second = dialogs
    outcomes = Outcomes()
    gate = block_writer(writer, first, outcomes)
    expected = []
    for seq in range(1, 11):
        for dialog_id, tag in ((first, "a"), (second, "b")):
            expected.append(f"{tag}{seq}")
            writer.submit(DialogWrite(dialog_id, (message(seq, f"{tag}{seq}"),)),
                          *outcomes.callbacks(f"{tag}{seq}"))
    gate.open()
    log = outcomes.wait_for(21)

    assert [tag for tag, _, _ in log] == ["gate", *expected]
    assert all(kind == "committed" for _, kind, _ in log)
    for tag, _, records in log[1:]:
        (record,) = records
        assert record.text == tag and record.seq == int(tag[1:])
        assert record.dialog_id == (first if tag.startswith("a") else second)
    ids = [records[0].id for _, _, records in log[1:]]
    assert len(set(ids)) == len(ids)


def test_a_bad_write_fails_alone_and_its_neighbours_commit(
    services: Services, writer: StoreWriter, dialogs: tuple[int, int]
) -> None:
    first, second = dialogs
    outcomes = Outcomes()
    writer.submit(write(first, 1), *outcomes.callbacks("seed"))
    outcomes.wait_for(1)

    gate = block_writer(writer, first, outcomes)
    writer.submit(write(first, 2), *outcomes.callbacks("before"))
    writer.submit(write(first, 1), *outcomes.callbacks("duplicate"))  # unique (dialog_id, seq)
    writer.submit(write(second, 1), *outcomes.callbacks("other dialog"))
    writer.submit(write(first, 3), *outcomes.callbacks("after"))
    gate.open()
    log = outcomes.wait_for(6)

    assert [(tag, kind) for tag, kind, _ in log] == [
        ("seed", "committed"), ("gate", "committed"), ("before", "committed"),
        ("duplicate", "failed"), ("other dialog", "committed"), ("after", "committed"),
    ]
    assert isinstance(log[3][2], IntegrityError)
    assert [(seq, text) for seq, _, text, _ in stored(services.db, first)] == [
        (1, "message 1"), (2, "message 2"), (3, "message 3")]
    assert [seq for seq, *_ in stored(services.db, second)] == [1]


def test_stop_commits_what_was_queued_and_later_submits_fail_at_once(
    services: Services, dialogs: tuple[int, int]
) -> None:
    first, _ = dialogs
    writer = StoreWriter(services.db, name="stopping-writer")
    writer.start()
    outcomes = Outcomes()
    gate = block_writer(writer, first, outcomes)
    for seq in range(1, 21):
        writer.submit(write(first, seq), *outcomes.callbacks(f"q{seq}"))
    stopper = threading.Thread(target=writer.stop, kwargs={"timeout_secs": WAIT_SECS})
    stopper.start()  # queues the stop behind the 20 writes while the writer is still blocked
    gate.open()
    stopper.join(WAIT_SECS)
    assert not stopper.is_alive()

    assert [(tag, kind) for tag, kind, _ in outcomes.wait_for(21)] == [
        ("gate", "committed"), *((f"q{seq}", "committed") for seq in range(1, 21))]
    assert [seq for seq, *_ in stored(services.db, first)] == list(range(1, 21))

    late: list[BaseException] = []
    writer.submit(write(first, 21), lambda _records: late.append(AssertionError("committed")),
                  late.append)
    assert len(late) == 1 and isinstance(late[0], WriterStopped)  # at once, in this thread
    assert [seq for seq, *_ in stored(services.db, first)] == list(range(1, 21))


def test_dialog_values_audits_and_extras_land_in_the_same_transaction(
    services: Services, writer: StoreWriter, dialogs: tuple[int, int]
) -> None:
    first, _ = dialogs
    outcomes = Outcomes()
    at = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    seen_in_transaction: list[int] = []

    def extra(session: Session) -> None:  # sees the rows inserted before it in the same write
        seen_in_transaction.append(len(session.execute(
            select(Dialog.id).where(Dialog.id == first, Dialog.handoff_status == "requested")
        ).all()))

    writer.submit(DialogWrite(first, (message(1),), {"handoff_status": "requested",
                                                     "handoff_requested_at": at},
                              (NewAudit("none", "requested", "manual", None, "r-1", 1),),
                              (extra,)), *outcomes.callbacks("w"))
    assert outcomes.wait_for(1)[0][1] == "committed"
    assert seen_in_transaction == [1]
    with services.db.read() as session:
        row = session.get(Dialog, first)
        assert row is not None
        assert (row.handoff_status, row.last_seq) == ("requested", 1)
    assert audits(services.db, first) == [("none", "requested", "manual")]
