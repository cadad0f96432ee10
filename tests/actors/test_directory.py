from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable

import pytest
from counter_actor import Add, Explode, FakeWorld, GetCount, WaitFor, wait_until

from server.actors.runtime import Directory, DirectoryClosed, freeze_gc, opt_out_of_futex_hash

ASK_LIMIT_SECS = 5.0
MakeDirectory = Callable[..., Directory]


def test_get_or_start_returns_the_same_ref_for_the_same_key(make_directory: MakeDirectory) -> None:
    directory = make_directory()
    first = directory.get_or_start("a")
    assert directory.get_or_start("a") is first
    assert directory.get_or_start("b") is not first
    assert directory.live_count() == 2


async def test_ask_through_the_directory_returns_the_reply(make_directory: MakeDirectory) -> None:
    directory = make_directory()
    directory.tell("a", Add(2))
    assert await directory.ask("a", Add(3), ASK_LIMIT_SECS) == 5


async def test_ask_whose_handler_raises_gets_the_error_and_the_actor_lives(
    make_directory: MakeDirectory,
) -> None:
    directory = make_directory()
    ref = directory.get_or_start("a")
    with pytest.raises(ValueError, match="boom in a"):
        await directory.ask("a", Explode(), ASK_LIMIT_SECS)
    assert directory.get_or_start("a") is ref and ref.is_alive()


async def test_idle_actor_is_passivated_and_restarts_with_its_state(
    make_directory: MakeDirectory, world: FakeWorld
) -> None:
    directory = make_directory(idle_timeout_secs=0.05, sweep_interval_secs=0.01)
    assert await directory.ask("a", Add(3), ASK_LIMIT_SECS) == 3
    ref = directory.get_or_start("a")
    assert wait_until(lambda: directory.live_count() == 0 and not ref.is_alive())
    assert await directory.ask("a", GetCount(), ASK_LIMIT_SECS) == 3
    assert world.starts["a"] == 2


async def test_live_actors_stay_under_the_cap_while_50_keys_are_used(
    make_directory: MakeDirectory, world: FakeWorld
) -> None:
    directory = make_directory(max_live=5)
    for round_number in (1, 2):
        for index in range(50):
            assert await directory.ask(f"k{index}", Add(1), ASK_LIMIT_SECS) == round_number
            assert directory.live_count() <= 5
    assert all(world.store[f"k{index}"] == 2 for index in range(50))


def test_message_to_a_stopping_actor_is_redelivered_exactly_once(
    make_directory: MakeDirectory, world: FakeWorld
) -> None:
    directory = make_directory()
    gate = threading.Event()
    directory.tell("a", WaitFor(gate))  # keeps the actor busy, so our stop queues behind it
    ref = directory.get_or_start("a")
    ref.stop(block=False)
    directory.tell("a", Add(1, message_id="m1"))  # lands behind the stop
    gate.set()
    assert wait_until(lambda: world.processed["m1"] == 1)
    assert not ref.is_alive()
    assert world.store["a"] == 1 and world.starts["a"] == 2
    assert wait_until(lambda: directory.live_count() == 1)
    assert world.processed["m1"] == 1


def test_message_to_a_stopped_actor_starts_a_fresh_one(
    make_directory: MakeDirectory, world: FakeWorld
) -> None:
    directory = make_directory()
    directory.tell("a", Add(2))
    directory.get_or_start("a").stop()
    directory.tell("a", Add(1, message_id="m1"))
    assert wait_until(lambda: world.processed["m1"] == 1)
    assert world.store["a"] == 3


async def test_crashed_actor_is_logged_and_restarted_on_its_next_message(
    make_directory: MakeDirectory, world: FakeWorld, caplog: pytest.LogCaptureFixture
) -> None:
    directory = make_directory()
    directory.tell("a", Add(2))
    crashed = directory.get_or_start("a")
    with caplog.at_level(logging.ERROR, logger="server.actors.runtime"):
        directory.tell("a", Explode())
        directory.tell("a", Add(1, message_id="behind-the-crash"))
        assert wait_until(lambda: world.processed["behind-the-crash"] == 1)
    assert not crashed.is_alive() and world.failures["a"] == 1
    assert any("'a' crashed" in record.getMessage() for record in caplog.records)
    assert await directory.ask("a", GetCount(), ASK_LIMIT_SECS) == 3
    assert world.starts["a"] == 2


def test_stop_all_stops_every_actor_and_refuses_new_messages(make_directory: MakeDirectory) -> None:
    directory = make_directory()
    refs = [directory.get_or_start(f"k{index}") for index in range(5)]
    directory.stop_all(timeout_secs=5)
    assert directory.live_count() == 0
    assert not any(ref.is_alive() for ref in refs)
    with pytest.raises(DirectoryClosed):
        directory.tell("k0", Add(1))


async def test_threads_stay_bounded_while_200_keys_cycle_with_cap_10(
    make_directory: MakeDirectory,
) -> None:
    directory = make_directory(max_live=10)
    baseline = threading.active_count()
    most = baseline
    for index in range(200):
        await directory.ask(f"k{index}", Add(1), ASK_LIMIT_SECS)
        most = max(most, threading.active_count())
    # cap + a constant for evicted actors whose threads are still finishing
    assert most <= baseline + 10 + 10
    assert directory.live_count() <= 10


def test_opt_out_of_futex_hash_never_raises() -> None:
    assert opt_out_of_futex_hash() in (True, False)


def test_freeze_gc_moves_live_objects_to_the_permanent_generation() -> None:
    try:
        freeze_gc()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_no_message_is_lost_or_doubled_while_actors_are_stopped_underneath(
    make_directory: MakeDirectory, world: FakeWorld
) -> None:
    directory = make_directory()
    message_ids = [f"m{index}" for index in range(300)]

    def send_all() -> None:
        for message_id in message_ids:
            directory.tell("a", Add(1, message_id=message_id))

    sender = threading.Thread(target=send_all)
    sender.start()
    for _ in range(20):  # stop whatever actor serves "a" right now, behind the directory's back
        ref = directory.get_or_start("a")
        ref.stop(block=False)
        assert wait_until(lambda ref=ref: not ref.is_alive())  # type: ignore[misc]
    sender.join(timeout=5)
    assert wait_until(lambda: sum(world.processed.values()) >= len(message_ids))
    assert all(world.processed[message_id] == 1 for message_id in message_ids)
    assert world.store["a"] == len(message_ids)
