"""Which key serves the next LLM call, and what the call's outcome does to the pool (§9.6).

Blocking store work, called by the gateway through `anyio.to_thread` (or by the answer engine
inside its own transaction): `acquire()` picks the best key for a model that was not tried yet
and reserves one request on it in the same transaction (atomic counters, see
`server/store/ai_keys.py`); when the pool has nothing left it hands out the `OPENAI_API_KEY`
fallback once (no counters, usage rows with `token_id` NULL). `settle()` writes the outcome:
the key's error state at once (it steers the next pick) and one `ai_token_usage` row per
attempt through the background `UsageWriter` (nobody waits for it; `flush_usage()` does).
`KeyCursor` is the async face of both for one call (each key at most once).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

import anyio
from sqlalchemy.orm import Session

from server.ai.llm_errors import LlmError, LlmFailed, NoKeyAvailable
from server.ai.usage_writer import UsageWriter
from server.config import Settings
from server.store import ai_keys, ai_usage
from server.store.db import Database

PROVIDER = "openai"
KEY_REST_SECS = 300
FALLBACK_NAME = "OPENAI_API_KEY"


@dataclasses.dataclass(frozen=True, slots=True)
class PoolKey:
    token_id: int | None  # None: the OPENAI_API_KEY fallback
    name: str
    api_key: str
    base_url: str | None
    error_count: int = 0  # consecutive errors when it was picked


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


NO_USAGE = Usage(0, 0)


@dataclasses.dataclass(frozen=True, slots=True)
class CallInfo:
    """Who a call is for, as the usage log records it."""

    model: str
    request_type: str = "chat"  # chat | embedding
    user_id: int | None = None
    assistant_id: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    success: bool
    usage: Usage
    response_time: float
    error: str | None = None
    key_fault: bool = False  # counts as a consecutive error of the key
    rest: bool = False  # rest the key at once


def estimate_tokens(text: str) -> int:
    """≈ 4 characters per token; used when the server reports no usage."""
    return math.ceil(len(text) / 4) if text else 0


def estimate_prompt_tokens(messages: Iterable[Mapping[str, object]]) -> int:
    return sum(estimate_tokens(str(message.get("content") or "")) for message in messages)


class KeyPool:
    def __init__(self, db: Database, settings: Settings, *, rest_secs: int = KEY_REST_SECS):
        self._db = db
        self._settings = settings
        self._rest_secs = rest_secs
        self.usage = UsageWriter(db)

    @property
    def fallback(self) -> PoolKey | None:
        if not self._settings.openai_api_key:
            return None
        return PoolKey(None, FALLBACK_NAME, self._settings.openai_api_key,
                       self._settings.openai_base_url)

    def has_any_key(self) -> bool:
        if self._settings.openai_api_key:
            return True
        with self._db.read() as session:
            return ai_keys.has_active_key(session)

    def has_any_key_in(self, session: Session) -> bool:
        """The same answer inside the caller's transaction."""
        return bool(self._settings.openai_api_key) or ai_keys.has_active_key(session)

    def acquire(self, model: str, tried: frozenset[int], fallback_tried: bool) -> PoolKey | None:
        """Reserve the best untried pool key for `model`, else the fallback once, else None."""
        with self._db.write() as session:
            return self.acquire_in(session, model, tried, fallback_tried)

    def acquire_in(self, session: Session, model: str, tried: frozenset[int] = frozenset(),
                   fallback_tried: bool = False) -> PoolKey | None:
        """`acquire()` inside the caller's write transaction (its rollback undoes the
        reservation)."""
        for candidate in ai_keys.candidates_for(session, model):
            if candidate.id in tried:
                continue
            # A candidate filled up by a concurrent call since it was listed is skipped.
            if ai_keys.reserve(session, candidate.id):
                return PoolKey(candidate.id, candidate.name, candidate.api_key,
                               candidate.base_url or self._settings.openai_base_url,
                               candidate.error_count)
        return None if fallback_tried else self.fallback

    def release(self, key: PoolKey) -> None:
        """Give back the reservation of a key whose request was never sent."""
        if key.token_id is not None:
            with self._db.write() as session:
                ai_keys.release(session, key.token_id)

    @staticmethod
    def changes_key_state(key: PoolKey, outcome: Outcome) -> bool:
        """Whether settling this outcome writes the key's row (rare: after errors)."""
        if key.token_id is None:
            return False
        return bool(key.error_count) if outcome.success else outcome.key_fault

    def settle(self, key: PoolKey, call: CallInfo, outcome: Outcome) -> None:
        """Record one attempt (blocking): the key's error state now, the usage row queued."""
        if self.changes_key_state(key, outcome):
            self.record_key_state(key, outcome)
        self.log_usage(key, call, outcome)

    def record_key_state(self, key: PoolKey, outcome: Outcome) -> None:
        """Clear the key's error streak after a success, or count a failure (and rest it)."""
        assert key.token_id is not None
        with self._db.write() as session:
            if outcome.success:
                ai_keys.record_success(session, key.token_id)
            else:
                ai_keys.record_failure(session, key.token_id, outcome.error or "failed",
                                       rest=outcome.rest, rest_secs=self._rest_secs)

    def log_usage(self, key: PoolKey, call: CallInfo, outcome: Outcome) -> None:
        """Queue the attempt's usage row (returns at once; safe on the event loop)."""
        self.usage.submit(ai_usage.usage_values(
            token_id=key.token_id,
            user_id=call.user_id,
            assistant_id=call.assistant_id,
            provider=PROVIDER,
            model=call.model,
            prompt_tokens=outcome.usage.prompt_tokens,
            completion_tokens=outcome.usage.completion_tokens,
            request_type=call.request_type,
            response_time=round(outcome.response_time, 4),
            success=outcome.success,
            error_message=outcome.error,
        ))

    def flush_usage(self) -> bool:
        """Block until every usage row queued so far is committed (False on timeout)."""
        return self.usage.flush()

    def close(self) -> bool:
        """Flush the usage rows and stop their writer (blocking)."""
        return self.usage.close()


class KeyCursor:
    """The keys one call walks through, best first, each reserved when handed out (async).

    `reserved`: a key the caller already reserved (the answer engine does so inside its
    prepare transaction); it is handed out first, without a trip to the store.
    """

    def __init__(self, pool: KeyPool, model: str, reserved: PoolKey | None = None) -> None:
        self._pool = pool
        self._model = model
        self._tried: set[int] = set()
        self._fallback_tried = False
        self._reserved = reserved
        self.failures: list[str] = []

    async def next_key(self) -> PoolKey | None:
        key, self._reserved = self._reserved, None
        if key is None:
            key = await anyio.to_thread.run_sync(
                self._pool.acquire, self._model, frozenset(self._tried), self._fallback_tried
            )
        if key is not None:
            if key.token_id is None:
                self._fallback_tried = True
            else:
                self._tried.add(key.token_id)
        return key

    async def release_unused(self) -> None:
        """Give back the caller's reservation when the call ends before using it."""
        key, self._reserved = self._reserved, None
        if key is not None and key.token_id is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._pool.release, key)

    async def settle(self, key: PoolKey, call: CallInfo, outcome: Outcome) -> None:
        """Record the attempt even while the calling task is being cancelled."""
        if not outcome.success and outcome.error:
            self.failures.append(f"{key.name}: {outcome.error}")
        if self._pool.changes_key_state(key, outcome):
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._pool.record_key_state, key, outcome)
        self._pool.log_usage(key, call, outcome)

    def exhausted(self) -> LlmError:
        """The error to raise when no key is left: none at all, or all failed."""
        if not self._tried and not self._fallback_tried:
            return NoKeyAvailable(self._model)
        return LlmFailed("every AI key failed: " + "; ".join(self.failures[-5:]))
