"""Build the Starlette app: routes from every door module, error handlers, the lifespan.

`create_app(settings)` builds everything from settings; nothing is created at import time.
The lifespan migrates the embedded database, starts the mail dispatcher, and on shutdown
stops them and closes the pools.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

import anyio
from anyio import to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.actors.runtime import freeze_gc
from server.billing import seed_prices
from server.config import Settings, load_settings
from server.context import Services, build_services
from server.http import (
    admin,
    ai_chat,
    assistants,
    auth,
    dialogs,
    documents,
    email,
    handoff,
    messages,
    operator,
    site,
    system,
    users,
)
from server.http.errors import EXCEPTION_HANDLERS
from server.http.routing import ApiRouter, Endpoint
from server.live import LiveSystem
from server.ws.routes import routes as ws_routes

log = logging.getLogger(__name__)

DOOR_MODULES = (
    auth, email, users, admin, assistants, documents, ai_chat, operator, handoff, messages, system,
    dialogs, site,
)


def all_endpoints() -> list[Endpoint]:
    """Every endpoint of every door module (a module may hold several spec modules' routers)."""
    return [
        endpoint
        for module in DOOR_MODULES
        for router in vars(module).values()
        if isinstance(router, ApiRouter)
        for endpoint in router.endpoints
    ]


class MetricsMiddleware:
    """Counts requests by route template (not raw path, so ids do not explode the labels)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics = scope["app"].state.services.metrics
            metrics.observe_request(
                scope["method"], template, status, time.perf_counter() - started
            )


def create_app(settings: Settings | None = None, services: Services | None = None) -> Starlette:
    if services is None:
        services = build_services(settings or load_settings())
    endpoints = all_endpoints()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if services.settings.auto_migrate:
            await to_thread.run_sync(services.db.migrate)
        await to_thread.run_sync(seed_prices, services.db)
        services.live = await LiveSystem.start(services)
        try:
            async with anyio.create_task_group() as background:
                background.start_soon(services.mailer.run, name="mail-dispatcher")
                log.info("server started", extra={"database": services.db.engine.dialect.name})
                freeze_gc()  # start-up garbage is permanent: keep it out of later collections
                try:
                    yield
                finally:
                    # An anyio cancel waits for a worker thread in flight (a plain
                    # task.cancel() does not), so no session outlives the pool disposed below.
                    background.cancel_scope.cancel()
        finally:
            live, services.live = services.live, None
            await live.stop()
            await services.aclose()
            services.db.dispose()

    app = Starlette(
        routes=[endpoint.starlette_route() for endpoint in endpoints]
        + system.extra_routes()
        + ws_routes(),
        middleware=[Middleware(MetricsMiddleware)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # spec §1.1: a trailing slash is another path
    app.state.services = services
    app.state.endpoints = endpoints
    return app
