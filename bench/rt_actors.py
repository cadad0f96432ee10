"""Scenario 4: actors at scale, in one fresh process per measurement (no server).

    .venv/bin/python -m bench.rt_actors live  --count 2000 [--asks 2000] [--actor minimal]
    .venv/bin/python -m bench.rt_actors flood --count 100000 --cap 2000 [--actor minimal]

`live`: a `Directory` with its cap at `count` starts `count` actors (each answers one ask), then
`freeze_gc()`; reports RSS and threads before/after, the start rate, and `Directory.ask` latency
(sequential asks to random live actors from a uvloop loop) and throughput (1,000 asks in flight).
`flood`: `count` keys each get one `tell` through a `Directory` capped at `cap` (least recently
used idle actors are passivated to make room); reports the most threads seen (sampled every
250 tells), the threads once every message was handled, and that every message was handled.
Like the server: `opt_out_of_futex_hash()` before any thread exists. Prints one JSON object.

`--actor` picks the actor kit: `minimal` (a pykka actor that counts messages), `dialog` (the real
DialogActor over a seeded SQLite file, bench/rt_dialog_kit.py), or `package.module:function` —
a function `(count, loop) -> ActorKit` of your own.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import itertools
import json
import random
import sys
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from bench.rt_common import Unavailable, percentile, proc_status
from server.actors.runtime import Directory, freeze_gc, opt_out_of_futex_hash

SAMPLE_EVERY_TELLS = 250
SETTLE_TIMEOUT_SECS = 120.0
ASK_TIMEOUT_SECS = 10.0
CONCURRENT_ASKS = 1_000
NEVER_SECS = 1e9  # idle timeout / sweep interval that never fire during a measurement


@dataclass(frozen=True, slots=True)
class ActorKit:
    """What the benchmark needs of an actor kind: how to start one, what to send it, how many
    messages were handled so far, and how to clean up (databases, temp files)."""

    keys: list[Hashable]
    factory: Callable[[Hashable], Any]
    message: Callable[[Hashable], Any]
    handled: Callable[[], int]
    close: Callable[[], None]


KitMaker = Callable[[int, asyncio.AbstractEventLoop], ActorKit]


def minimal_kit(count: int, _loop: asyncio.AbstractEventLoop) -> ActorKit:
    import pykka

    counter = itertools.count()
    handled = [0]

    class CountingActor(pykka.ThreadingActor):
        def __init__(self, key: Hashable) -> None:
            super().__init__()
            self.key = key
            self.seen = 0

        def on_receive(self, message: Any) -> Any:
            self.seen += 1
            handled[0] = next(counter) + 1  # next() on a count is atomic under the GIL
            return self.seen

    return ActorKit(keys=list(range(count)), factory=CountingActor.start,
                    message=lambda key: ("ping", key), handled=lambda: handled[0],
                    close=lambda: None)


KITS = {"minimal": "bench.rt_actors:minimal_kit", "dialog": "bench.rt_dialog_kit:dialog_kit"}


def load_kit(name: str) -> KitMaker:
    """`minimal`, `dialog`, or `package.module:function` (a `KitMaker`)."""
    module_name, _, function = KITS.get(name, name).partition(":")
    if not function:
        raise SystemExit(f"--actor: {name!r} is neither {sorted(KITS)} nor module:function")
    return getattr(importlib.import_module(module_name), function)  # type: ignore[no-any-return]


def _wait(predicate: Callable[[], bool], timeout_secs: float) -> bool:
    deadline = time.monotonic() + timeout_secs
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


async def _asks(directory: Directory, kit: ActorKit, asks: int) -> dict[str, Any]:
    keys = kit.keys
    # Warm-up: every actor answers once, so each thread is running and has handled a message.
    for batch in range(0, len(keys), CONCURRENT_ASKS):
        await asyncio.gather(*(directory.ask(k, kit.message(k), ASK_TIMEOUT_SECS)
                               for k in keys[batch:batch + CONCURRENT_ASKS]))
    freeze_gc()
    latencies = []
    for key in random.choices(keys, k=asks):
        began = time.perf_counter()
        await directory.ask(key, kit.message(key), ASK_TIMEOUT_SECS)
        latencies.append((time.perf_counter() - began) * 1e6)
    chosen = random.choices(keys, k=CONCURRENT_ASKS)
    began = time.perf_counter()
    await asyncio.gather(*(directory.ask(k, kit.message(k), ASK_TIMEOUT_SECS) for k in chosen))
    burst_secs = time.perf_counter() - began
    return {"ask_p50_us": percentile(latencies, 0.5), "ask_p99_us": percentile(latencies, 0.99),
            "asks_per_sec_concurrent": CONCURRENT_ASKS / burst_secs}


async def measure_live(kit: ActorKit, asks: int) -> dict[str, Any]:
    count = len(kit.keys)
    before = proc_status()
    directory = Directory(kit.factory, name="bench", idle_timeout_secs=NEVER_SECS,
                          max_live=count, sweep_interval_secs=NEVER_SECS)
    began = time.perf_counter()
    for key in kit.keys:
        directory.get_or_start(key)
    start_secs = time.perf_counter() - began
    result: dict[str, Any] = {}
    try:
        result.update(await _asks(directory, kit, asks))
        after = proc_status()
        result.update({
            "live": directory.live_count(), "starts_per_sec": count / start_secs,
            "rss_before_kib": before["VmRSS"], "rss_after_kib": after["VmRSS"],
            "kib_per_actor": (after["VmRSS"] - before["VmRSS"]) / count,
            "threads_before": before["Threads"], "threads_after": after["Threads"],
        })
    finally:
        began = time.perf_counter()
        directory.stop_all(timeout_secs=SETTLE_TIMEOUT_SECS)
        result["stop_all_secs"] = time.perf_counter() - began
    return result


def measure_flood(kit: ActorKit, cap: int) -> dict[str, Any]:
    """Runs on the loop's thread but never yields: nothing else needs the loop meanwhile."""
    count = len(kit.keys)
    before = proc_status()
    directory = Directory(kit.factory, name="bench", idle_timeout_secs=NEVER_SECS,
                          max_live=cap, sweep_interval_secs=NEVER_SECS)
    max_threads = max_live = 0
    began = time.perf_counter()
    try:
        for index, key in enumerate(kit.keys):
            directory.tell(key, kit.message(key))
            if index % SAMPLE_EVERY_TELLS == 0:
                max_threads = max(max_threads, proc_status()["Threads"])
                max_live = max(max_live, directory.live_count())
        tell_secs = time.perf_counter() - began
        all_handled = _wait(lambda: kit.handled() >= count, SETTLE_TIMEOUT_SECS)
        settled = _wait(lambda: proc_status()["Threads"] <= cap + before["Threads"] + 1,
                        SETTLE_TIMEOUT_SECS)
        after = proc_status()
        return {
            "keys": count, "cap": cap, "tells_per_sec": count / tell_secs,
            "threads_before": before["Threads"], "max_threads": max(max_threads, after["Threads"]),
            "threads_after": after["Threads"], "max_live": max_live,
            "live_after": directory.live_count(), "handled": kit.handled(),
            "all_handled": all_handled, "threads_settled": settled,
            "rss_after_kib": after["VmRSS"], "elapsed_secs": time.perf_counter() - began,
        }
    finally:
        directory.stop_all(timeout_secs=SETTLE_TIMEOUT_SECS)


async def _measure(args: argparse.Namespace) -> dict[str, Any]:
    make_kit = load_kit(args.actor)
    try:
        kit = make_kit(args.count, asyncio.get_running_loop())
    except Unavailable as exc:
        return {"unavailable": str(exc)}
    try:
        if args.mode == "live":
            return await measure_live(kit, args.asks)
        return measure_flood(kit, args.cap)
    finally:
        kit.close()


def main(argv: list[str] | None = None) -> int:
    opt_out = opt_out_of_futex_hash()  # first, before any thread exists (as the server does)
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m bench.rt_actors",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("live", "flood"))
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--cap", type=int, default=2_000)
    parser.add_argument("--asks", type=int, default=2_000)
    parser.add_argument("--actor", default="minimal")
    args = parser.parse_args(argv)
    result = uvloop.run(_measure(args))
    result.update({"actor": args.actor, "futex_hash_opt_out": opt_out})
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
