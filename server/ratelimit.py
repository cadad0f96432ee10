"""Per-identifier sliding-window rate limits (spec §2.5), on memory or Redis storage.

The identifier is `user_<id>` for an authenticated caller, else `ip_<addr>` (plus the e-mail
for the account-scoped rules), never one global bucket. With `REDIS_URL` every process shares
the counters; if Redis goes away the limiter falls back to its in-process storage rather than
failing requests, and reports `redis_unavailable` for the Redis-backed stats.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import ConnectionPool

from server.errors import AppError, ConfigError, ErrorCode

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    namespace: str
    limit: int
    window_secs: int


# Values of spec §2.5's table (the "intended limits" column) and §4.2's namespaces. The
# general and admin budgets are wider than the original's 100 and 200 an hour: those numbers
# were never enforced there (one global bucket), and a dashboard polls more than that.
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("api_general", 10000, 3600),
    Rule("admin", 5000, 3600),
    Rule("metrics", 20, 300),
    Rule("register", 50, 3600),
    Rule("login", 100, 300),
    Rule("login_account", 10, 300),
    Rule("change_password", 10, 300),
    Rule("logout", 20, 60),
    Rule("password_reset", 100, 60),
    Rule("password_reset_account", 5, 900),
    Rule("resend_email_code", 3, 3600),
    Rule("confirm_email", 30, 900),
    Rule("admin_create_user", 20, 60),
    Rule("admin_delete_user", 10, 60),
    Rule("document_upload", 10, 300),
    Rule("refresh_token", 60, 300),
    Rule("test_send", 10, 3600),
    Rule("landing_chat", 30, 60),
    Rule("handoff_request", 3, 60),  # per dialog: transitions to `requested` (spec §4.9)
    Rule("visitor_message", 60, 60),  # per dialog, REST posts of site/widget visitors
)

# Namespaces `GET /api/me/rate-limits` reports for a user identifier.
USER_NAMESPACES = ("api_general", "metrics", "admin", "change_password", "logout")


def parse_overrides(raw: str | None) -> dict[str, tuple[int, int]]:
    """`RATE_LIMITS="login=10/300,register=5/3600"` → {namespace: (limit, window_secs)}."""
    overrides: dict[str, tuple[int, int]] = {}
    for part in filter(None, (p.strip() for p in (raw or "").split(","))):
        try:
            name, value = part.split("=", 1)
            limit, window = value.split("/", 1)
            overrides[name.strip()] = (int(limit), int(window))
        except ValueError as exc:
            raise ConfigError(f"bad RATE_LIMITS entry {part!r}; expected name=limit/secs") from exc
    return overrides


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    limit: int
    remaining: int
    reset_at: float
    window_secs: int

    @property
    def current(self) -> int:
        return self.limit - self.remaining

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.remaining, 0)),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }


class RateLimiter:
    def __init__(
        self,
        redis_url: str | None = None,
        *,
        enabled: bool = True,
        overrides: dict[str, tuple[int, int]] | None = None,
        key_prefix: str = "replyx:rl",
    ) -> None:
        self.enabled = enabled
        self.uses_redis = redis_url is not None
        self._memory = MovingWindowRateLimiter(MemoryStorage())
        self._storage: Storage = MemoryStorage()
        # Our own pool, so that close() can release its sockets (limits offers no close).
        self._redis_pool: ConnectionPool | None = None
        if redis_url is not None:
            plain = redis_url.removeprefix("async+")
            self._redis_pool = ConnectionPool.from_url(plain)
            self._storage = RedisStorage(
                "async+" + plain,
                implementation="redispy",
                key_prefix=key_prefix,
                connection_pool=self._redis_pool,
            )
        self._limiter = MovingWindowRateLimiter(self._storage)
        rules = {rule.namespace: rule for rule in DEFAULT_RULES}
        for name, (limit, window) in (overrides or {}).items():
            rules[name] = Rule(name, limit, window)
        self.rules = rules

    def rule(self, namespace: str) -> Rule:
        return self.rules[namespace]

    @staticmethod
    def _item(rule: Rule) -> RateLimitItemPerSecond:
        return RateLimitItemPerSecond(rule.limit, rule.window_secs, namespace=rule.namespace)

    async def hit(self, namespace: str, identifier: str) -> Usage | None:
        """Count one request; raise 429 with Retry-After when the window is full."""
        if not self.enabled:
            return None
        rule = self.rules[namespace]
        item = self._item(rule)
        try:
            allowed = await self._limiter.hit(item, identifier)
            stats = await self._limiter.get_window_stats(item, identifier)
        except Exception as exc:  # storage down: keep limiting, per process
            log.warning("rate limit storage unavailable, using memory: %s", exc)
            allowed = await self._memory.hit(item, identifier)
            stats = await self._memory.get_window_stats(item, identifier)
        usage = Usage(rule.limit, stats.remaining, stats.reset_time, rule.window_secs)
        if not allowed:
            retry_after = max(1, math.ceil(stats.reset_time - time.time()))
            headers = usage.headers() | {"Retry-After": str(retry_after)}
            raise AppError(
                ErrorCode.RATE_LIMITED,
                f"Too many requests; retry in {retry_after} s",
                headers=headers,
            )
        return usage

    async def usage(self, namespace: str, identifier: str) -> Usage | None:
        """The current window without counting a request; None when Redis cannot answer."""
        rule = self.rules[namespace]
        try:
            stats = await self._limiter.get_window_stats(self._item(rule), identifier)
        except Exception as exc:
            log.warning("rate limit storage unavailable: %s", exc)
            return None
        return Usage(rule.limit, stats.remaining, stats.reset_time, rule.window_secs)

    async def reset(self) -> None:
        await self._storage.reset()
        await self._memory.storage.reset()

    async def close(self) -> None:
        """Release the Redis connections (the app's lifespan calls this on shutdown)."""
        if self._redis_pool is not None:
            await self._redis_pool.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self._storage.check())
        except Exception:
            return False
