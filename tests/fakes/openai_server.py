"""A fake OpenAI-compatible server on a real loopback socket, scripted by the test.

`FakeOpenAI` serves a small Starlette app with uvicorn on a free 127.0.0.1 port in a background
thread. It answers `POST /v1/chat/completions` (plain JSON, or SSE when `stream: true`, with a
final usage chunk when `stream_options.include_usage`) and `POST /v1/embeddings` (deterministic
hashed bag-of-words vectors, float or base64).

What a request gets is a `Behaviour`, chosen in this order: a one-shot behaviour queued for the
request's API key (the bearer), a one-shot behaviour queued for anyone, the persistent behaviour
scripted for the key, the server's default. Every request is recorded (`RecordedRequest`) with
its key, model and messages, and whether the client went away before the answer was complete.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import hashlib
import json
import math
import re
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive

DEFAULT_TEXT = "Hello from the fake model."
START_TIMEOUT_SECS = 10.0
STOP_TIMEOUT_SECS = 10.0
HANG_POLL_SECS = 0.02


@dataclasses.dataclass(frozen=True, slots=True)
class Behaviour:
    """How the fake answers one request."""

    text: str = DEFAULT_TEXT
    chunks: int = 3  # content deltas the text is split into when streaming
    chunk_delay_secs: float = 0.0  # before each content delta
    status: int | None = None  # answer with this HTTP error instead
    error_message: str = "scripted failure"
    malformed_at: int | None = None  # this content delta is sent as invalid JSON
    hang_after_chunks: int | None = None  # stream: send this many deltas, then hang
    hang_before_response: bool = False  # hang before any status line
    send_usage: bool = True
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def reply(text: str = DEFAULT_TEXT, chunks: int = 3, **fields: Any) -> Behaviour:
    return Behaviour(text=text, chunks=chunks, **fields)


def fail(status: int, message: str = "scripted failure") -> Behaviour:
    return Behaviour(status=status, error_message=message)


def hang(after_chunks: int | None = None) -> Behaviour:
    """Hang before responding, or (stream) after `after_chunks` deltas; until the client quits."""
    if after_chunks is None:
        return Behaviour(hang_before_response=True)
    return Behaviour(hang_after_chunks=after_chunks)


def malformed(at: int = 0, **fields: Any) -> Behaviour:
    return Behaviour(malformed_at=at, **fields)


@dataclasses.dataclass(slots=True)
class RecordedRequest:
    path: str
    key: str | None
    model: str | None
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    stream: bool
    completed: bool = False
    disconnected: bool = False


def split_text(text: str, parts: int) -> list[str]:
    """Split into `parts` non-empty pieces (fewer when the text is shorter) that join back."""
    parts = max(1, min(parts, len(text))) if text else 1
    size = math.ceil(len(text) / parts) if text else 0
    pieces = [text[i : i + size] for i in range(0, len(text), size)] if text else [""]
    return pieces


def embed_text(text: str, dimensions: int) -> list[float]:
    """A hashed bag of words, L2-normalised: equal texts give equal vectors, shared words align."""
    vector = [0.0] * dimensions
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        number = int.from_bytes(digest, "big")
        vector[number % dimensions] += 1.0 if (number >> 63) == 0 else -1.0
    norm = math.sqrt(sum(value * value for value in vector))
    return [value / norm for value in vector] if norm else vector


def _estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


class FakeOpenAI:
    def __init__(self, *, default: Behaviour | None = None, embedding_dim: int = 64) -> None:
        self.default = default or Behaviour()
        self.embedding_dim = embedding_dim
        self._lock = threading.Lock()
        self._scripted: dict[str, Behaviour] = {}
        self._queued: dict[str | None, collections.deque[Behaviour]] = collections.defaultdict(
            collections.deque
        )
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = 0
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/embeddings", self._embeddings, methods=["POST"]),
        ])

    # --- scripting and assertions ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, key: str, behaviour: Behaviour) -> None:
        """Every request with this key gets `behaviour` (unless a one-shot is queued)."""
        with self._lock:
            self._scripted[key] = behaviour

    def enqueue(self, *behaviours: Behaviour, key: str | None = None) -> None:
        """One-shot behaviours for the next requests of `key` (or of anyone when None)."""
        with self._lock:
            self._queued[key].extend(behaviours)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def keys_called(self) -> list[str | None]:
        return [request.key for request in self.requests]

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(HANG_POLL_SECS)
        return predicate()

    def _behaviour_for(self, key: str | None) -> Behaviour:
        with self._lock:
            for queue_key in (key, None):
                queue = self._queued.get(queue_key)
                if queue:
                    return queue.popleft()
            if key is not None and key in self._scripted:
                return self._scripted[key]
            return self.default

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        self._socket = listener
        self.port = listener.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", ws="none",
            timeout_graceful_shutdown=1, access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [listener]}, name="fake-openai",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(STOP_TIMEOUT_SECS)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(STOP_TIMEOUT_SECS)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- endpoints ------------------------------------------------------------------------------

    async def _receive(self, request: Request) -> tuple[RecordedRequest, Behaviour]:
        body = await request.json()
        auth = request.headers.get("authorization", "")
        key = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        record = RecordedRequest(
            path=request.url.path, key=key, model=body.get("model"),
            messages=list(body.get("messages") or []), body=body,
            stream=bool(body.get("stream")),
        )
        with self._lock:
            self._requests.append(record)
        return record, self._behaviour_for(key)

    async def _hold(self, request: Request | None = None) -> None:
        """Hang until the client goes away or the server stops."""
        while not self._stopping.is_set():
            if request is not None and await request.is_disconnected():
                return
            await asyncio.sleep(HANG_POLL_SECS)

    async def _refusal(self, request: Request, record: RecordedRequest,
                       behaviour: Behaviour) -> Response | None:
        if behaviour.hang_before_response:
            await self._hold(request)
            record.disconnected = True
            return Response(status_code=504)
        if behaviour.status is not None:
            record.completed = True
            error = {"message": behaviour.error_message, "type": "fake_error",
                     "code": str(behaviour.status)}
            return JSONResponse({"error": error}, status_code=behaviour.status)
        return None

    async def _chat(self, request: Request) -> Response:
        record, behaviour = await self._receive(request)
        refusal = await self._refusal(request, record, behaviour)
        if refusal is not None:
            return refusal
        prompt_text = " ".join(str(m.get("content") or "") for m in record.messages)
        usage = {
            "prompt_tokens": behaviour.prompt_tokens or _estimate_tokens(prompt_text),
            "completion_tokens": behaviour.completion_tokens or _estimate_tokens(behaviour.text),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        model = record.model or "fake-model"
        if not record.stream:
            record.completed = True
            return JSONResponse({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": behaviour.text}}],
                **({"usage": usage} if behaviour.send_usage else {}),
            })
        options = record.body.get("stream_options") or {}
        with_usage = bool(options.get("include_usage")) and behaviour.send_usage
        events = self._sse(record, behaviour, model, usage if with_usage else None)
        return _RecordingStream(events, record)

    async def _sse(self, record: RecordedRequest, behaviour: Behaviour, model: str,
                   usage: dict[str, int] | None) -> AsyncIterator[bytes]:
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            payload = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                       "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        pieces = split_text(behaviour.text, behaviour.chunks)
        try:
            yield chunk({"role": "assistant", "content": ""})
            for index, piece in enumerate(pieces):
                if behaviour.hang_after_chunks == index:
                    await self._hold()
                    return
                if behaviour.chunk_delay_secs:
                    await asyncio.sleep(behaviour.chunk_delay_secs)
                if behaviour.malformed_at == index:
                    yield b'data: {"id": "chatcmpl-fake", "choices": [{"delta": \n\n'
                    continue
                yield chunk({"content": piece})
            if behaviour.hang_after_chunks is not None:
                await self._hold()
                return
            yield chunk({}, finish="stop")
            if usage is not None:
                payload = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                           "created": created, "model": model, "choices": [], "usage": usage}
                yield b"data: " + json.dumps(payload).encode() + b"\n\n"
            record.completed = True
            yield b"data: [DONE]\n\n"
        except BaseException:
            record.disconnected = True
            raise

    async def _embeddings(self, request: Request) -> Response:
        record, behaviour = await self._receive(request)
        refusal = await self._refusal(request, record, behaviour)
        if refusal is not None:
            return refusal
        raw_input = record.body.get("input")
        texts = [raw_input] if isinstance(raw_input, str) else [str(t) for t in raw_input or []]
        dimensions = int(record.body.get("dimensions") or self.embedding_dim)
        as_base64 = record.body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embed_text(text, dimensions)
            encoded: Any = vector
            if as_base64:
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(_estimate_tokens(text) for text in texts)
        record.completed = True
        return JSONResponse({
            "object": "list", "data": data, "model": record.model or "fake-embedding",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })


class _RecordingStream(StreamingResponse):
    """An SSE response that notes when the client hangs up before the end."""

    def __init__(self, content: AsyncIterator[bytes], record: RecordedRequest) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache"})
        self._record = record

    async def listen_for_disconnect(self, receive: Receive) -> None:
        await super().listen_for_disconnect(receive)
        if not self._record.completed:
            self._record.disconnected = True
