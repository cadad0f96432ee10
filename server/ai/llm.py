"""The LLM gateway: every call to an OpenAI-compatible server goes through the admin's key pool.

Built once per app from `Settings` + `Database`; coroutines run on the event loop (the official
`openai` SDK's `AsyncOpenAI`, any base URL, no SDK retries: fail-over to the next key is ours),
and the store work they need runs in threads (`anyio.to_thread`).

- `has_any_key()` (blocking) says whether an LLM is configured at all; otherwise the engine
  answers with the offline responder.
- `stream_chat()` returns a `ChatStream` (see `server/ai/chat_stream.py`).
- `complete_chat()` and `embed()` are one-shot calls with the same key walk: a key failing with
  401/429/5xx/timeout/connection error/malformed body is charged and the next key is tried.

Every attempt leaves one `ai_token_usage` row with the key's id (NULL for `OPENAI_API_KEY`) and
the token counts (the server's, else estimated at 4 characters per token), written off the
answer's path by a background writer: `flush_usage()` waits for it, `aclose()` drains it. One
HTTP connection pool is shared by every key (building a client per call costs tens of
milliseconds).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import httpx2
import openai
import openai.resources.chat
import openai.resources.embeddings  # imported now, not lazily inside the first answer's deadline
from openai import AsyncOpenAI

from server.ai.cancel import Cancelled, CancelToken, cancel_waiter, race
from server.ai.chat_stream import ChatRequest, ChatStream
from server.ai.key_pool import (
    KEY_REST_SECS,
    NO_USAGE,
    CallInfo,
    KeyCursor,
    KeyPool,
    Outcome,
    PoolKey,
    Usage,
    estimate_prompt_tokens,
    estimate_tokens,
)
from server.ai.llm_errors import HANDLED_ERRORS, LlmCancelled, LlmFailed, classify
from server.config import Settings
from server.store.db import Database

DEFAULT_TIMEOUT_SECS = 30.0
DEFAULT_FIRST_CHUNK_TIMEOUT_SECS = 15.0
DEFAULT_EMBEDDINGS_MODEL = "text-embedding-3-small"

Result = TypeVar("Result")
Messages = Sequence[Mapping[str, Any]]


class LlmGateway:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        timeout_secs: float = DEFAULT_TIMEOUT_SECS,
        first_chunk_timeout_secs: float = DEFAULT_FIRST_CHUNK_TIMEOUT_SECS,
        rest_secs: int = KEY_REST_SECS,
    ) -> None:
        self.settings = settings
        self.pool = KeyPool(db, settings, rest_secs=rest_secs)
        self.timeout_secs = timeout_secs
        self.first_chunk_timeout_secs = first_chunk_timeout_secs
        self._http: httpx2.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    def has_any_key(self) -> bool:
        """Blocking (reads the pool): call it from a thread, not on the event loop."""
        return self.pool.has_any_key()

    async def has_any_key_async(self) -> bool:
        return await anyio.to_thread.run_sync(self.pool.has_any_key)

    def client_for(self, key: PoolKey) -> AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop:
            # Connections belong to one event loop; a new loop gets its own pool.
            self._http = openai.DefaultAsyncHttpxClient()
            self._http_loop = loop
        return AsyncOpenAI(
            api_key=key.api_key,
            base_url=key.base_url or self.settings.openai_base_url,
            max_retries=0,
            http_client=self._http,
        )

    async def flush_usage(self) -> bool:
        """Wait until every usage row of the calls made so far is committed (tests, reports);
        False when the store did not take them within the writer's timeout."""
        if not self.pool.usage.running:
            return True
        return await anyio.to_thread.run_sync(self.pool.flush_usage)

    async def aclose(self) -> None:
        """Close the HTTP pool, and write the queued usage rows (their writer stops)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = self._http_loop = None
        if self.pool.usage.running:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.pool.close)

    async def __aenter__(self) -> LlmGateway:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # --- chat -------------------------------------------------------------------------------------

    def stream_chat(
        self,
        messages: Messages,
        *,
        model: str,
        user_id: int | None = None,
        assistant_id: int | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        cancel: CancelToken | None = None,
        timeout_secs: float | None = None,
        first_chunk_timeout_secs: float | None = None,
        reserved_key: PoolKey | None = None,
    ) -> ChatStream:
        """A streamed answer; nothing is sent until it is iterated. `reserved_key`: a key the
        caller reserved with `pool.acquire_in()`, tried first (given back if never used)."""
        request = ChatRequest(
            messages=tuple(messages), model=model,
            timeout_secs=timeout_secs or self.timeout_secs,
            first_chunk_timeout_secs=first_chunk_timeout_secs or self.first_chunk_timeout_secs,
            user_id=user_id, assistant_id=assistant_id, temperature=temperature,
            max_tokens=max_tokens, cancel=cancel,
        )
        return ChatStream(self.pool, self.client_for, request, reserved_key)

    async def complete_chat(
        self,
        messages: Messages,
        *,
        model: str,
        user_id: int | None = None,
        assistant_id: int | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        cancel: CancelToken | None = None,
        timeout_secs: float | None = None,
    ) -> str:
        """The whole answer at once (no streaming), e.g. for Telegram."""
        request = ChatRequest(
            messages=tuple(messages), model=model,
            timeout_secs=timeout_secs or self.timeout_secs,
            first_chunk_timeout_secs=timeout_secs or self.timeout_secs,
            user_id=user_id, assistant_id=assistant_id, temperature=temperature,
            max_tokens=max_tokens, cancel=cancel,
        )

        def invoke(client: AsyncOpenAI, timeout: float) -> Awaitable[Any]:
            return client.chat.completions.create(**request.create_kwargs(), timeout=timeout)

        def usage_of(response: Any) -> Usage:
            if response.usage is not None:
                return Usage(response.usage.prompt_tokens, response.usage.completion_tokens)
            return Usage(estimate_prompt_tokens(request.messages),
                         estimate_tokens(_answer_text(response)), estimated=True)

        call = CallInfo(model, "chat", user_id, assistant_id)
        response = await self._unary(call, invoke, usage_of, cancel, request.timeout_secs)
        return _answer_text(response)

    # --- embeddings -------------------------------------------------------------------------------

    async def embed(
        self,
        texts: Sequence[str],
        model: str | None = None,
        *,
        user_id: int | None = None,
        assistant_id: int | None = None,
        cancel: CancelToken | None = None,
        timeout_secs: float | None = None,
    ) -> list[list[float]]:
        """One vector per text, in order (model: argument, EMBEDDINGS_MODEL, or the default)."""
        if not texts:
            return []
        model = model or self.settings.embeddings_model or DEFAULT_EMBEDDINGS_MODEL
        inputs = list(texts)

        def invoke(client: AsyncOpenAI, timeout: float) -> Awaitable[Any]:
            return client.embeddings.create(model=model, input=inputs, timeout=timeout)

        def usage_of(response: Any) -> Usage:
            if response.usage is not None:
                return Usage(response.usage.prompt_tokens, 0)
            return Usage(sum(estimate_tokens(text) for text in inputs), 0, estimated=True)

        call = CallInfo(model, "embedding", user_id, assistant_id)
        response = await self._unary(call, invoke, usage_of, cancel,
                                     timeout_secs or self.timeout_secs)
        ordered = sorted(response.data, key=lambda item: item.index)
        if len(ordered) != len(inputs):
            raise LlmFailed(f"expected {len(inputs)} embeddings, got {len(ordered)}")
        return [list(item.embedding) for item in ordered]

    # --- the key walk of one-shot calls -----------------------------------------------------------

    async def _unary(
        self,
        call: CallInfo,
        invoke: Callable[[AsyncOpenAI, float], Awaitable[Result]],
        usage_of: Callable[[Result], Usage],
        cancel: CancelToken | None,
        timeout_secs: float,
    ) -> Result:
        cursor = KeyCursor(self.pool, call.model)
        waiter = cancel_waiter(cancel)
        try:
            while True:
                if cancel is not None and cancel.is_cancelled:
                    raise LlmCancelled("cancelled")
                key = await cursor.next_key()
                if key is None:
                    raise cursor.exhausted()
                client = self.client_for(key)
                started = time.monotonic()
                try:
                    result = await race(invoke(client, timeout_secs), waiter,
                                        started + timeout_secs)
                except Cancelled:
                    await cursor.settle(key, call, _ended(started, error="cancelled"))
                    raise LlmCancelled("cancelled") from None
                except HANDLED_ERRORS as exc:
                    failure = classify(exc)
                    await cursor.settle(key, call, _ended(
                        started, error=failure.reason, key_fault=failure.key_fault,
                        rest=failure.rest,
                    ))
                    if not failure.failover:
                        raise LlmFailed(failure.reason) from exc
                    continue
                except BaseException:
                    await cursor.settle(key, call, _ended(started, error="cancelled"))
                    raise
                await cursor.settle(key, call, _ended(started, usage_of(result)))
                return result
        finally:
            if waiter is not None:
                waiter.cancel()


def _ended(started: float, usage: Usage | None = None, **failure: Any) -> Outcome:
    """The outcome of an attempt begun at `started`: a success with usage, or a failure."""
    elapsed = time.monotonic() - started
    if usage is not None:
        return Outcome(True, usage, elapsed)
    return Outcome(False, NO_USAGE, elapsed, **failure)


def _answer_text(response: Any) -> str:
    if not response.choices:
        return ""
    return response.choices[0].message.content or ""

