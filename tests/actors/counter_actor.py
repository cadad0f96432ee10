"""A tiny counter actor for the runtime tests; its "store" is a dict shared with the test."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pykka

from server.actors.bridge import run_on_loop

WAIT_LIMIT_SECS = 5.0


def wait_until(condition: Callable[[], bool], limit_secs: float = WAIT_LIMIT_SECS) -> bool:
    """Poll `condition` for at most `limit_secs`; returns its last value (a bounded wait)."""
    deadline = time.monotonic() + limit_secs
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        time.sleep(0.005)
    return True


@dataclass(frozen=True, slots=True)
class Add:
    amount: int
    message_id: str = ""


@dataclass(frozen=True, slots=True)
class GetCount:
    pass


@dataclass(frozen=True, slots=True)
class WaitFor:
    """Blocks the actor until `event` is set (bounded); replies whether it was set."""

    event: threading.Event


@dataclass(frozen=True, slots=True)
class Explode:
    pass


@dataclass(frozen=True, slots=True)
class FetchOnLoop:
    loop: asyncio.AbstractEventLoop
    fail: bool = False


@dataclass(frozen=True, slots=True)
class _Fetched:
    outcome: Any


@dataclass
class FakeWorld:
    """What the tests observe: the store, starts and failures per key, processed message ids."""

    store: dict[str, int] = field(default_factory=dict)
    starts: Tally[str] = field(default_factory=Tally)
    failures: Tally[str] = field(default_factory=Tally)
    processed: Tally[str] = field(default_factory=Tally)
    fetched: list[Any] = field(default_factory=list)


class CounterActor(pykka.ThreadingActor):
    def __init__(self, key: str, world: FakeWorld) -> None:
        super().__init__()
        self.key = key
        self.world = world
        self.count = 0

    def on_start(self) -> None:
        self.count = self.world.store.get(self.key, 0)
        self.world.starts[self.key] += 1

    def on_failure(self, *_exc_info: Any) -> None:
        self.world.failures[self.key] += 1

    def on_receive(self, message: Any) -> Any:
        match message:
            case Add(amount, message_id):
                self.count += amount
                self.world.store[self.key] = self.count
                if message_id:
                    self.world.processed[message_id] += 1
                return self.count
            case GetCount():
                return self.count
            case WaitFor(event):
                return event.wait(WAIT_LIMIT_SECS)
            case Explode():
                raise ValueError(f"boom in {self.key}")
            case FetchOnLoop(loop, fail):
                tell_me = self.actor_ref.tell
                run_on_loop(loop, lambda: self._fetch(fail), lambda out: tell_me(_Fetched(out)))
                return "started"
            case _Fetched(outcome):
                self.world.fetched.append(outcome)
                return None
        return super().on_receive(message)

    async def _fetch(self, fail: bool) -> int:
        await asyncio.sleep(0)
        if fail:
            raise LookupError("fetch failed")
        return 42
