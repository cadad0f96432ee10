"""The long-lived services one app instance is built from (no import-time singletons).

`build_services()` wires them from `Settings`; the app's lifespan starts and stops them; doors
reach them through `request.app.state.services`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from server.ai.engine import AnswerEngine
from server.ai.llm import LlmGateway
from server.config import Settings
from server.landing_sessions import SessionStore, build_session_store
from server.mail import Mailer
from server.metrics import Metrics
from server.ratelimit import RateLimiter, parse_overrides
from server.security import PasswordHasher, SiteTokens, TokenService
from server.store.db import Database

if TYPE_CHECKING:
    from server.live import LiveSystem


@dataclasses.dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    hasher: PasswordHasher
    tokens: TokenService
    site_tokens: SiteTokens
    limiter: RateLimiter
    mailer: Mailer
    metrics: Metrics
    llm: LlmGateway
    engine: AnswerEngine
    landing_sessions: SessionStore
    # The actors, the store writer and the event bus: they need the running loop, so the
    # lifespan starts them (None before start-up and after shutdown).
    live: LiveSystem | None = None

    @property
    def live_system(self) -> LiveSystem:
        if self.live is None:
            from server.errors import AppError, ErrorCode

            raise AppError(ErrorCode.SERVICE_UNAVAILABLE, "Live chat is not running", status=503)
        return self.live

    async def aclose(self) -> None:
        """Release what the event loop holds (HTTP pools, Redis connections)."""
        await self.llm.aclose()
        await self.limiter.close()
        await self.landing_sessions.close()


def build_services(settings: Settings, *, rate_limit_prefix: str = "replyx:rl") -> Services:
    if not settings.secret_key or not settings.site_secret:
        raise ValueError("settings must carry secrets; use load_settings() or with_secrets()")
    db = Database(settings.database_url)
    llm = LlmGateway(settings, db)
    return Services(
        settings=settings,
        db=db,
        hasher=PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_kib=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        ),
        tokens=TokenService(
            settings.secret_key,
            settings.jwt_access_token_expire_minutes,
            settings.jwt_refresh_token_expire_days,
        ),
        site_tokens=SiteTokens(settings.site_secret),
        limiter=RateLimiter(
            settings.redis_url,
            enabled=settings.rate_limit_enabled,
            overrides=parse_overrides(settings.rate_limits),
            key_prefix=rate_limit_prefix,
        ),
        mailer=Mailer(db, settings),
        metrics=Metrics(),
        llm=llm,
        engine=AnswerEngine(db, llm),
        landing_sessions=build_session_store(
            settings.redis_url, prefix=f"{rate_limit_prefix}:landing:"
        ),
    )
