"""Sessions of the landing-page sales chat: in Redis with a TTL, or in process memory.

A session is `{session_id, context, created_at, last_activity, messages}`; it expires after
`LANDING_SESSION_TTL_SECS` of inactivity and keeps at most `MAX_TURNS_KEPT` turns, so neither
store grows without bound. With `REDIS_URL` every process sees the same sessions.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from typing import Any, Protocol

import orjson

SESSION_TTL_SECS = 24 * 3600
MAX_TURNS_KEPT = 40
MAX_MEMORY_SESSIONS = 10_000
REDIS_PREFIX = "replyx:landing:"


@dataclasses.dataclass(slots=True)
class LandingSession:
    session_id: str
    context: Any
    created_at: float
    last_activity: float
    messages: list[dict[str, str]]

    @classmethod
    def new(cls, session_id: str, context: Any = None) -> LandingSession:
        now = time.time()
        return cls(session_id, context, now, now, [])

    def add_turn(self, role: str, content: str) -> None:
        self.messages.append({"role": role, "content": content})
        del self.messages[:-MAX_TURNS_KEPT]
        self.last_activity = time.time()

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> LandingSession:
        return cls(**orjson.loads(raw))


class SessionStore(Protocol):
    async def get(self, session_id: str) -> LandingSession | None: ...
    async def put(self, session: LandingSession) -> None: ...
    async def delete(self, session_id: str) -> bool: ...
    async def count(self) -> int: ...
    async def clear(self) -> int: ...
    async def close(self) -> None: ...


class MemorySessions:
    def __init__(self, ttl_secs: int = SESSION_TTL_SECS, capacity: int = MAX_MEMORY_SESSIONS):
        self._ttl = ttl_secs
        self._capacity = capacity
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def _expire(self) -> None:
        now = time.time()
        while self._items:
            key, (expires, _raw) = next(iter(self._items.items()))
            if expires > now and len(self._items) <= self._capacity:
                break
            self._items.pop(key)

    async def get(self, session_id: str) -> LandingSession | None:
        self._expire()
        item = self._items.get(session_id)
        return LandingSession.from_json(item[1]) if item else None

    async def put(self, session: LandingSession) -> None:
        self._items.pop(session.session_id, None)
        self._items[session.session_id] = (time.time() + self._ttl, session.to_json())
        self._expire()

    async def delete(self, session_id: str) -> bool:
        return self._items.pop(session_id, None) is not None

    async def count(self) -> int:
        self._expire()
        return len(self._items)

    async def clear(self) -> int:
        removed = len(self._items)
        self._items.clear()
        return removed

    async def close(self) -> None:
        return None


class RedisSessions:
    def __init__(self, redis_url: str, ttl_secs: int = SESSION_TTL_SECS,
                 prefix: str = REDIS_PREFIX) -> None:
        import redis.asyncio as redis_asyncio

        self._redis = redis_asyncio.from_url(redis_url)
        self._ttl = ttl_secs
        self._prefix = prefix

    async def get(self, session_id: str) -> LandingSession | None:
        raw = await self._redis.get(self._prefix + session_id)
        return LandingSession.from_json(raw) if raw else None

    async def put(self, session: LandingSession) -> None:
        await self._redis.set(self._prefix + session.session_id, session.to_json(), ex=self._ttl)

    async def delete(self, session_id: str) -> bool:
        return bool(await self._redis.delete(self._prefix + session_id))

    async def _keys(self) -> list[Any]:
        return [key async for key in self._redis.scan_iter(match=self._prefix + "*", count=500)]

    async def count(self) -> int:
        return len(await self._keys())

    async def clear(self) -> int:
        keys = await self._keys()
        if keys:
            await self._redis.delete(*keys)
        return len(keys)

    async def close(self) -> None:
        await self._redis.aclose()


def build_session_store(redis_url: str | None, prefix: str = REDIS_PREFIX) -> SessionStore:
    return RedisSessions(redis_url, prefix=prefix) if redis_url else MemorySessions()
