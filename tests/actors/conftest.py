from __future__ import annotations

from collections.abc import Callable, Iterator

import pykka
import pytest
from counter_actor import CounterActor, FakeWorld

from server.actors.runtime import Directory


@pytest.fixture(autouse=True)
def _stop_every_actor() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


@pytest.fixture
def world() -> FakeWorld:
    return FakeWorld()


@pytest.fixture
def make_directory(world: FakeWorld) -> Iterator[Callable[..., Directory]]:
    made: list[Directory] = []

    def make(**options: object) -> Directory:
        def start(key: object) -> pykka.ActorRef[CounterActor]:
            return CounterActor.start(str(key), world)

        directory = Directory(start, name="counters", **options)  # type: ignore[arg-type]
        made.append(directory)
        return directory

    yield make
    for directory in made:
        directory.stop_all(timeout_secs=5)
