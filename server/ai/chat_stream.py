"""One streamed chat answer over the key pool: iterate it for text deltas, then read the result.

    stream = gateway.stream_chat(messages, model="gpt-4o-mini", cancel=token)
    async with stream:
        async for delta in stream:
            publish(delta)
    stream.outcome, stream.text, stream.usage, stream.token_id

Keys are tried best first. A key that fails BEFORE any text was delivered (401/429/5xx,
timeout, connection error, malformed stream) is charged with the failure and the next key is
tried; once text was delivered a failure ends the answer with `LlmFailed` (restarting would
repeat text). When the `CancelToken` is set, reading stops at once, the HTTP stream is closed,
the attempt is logged as cancelled and nothing more is yielded. Iteration raises
`NoKeyAvailable` when no key may serve the model and `LlmFailed` when every key failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletionChunk

from server.ai.cancel import Cancelled, CancelToken, cancel_waiter, race
from server.ai.key_pool import (
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
from server.ai.llm_errors import HANDLED_ERRORS, Failure, LlmFailed, classify


@dataclasses.dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: Sequence[Mapping[str, Any]]
    model: str
    timeout_secs: float  # per attempt, from the request to the last chunk
    first_chunk_timeout_secs: float  # per attempt, until the first text arrives
    user_id: int | None = None
    assistant_id: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    cancel: CancelToken | None = None

    def create_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model, "messages": list(self.messages)}
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        return kwargs


class ChatStream:
    """Async-iterable of text deltas; `outcome` is pending, completed, cancelled or failed."""

    def __init__(
        self, pool: KeyPool, client_for: Callable[[PoolKey], AsyncOpenAI], request: ChatRequest,
        reserved_key: PoolKey | None = None,
    ) -> None:
        self._pool = pool
        self._client_for = client_for
        self.request = request
        self._reserved_key = reserved_key  # tried first; given back if never used
        self._parts: list[str] = []
        self.outcome = "pending"
        self.error: str | None = None
        self.usage: Usage | None = None
        self.token_id: int | None = None
        self.attempts = 0
        self._failure: Failure | None = None
        self._iterator = self._run()

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def cancelled(self) -> bool:
        return self.outcome == "cancelled"

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterator

    async def aclose(self) -> None:
        await self._iterator.aclose()

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _cancel_requested(self) -> bool:
        return self.request.cancel is not None and self.request.cancel.is_cancelled

    async def _run(self) -> AsyncGenerator[str, None]:
        call = CallInfo(self.request.model, "chat", self.request.user_id,
                        self.request.assistant_id)
        cursor = KeyCursor(self._pool, self.request.model, self._reserved_key)
        waiter = cancel_waiter(self.request.cancel)
        try:
            while True:
                if self._cancel_requested():
                    self.outcome, self.error = "cancelled", "cancelled"
                    return
                key = await cursor.next_key()
                if key is None:
                    error = cursor.exhausted()
                    self.outcome, self.error = "failed", str(error)
                    raise error
                self.attempts += 1
                self.token_id = key.token_id
                async with contextlib.aclosing(self._attempt(key, call, cursor, waiter)) as deltas:
                    async for delta in deltas:
                        yield delta
                if self.outcome != "pending":
                    return
                failure = self._failure
                assert failure is not None
                if self._parts or not failure.failover:
                    self.outcome, self.error = "failed", failure.reason
                    raise LlmFailed(failure.reason, partial_text=self.text)
        finally:
            if waiter is not None:
                waiter.cancel()
            await cursor.release_unused()

    async def _attempt(
        self, key: PoolKey, call: CallInfo, cursor: KeyCursor, waiter: Any
    ) -> AsyncGenerator[str, None]:
        """One key: yield its deltas; leave `outcome` pending and `_failure` set on failure."""
        request = self.request
        client = self._client_for(key)  # the first one builds the connection pool: not timed
        started = time.monotonic()
        deadline = started + request.timeout_secs
        first_deadline = min(deadline, started + request.first_chunk_timeout_secs)
        stream: Any = None
        reported: Usage | None = None
        kind, failure = "completed", None
        try:
            stream = await race(
                client.chat.completions.create(
                    **request.create_kwargs(), stream=True,
                    stream_options={"include_usage": True}, timeout=request.timeout_secs,
                ),
                waiter, first_deadline,
            )
            while True:
                chunk = await race(_next(stream), waiter,
                                   deadline if self._parts else first_deadline)
                if chunk is None:
                    break
                if chunk.usage is not None:
                    reported = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for delta in _deltas(chunk):
                    if self._cancel_requested():
                        raise Cancelled()
                    self._parts.append(delta)
                    yield delta
        except Cancelled:
            kind = "cancelled"
        except HANDLED_ERRORS as exc:
            kind, failure = "failed", classify(exc)
        except BaseException:
            kind = "cancelled"  # the consumer stopped iterating, or its task was cancelled
            raise
        finally:
            if stream is not None:
                with contextlib.suppress(*HANDLED_ERRORS):
                    await stream.close()
            usage = reported or self._estimate(kind)
            outcome = Outcome(
                success=kind == "completed", usage=usage,
                response_time=time.monotonic() - started,
                error=None if kind == "completed" else "cancelled" if failure is None
                else failure.reason,
                key_fault=failure is not None and failure.key_fault,
                rest=failure is not None and failure.rest,
            )
            await cursor.settle(key, call, outcome)
            if kind == "failed":
                self._failure = failure
            else:
                self.outcome, self.usage = kind, usage
                self.error = outcome.error

    def _estimate(self, kind: str) -> Usage:
        if kind == "failed" and not self._parts:
            return NO_USAGE
        return Usage(estimate_prompt_tokens(self.request.messages), estimate_tokens(self.text),
                     estimated=True)


async def _next(stream: AsyncStream[ChatCompletionChunk]) -> ChatCompletionChunk | None:
    """The next chunk, or None at the end of the stream."""
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


def _deltas(chunk: ChatCompletionChunk) -> list[str]:
    return [choice.delta.content for choice in chunk.choices
            if choice.delta is not None and choice.delta.content]
