"""WebSocket load client of the real-time benchmark: worker processes driving many sockets.

A *link* is one sender socket and where its messages come out: its own socket (the echo) or a
receiver socket (our operator socket of that dialog, or the owner's operator feed). Each message
carries a nonce `<link>.<n>`; the receive time minus the send time (CLOCK_MONOTONIC, one process:
a link's sender and receiver always live in the same worker) is its latency.

Phases, run one after another on the same open sockets:
- `steady`   every link sends one message every `interval_secs` (random phase, fixed schedule);
- `saturate` every link keeps `window` messages in flight (sends the next when one arrives);
- idle is "no phase": the parent measures the server while the workers just hold the sockets
  (answering the server's `ping` frames).
Only messages *sent* in the measured window count for latency; only deliveries *received* in it
count for throughput; a phase ends after at most `grace_secs` waiting for stragglers.

Workers are `spawn`ed processes (uvloop inside) talking to the parent over a pipe.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import multiprocessing
import random
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from bench.rt_common import raise_nofile

ECHO = "echo"
REPLYX = "replyx"
READY_TIMEOUT_SECS = 20.0  # after the handshake, until our door's `ready` frame
PIPE_SLACK_SECS = 60.0  # on top of a phase's own length, before the parent gives up on it
OPEN_BASE_SECS = 60.0  # opening the sockets may take this long, plus a socket per ...
OPEN_FLOOR_PER_SEC = 50.0  # ... 1/50 s (our doors check credentials in the database)
MAX_ERROR_KINDS = 20


@dataclass(frozen=True, slots=True)
class Link:
    send_url: str
    receiver: int | None = None  # index into LoadSpec.receivers; None = the sender's own socket


@dataclass(frozen=True, slots=True)
class LoadSpec:
    protocol: str  # ECHO or REPLYX
    links: tuple[Link, ...]
    receivers: tuple[str, ...] = ()
    origin: str | None = None
    connect_concurrency: int = 100
    connect_timeout_secs: float = 30.0
    payload_chars: int = 64


@dataclass(frozen=True, slots=True)
class Phase:
    mode: str  # "steady" | "saturate"
    warmup_secs: float
    measure_secs: float
    interval_secs: float = 2.0
    window: int = 1
    grace_secs: float = 3.0


@dataclass(slots=True)
class PhaseResult:
    mode: str
    measure_secs: float
    sent: int = 0
    delivered: int = 0
    delivered_in_window: int = 0
    sent_in_window: int = 0
    lost_in_window: int = 0
    unmatched: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    client_cpu_secs: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def merge(self, other: PhaseResult) -> None:
        for name in ("sent", "delivered", "delivered_in_window", "sent_in_window",
                     "lost_in_window", "unmatched", "client_cpu_secs"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latencies_ms.extend(other.latencies_ms)
        for kind, count in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + count

    @property
    def rate(self) -> float:
        return self.delivered_in_window / self.measure_secs if self.measure_secs else 0.0


@dataclass(slots=True)
class OpenReport:
    opened: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def merge(self, other: OpenReport) -> None:
        self.opened += other.opened
        self.failed += other.failed
        for kind, count in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + count


def _note(errors: dict[str, int], kind: str) -> None:
    if kind in errors or len(errors) < MAX_ERROR_KINDS:
        errors[kind] = errors.get(kind, 0) + 1


def _describe(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"handshake HTTP {exc.response.status_code}"
    if isinstance(exc, ConnectionClosed):
        frame = exc.rcvd
        return f"closed {frame.code} {frame.reason}" if frame else "closed (no close frame)"
    return type(exc).__name__


# --- the worker side -----------------------------------------------------------------------


class _Run:
    """State of one phase: what was sent when, and what arrived."""

    def __init__(self, phase: Phase, start: float, links: int) -> None:
        self.phase = phase
        self.start = start
        self.window_start = start + phase.warmup_secs
        self.window_end = self.window_start + phase.measure_secs
        self.pending: dict[str, float] = {}
        self.result = PhaseResult(phase.mode, phase.measure_secs)
        self.credits = [asyncio.Semaphore(phase.window) for _ in range(links)]
        self.all_delivered = asyncio.Event()
        self.sending_done = False

    def sent(self, nonce: str, at: float) -> None:
        self.pending[nonce] = at
        self.result.sent += 1
        if self.window_start <= at < self.window_end:
            self.result.sent_in_window += 1

    def delivered(self, nonce: str, at: float) -> None:
        sent_at = self.pending.pop(nonce, None)
        if sent_at is None:
            self.result.unmatched += 1  # a straggler of an earlier phase, or a duplicate
            return
        self.result.delivered += 1
        if self.window_start <= at < self.window_end:
            self.result.delivered_in_window += 1
        if self.window_start <= sent_at < self.window_end:
            self.result.latencies_ms.append((at - sent_at) * 1000.0)
        link = int(nonce.split(".", 1)[0])
        self.credits[link].release()
        if self.sending_done and not self.pending:
            self.all_delivered.set()


class _Worker:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.senders: list[ClientConnection | None] = [None] * len(spec.links)
        self.receivers: list[ClientConnection | None] = [None] * len(spec.receivers)
        self.ready: dict[int, asyncio.Event] = {}
        self.readers: list[asyncio.Task[None]] = []
        self.run: _Run | None = None
        self.errors: dict[str, int] = {}
        self.padding = "x" * spec.payload_chars
        # Per link, across phases: a nonce is also the client_message_id, and our server treats
        # a repeated id as a retry of the same message (idempotency), not as a new one.
        self.sent_count = [0] * len(spec.links)

    # frames

    def encode(self, nonce: str) -> str:
        if self.spec.protocol == ECHO:
            return f"{nonce} {self.padding}"
        text = f"bench {nonce} {self.padding}"
        return orjson.dumps({"type": "message", "text": text,
                             "client_message_id": nonce}).decode()

    async def on_frame(self, ws: ClientConnection, raw: str | bytes, delivers: bool) -> None:
        now = time.monotonic()
        if self.spec.protocol == ECHO:
            if self.run is not None:
                self.run.delivered(str(raw).split(" ", 1)[0], now)
            return
        frame = orjson.loads(raw)
        kind = frame.get("type")
        if kind == "ping":
            await ws.send('{"type":"pong"}')
        elif kind == "ready":
            event = self.ready.get(id(ws))
            if event is not None:
                event.set()
        elif kind == "error":
            _note(self.errors, f"error frame {frame.get('code')}")
        elif kind == "message:new" and delivers and self.run is not None:
            message = frame.get("message") or {}
            parts = str(message.get("text", "")).split(" ", 2)
            if message.get("sender") == "user" and len(parts) >= 2 and parts[0] == "bench":
                self.run.delivered(parts[1], now)

    async def read(self, ws: ClientConnection, delivers: bool) -> None:
        try:
            async for raw in ws:
                await self.on_frame(ws, raw, delivers)
        except ConnectionClosed as exc:
            _note(self.errors, "reader " + _describe(exc))
        except (orjson.JSONDecodeError, ValueError) as exc:
            _note(self.errors, "bad frame " + type(exc).__name__)

    # connections

    async def open_one(self, url: str, delivers: bool, gate: asyncio.Semaphore,
                       report: OpenReport) -> ClientConnection | None:
        async with gate:
            try:
                ws = await connect(url, compression=None, origin=self.spec.origin,  # type: ignore[arg-type]
                                   open_timeout=self.spec.connect_timeout_secs,
                                   ping_interval=None, max_size=2**20)
            except (OSError, TimeoutError, WebSocketException) as exc:
                report.failed += 1
                _note(report.errors, "connect " + _describe(exc))
                return None
            ready = self.ready.setdefault(id(ws), asyncio.Event())
            self.readers.append(asyncio.create_task(self.read(ws, delivers)))
            if self.spec.protocol == REPLYX:
                try:
                    async with asyncio.timeout(READY_TIMEOUT_SECS):
                        await ready.wait()
                except TimeoutError:
                    report.failed += 1
                    _note(report.errors, "no ready frame")
                    await ws.close()
                    return None
            report.opened += 1
            return ws

    async def open_all(self) -> OpenReport:
        report = OpenReport()
        gate = asyncio.Semaphore(self.spec.connect_concurrency)
        receivers = [self.open_one(url, True, gate, report) for url in self.spec.receivers]
        self.receivers = list(await asyncio.gather(*receivers))
        senders = [self.open_one(link.send_url, link.receiver is None, gate, report)
                   for link in self.spec.links]
        self.senders = list(await asyncio.gather(*senders))
        return report

    async def close_all(self) -> None:
        sockets = [ws for ws in (*self.senders, *self.receivers) if ws is not None]
        with contextlib.suppress(Exception):
            async with asyncio.timeout(30):
                await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        for task in self.readers:
            task.cancel()

    # phases

    async def send_loop(self, run: _Run, index: int) -> None:
        ws = self.senders[index]
        if ws is None:
            return
        phase = run.phase
        next_at = run.start + random.uniform(0, phase.interval_secs)
        try:
            while True:
                now = time.monotonic()
                if phase.mode == "steady":
                    if next_at >= run.window_end:
                        return
                    await asyncio.sleep(max(0.0, next_at - now))
                    next_at += phase.interval_secs
                else:
                    if now >= run.window_end:
                        return
                    try:
                        async with asyncio.timeout(run.window_end - now):
                            await run.credits[index].acquire()
                    except TimeoutError:
                        return
                nonce = f"{index}.{self.sent_count[index]}"
                self.sent_count[index] += 1
                run.sent(nonce, time.monotonic())
                await ws.send(self.encode(nonce))
        except ConnectionClosed as exc:
            _note(self.errors, "sender " + _describe(exc))

    async def run_phase(self, phase: Phase, start: float) -> PhaseResult:
        run = _Run(phase, start, len(self.spec.links))
        self.run = run
        cpu = asyncio.create_task(_cpu_between(run.window_start, run.window_end))
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        await asyncio.gather(*(self.send_loop(run, i) for i in range(len(self.spec.links))))
        run.sending_done = True
        if run.pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(phase.grace_secs):
                    await run.all_delivered.wait()
        result = run.result
        result.lost_in_window = sum(1 for at in run.pending.values()
                                    if run.window_start <= at < run.window_end)
        result.client_cpu_secs = await cpu
        result.errors, self.errors = self.errors, {}
        return result


def _cpu_secs() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _cpu_between(start: float, end: float) -> float:
    """This process's CPU seconds between two CLOCK_MONOTONIC instants (the measured window)."""
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    before = _cpu_secs()
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    return _cpu_secs() - before


async def _serve_parent(spec: LoadSpec, pipe: Connection) -> None:
    worker = _Worker(spec)
    loop = asyncio.get_running_loop()
    pipe.send(await worker.open_all())
    try:
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "close":
                break
            phase, start = command
            pipe.send(await worker.run_phase(phase, start))
    finally:
        await worker.close_all()
        pipe.send("closed")


def worker_main(spec: LoadSpec, pipe: Connection) -> None:
    import uvloop

    raise_nofile()
    uvloop.run(_serve_parent(spec, pipe))


# --- the parent side -----------------------------------------------------------------------


@dataclass(slots=True)
class LoadOutcome:
    opened: OpenReport
    phases: list[PhaseResult]


def _recv(pipe: Connection, timeout_secs: float, what: str) -> Any:
    try:
        if not pipe.poll(timeout_secs):
            raise TimeoutError(f"load worker: no {what} within {timeout_secs:.0f} s")
        return pipe.recv()
    except EOFError as exc:
        raise RuntimeError(f"load worker died before its {what} (its traceback is above)") from exc


def run_load(specs: Sequence[LoadSpec], phases: Sequence[Phase],
             after_open: Callable[[OpenReport], None] | None = None,
             before_phase: Callable[[Phase, float], None] | None = None,
             after_phase: Callable[[Phase, PhaseResult], None] | None = None) -> LoadOutcome:
    """Start one worker per spec, open every socket, run the phases, close. Bounded in time."""
    context = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    workers = []
    try:
        for spec in specs:
            parent_end, child_end = context.Pipe()
            process = context.Process(target=worker_main, args=(spec, child_end), daemon=True)
            process.start()
            child_end.close()
            pipes.append(parent_end)
            workers.append(process)
        opened = OpenReport()
        sockets = sum(len(spec.links) + len(spec.receivers) for spec in specs)
        open_timeout = OPEN_BASE_SECS + sockets / OPEN_FLOOR_PER_SEC
        for pipe in pipes:
            opened.merge(_recv(pipe, open_timeout, "open report"))
        if after_open is not None:
            after_open(opened)
        results = []
        for phase in phases:
            start = time.monotonic() + 0.5
            if before_phase is not None:
                before_phase(phase, start)
            for pipe in pipes:
                pipe.send((phase, start))
            total = PhaseResult(phase.mode, phase.measure_secs)
            budget = phase.warmup_secs + phase.measure_secs + phase.grace_secs + PIPE_SLACK_SECS
            for pipe in pipes:
                total.merge(_recv(pipe, budget, f"{phase.mode} result"))
            if after_phase is not None:
                after_phase(phase, total)
            results.append(total)
        for pipe in pipes:
            pipe.send("close")
        for pipe in pipes:
            _recv(pipe, 60.0, "close confirmation")
        return LoadOutcome(opened, results)
    finally:
        for process in workers:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=10)


def split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """`items` dealt round-robin into `parts` non-empty lists (fewer if there are fewer items)."""
    parts = max(1, min(parts, len(items)))
    buckets: list[list[Any]] = [[] for _ in range(parts)]
    for index, item in enumerate(items):
        buckets[index % parts].append(item)
    return buckets


def error_summary(errors: dict[str, int]) -> str:
    if not errors:
        return "none"
    top = collections.Counter(errors).most_common(3)
    return "; ".join(f"{kind} ×{count}" for kind, count in top)
