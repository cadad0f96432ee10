"""The sliding-window rate limiter, on in-process storage and on a real Redis (spec §2.5)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from server.errors import AppError, ErrorCode
from server.ratelimit import RateLimiter

CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"
LIMIT = 3
WINDOW_SECS = 60
RULES = {"probe": (LIMIT, WINDOW_SECS), "other": (LIMIT, WINDOW_SECS)}

MakeLimiter = Callable[..., Awaitable[RateLimiter]]


@pytest.fixture
async def make_any_limiter() -> AsyncIterator[MakeLimiter]:
    """Limiters on a given storage URL, each with its own key prefix; closed afterwards."""
    made: list[RateLimiter] = []

    async def make(url: str | None, **kwargs: object) -> RateLimiter:
        limiter = RateLimiter(
            url, overrides=dict(RULES), key_prefix=f"test-rl:{uuid.uuid4().hex}", **kwargs
        )
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()


@pytest.fixture
def make_limiter(redis_url: str | None, make_any_limiter: MakeLimiter) -> MakeLimiter:
    """Limiters on the parametrised storage (memory, or Redis from TEST_REDIS_URL)."""

    async def make(**kwargs: object) -> RateLimiter:
        return await make_any_limiter(redis_url, **kwargs)

    return make


@pytest.fixture
async def limiter(make_limiter: MakeLimiter) -> RateLimiter:
    return await make_limiter()


async def _exhaust(limiter: RateLimiter, identifier: str, namespace: str = "probe") -> None:
    for _ in range(LIMIT):
        await limiter.hit(namespace, identifier)


async def test_requests_under_the_limit_pass(limiter: RateLimiter) -> None:
    for expected_remaining in range(LIMIT - 1, -1, -1):
        usage = await limiter.hit("probe", "ip_1")
        assert usage is not None
        assert usage.remaining == expected_remaining


async def test_request_over_the_limit_is_429_with_headers(limiter: RateLimiter) -> None:
    await _exhaust(limiter, "ip_1")
    with pytest.raises(AppError) as refused:
        await limiter.hit("probe", "ip_1")
    error = refused.value
    assert error.status == 429
    assert error.code is ErrorCode.RATE_LIMITED
    assert 1 <= int(error.headers["Retry-After"]) <= WINDOW_SECS
    assert error.headers["X-RateLimit-Limit"] == str(LIMIT)
    assert error.headers["X-RateLimit-Remaining"] == "0"
    assert int(error.headers["X-RateLimit-Reset"]) <= time.time() + WINDOW_SECS + 1


async def test_identifiers_do_not_share_a_bucket(limiter: RateLimiter) -> None:
    await _exhaust(limiter, "user_1")
    with pytest.raises(AppError):
        await limiter.hit("probe", "user_1")
    usage = await limiter.hit("probe", "user_2")
    assert usage is not None and usage.remaining == LIMIT - 1


async def test_namespaces_do_not_share_a_bucket(limiter: RateLimiter) -> None:
    await _exhaust(limiter, "user_1", "probe")
    usage = await limiter.hit("other", "user_1")
    assert usage is not None and usage.remaining == LIMIT - 1


async def test_limiters_with_different_prefixes_do_not_share_counters(
    make_limiter: MakeLimiter,
) -> None:
    first, second = await make_limiter(), await make_limiter()
    await _exhaust(first, "ip_1")
    usage = await second.hit("probe", "ip_1")
    assert usage is not None and usage.remaining == LIMIT - 1


async def test_usage_reports_the_window_without_counting(limiter: RateLimiter) -> None:
    await limiter.hit("probe", "user_7")
    await limiter.hit("probe", "user_7")
    for _ in range(2):
        usage = await limiter.usage("probe", "user_7")
        assert usage is not None
        assert (usage.current, usage.remaining, usage.limit) == (2, LIMIT - 2, LIMIT)
        assert usage.window_secs == WINDOW_SECS


async def test_usage_of_an_unseen_identifier_is_zero(limiter: RateLimiter) -> None:
    usage = await limiter.usage("probe", "nobody")
    assert usage is not None
    assert (usage.current, usage.remaining) == (0, LIMIT)


async def test_refused_requests_do_not_extend_the_count(limiter: RateLimiter) -> None:
    await _exhaust(limiter, "ip_9")
    for _ in range(3):
        with pytest.raises(AppError):
            await limiter.hit("probe", "ip_9")
    usage = await limiter.usage("probe", "ip_9")
    assert usage is not None and usage.current == LIMIT


async def test_disabled_limiter_never_refuses(make_limiter: MakeLimiter) -> None:
    limiter = await make_limiter(enabled=False)
    for _ in range(LIMIT * 3):
        assert await limiter.hit("probe", "ip_1") is None


async def test_unreachable_redis_falls_back_to_memory_limiting(
    make_any_limiter: MakeLimiter,
) -> None:
    limiter = await make_any_limiter(CLOSED_PORT_REDIS)
    usage = await limiter.hit("probe", "ip_1")
    assert usage is not None and usage.remaining == LIMIT - 1
    await limiter.hit("probe", "ip_1")
    await limiter.hit("probe", "ip_1")
    with pytest.raises(AppError) as refused:
        await limiter.hit("probe", "ip_1")
    assert refused.value.status == 429


async def test_unreachable_redis_reports_no_usage_and_fails_ping(
    make_any_limiter: MakeLimiter,
) -> None:
    limiter = await make_any_limiter(CLOSED_PORT_REDIS)
    assert await limiter.usage("probe", "ip_1") is None
    assert await limiter.ping() is False


async def test_reachable_storage_pings(limiter: RateLimiter) -> None:
    assert await limiter.ping() is True
