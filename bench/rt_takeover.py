"""Scenario 5: an operator takes over while the AI is streaming a long answer.

The fake OpenAI-compatible server (tests/fakes/openai_server.py, in this process) streams every
answer slowly (`chunks` deltas, `chunk_delay_secs` apart). Each round: a visitor opens its
socket and sends a question; at its first `ai_delta` the owner requests a handoff, then takes the
dialog over; we time the takeover request → `handoff_started` on the visitor's socket and, for
`grace_secs` more, count AI text reaching the visitor after it (`ai_delta` frames and assistant
`message:new`) — the target is none. Rounds run `concurrency` at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from bench.rt_api import (
    HTTP_TIMEOUT_SECS,
    go_online,
    handoff_available,
    probe_doors,
    request_handoff,
    take_over,
)
from bench.rt_common import PYTHON, REPO, Unavailable, free_port, percentile, serve
from bench.rt_seed import ORIGIN, SeededDialog, backend, seed, server_env

sys.path.insert(0, str(REPO / "tests"))
from fakes.openai_server import FakeOpenAI, reply

FIRST_DELTA_TIMEOUT_SECS = 30.0
STARTED_TIMEOUT_SECS = 10.0
QUESTION = "Please tell me everything about your product, in detail."
FUNDS = Decimal(1000)


@dataclass(frozen=True, slots=True)
class TakeoverConfig:
    rounds: int
    concurrency: int
    chunks: int
    chunk_delay_secs: float
    grace_secs: float
    backend: str
    pg_admin_url: str
    redis_url: str
    extra_env: dict[str, str]


@dataclass(slots=True)
class Round:
    started_ms: float | None = None  # takeover request → handoff_started at the visitor
    http_ms: float | None = None  # takeover request → its HTTP response
    mid_stream: bool = False  # AI deltas had arrived and its final message had not
    late_deltas: int = 0
    late_answers: int = 0
    error: str | None = None


@dataclass
class TakeoverNumbers:
    rounds: list[Round] = field(default_factory=list)
    cancelled_upstream: int = 0

    def p99_ms(self) -> float | None:
        return percentile([r.started_ms for r in self.rounds if r.started_ms is not None], 0.99)

    def late_ai(self) -> int:
        return sum(r.late_deltas + r.late_answers for r in self.rounds)

    def row(self) -> list[Any]:
        done = [r for r in self.rounds if r.started_ms is not None]
        started = [r.started_ms for r in done if r.started_ms is not None]
        http = [r.http_ms for r in done if r.http_ms is not None]
        errors = sorted({r.error for r in self.rounds if r.error})
        return [len(self.rounds), len(done), sum(r.mid_stream for r in done),
                percentile(started, 0.5), percentile(started, 0.99),
                max(started) if started else None, percentile(http, 0.5),
                percentile(http, 0.99), sum(r.late_deltas for r in self.rounds),
                sum(r.late_answers for r in self.rounds), self.cancelled_upstream,
                "; ".join(errors[:3]) or "none"]


TAKEOVER_HEADERS = ("rounds", "completed", "mid-stream", "→started p50 ms", "p99 ms", "max ms",
                    "HTTP p50 ms", "HTTP p99 ms", "ai_delta after", "AI msg after",
                    "LLM streams cut", "errors")


class _Visitor:
    """The visitor's socket, read in the background; frames kept with their arrival time."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[tuple[float, dict[str, Any]]] = []
        self.ready = asyncio.Event()
        self.first_delta = asyncio.Event()
        self.started = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(WebSocketException):
            async for raw in self.ws:
                frame = orjson.loads(raw)
                self.frames.append((time.monotonic(), frame))
                kind = frame.get("type")
                if kind == "ping":
                    await self.ws.send('{"type":"pong"}')
                elif kind == "ready":
                    self.ready.set()
                elif kind == "ai_delta":
                    self.first_delta.set()
                elif kind == "handoff_started":
                    self.started.set()

    def judge(self, result: Round, requested_at: float) -> None:
        kinds = [(at, f.get("type"), (f.get("message") or {}).get("sender"))
                 for at, f in self.frames]
        started_at = next(at for at, kind, _ in kinds if kind == "handoff_started")
        result.started_ms = (started_at - requested_at) * 1000.0
        before = [(kind, sender) for at, kind, sender in kinds if at < requested_at]
        after = [(kind, sender) for at, kind, sender in kinds if at > started_at]
        result.mid_stream = (("ai_delta", None) in before
                             and ("message:new", "assistant") not in before)
        result.late_deltas = sum(1 for kind, _ in after if kind == "ai_delta")
        result.late_answers = after.count(("message:new", "assistant"))


async def _round(client: httpx.AsyncClient, dialog: SeededDialog, ws_base: str,
                 grace_secs: float) -> Round:
    result = Round()
    try:
        async with connect(dialog.visitor_url(ws_base), compression=None,
                           origin=ORIGIN, ping_interval=None) as ws:  # type: ignore[arg-type]
            visitor = _Visitor(ws)
            async with asyncio.timeout(FIRST_DELTA_TIMEOUT_SECS):
                await visitor.ready.wait()
                await ws.send(orjson.dumps({"type": "message", "text": QUESTION,
                                            "client_message_id": uuid.uuid4().hex}).decode())
                await visitor.first_delta.wait()
            await request_handoff(client, dialog)
            requested_at = time.monotonic()
            await take_over(client, dialog)
            result.http_ms = (time.monotonic() - requested_at) * 1000.0
            async with asyncio.timeout(STARTED_TIMEOUT_SECS):
                await visitor.started.wait()
            await asyncio.sleep(grace_secs)
            visitor.judge(result, requested_at)
            visitor.task.cancel()
    except (TimeoutError, OSError, WebSocketException, RuntimeError) as exc:
        result.error = f"{type(exc).__name__}: {str(exc)[:120]}"
    return result


async def _rounds(base_url: str, dialogs: list[SeededDialog], cfg: TakeoverConfig) -> list[Round]:
    ws_base = base_url.replace("http://", "ws://", 1)
    gate = asyncio.Semaphore(cfg.concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=HTTP_TIMEOUT_SECS) as client:
        await asyncio.gather(*(go_online(client, dialog, 3) for dialog in dialogs))

        async def one(dialog: SeededDialog) -> Round:
            async with gate:
                return await _round(client, dialog, ws_base, cfg.grace_secs)

        return list(await asyncio.gather(*(one(dialog) for dialog in dialogs)))


def run_takeover(cfg: TakeoverConfig, workdir: Path) -> TakeoverNumbers:
    text = " ".join(f"word{n}" for n in range(cfg.chunks * 2))
    fake = FakeOpenAI(default=reply(text, chunks=cfg.chunks, chunk_delay_secs=cfg.chunk_delay_secs))
    with fake, backend(cfg.backend, workdir, cfg.pg_admin_url, cfg.redis_url) as chosen:
        dialogs = seed(chosen.database_url, cfg.rounds, 1, funds=FUNDS)
        port = free_port()
        data_dir = workdir / f"data-takeover-{port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = server_env(chosen, port, data_dir, 2 * cfg.rounds, cfg.extra_env,
                         openai=("bench-key", fake.base_url))
        with serve([PYTHON, "-m", "server", "serve"], env, port,
                   workdir / f"server-takeover-{port}.log") as server:
            if not handoff_available(server.base_url):
                raise Unavailable("the handoff routes (request/takeover/heartbeat) are missing")
            probe_doors(server.base_url.replace("http://", "ws://", 1), dialogs[0], "dialog")
            rounds = asyncio.run(_rounds(server.base_url, dialogs, cfg))
        cut = sum(1 for request in fake.requests if request.disconnected)
    return TakeoverNumbers(rounds, cut)
