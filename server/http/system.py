"""Operations doors (DESIGN.md §10, spec §5.C): health, readiness, metrics, API docs.

Health and readiness are `ApiRouter` endpoints (auth `none`, so they are in the OpenAPI
document); metrics, the document itself and the docs page are plain Starlette routes.

- `GET /health` (alias `/api/healthz`): the process answers; touches nothing else.
- `GET /ready` (alias `/api/readyz`): the database answers, and Redis when configured; each
  check is bounded by `READY_CHECK_TIMEOUT_SECS` so a hung dependency gives a 503, not a hang.
- `GET /metrics`: Prometheus text exposition of this process's registry.
- `GET /openapi.json`: the generated 3.1 document, built once per app.
- `GET /docs`: Swagger UI from local static files.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import anyio
from anyio import to_thread
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from server.context import Services
from server.errors import AppError, ErrorCode
from server.http.docs import (
    DOCS_PAGE,
    OPENAPI_30_PATH,
    STATIC_PREFIX,
    SWAGGER_UI_DIR,
    as_openapi_30,
)
from server.http.openapi import build_document
from server.http.routing import ApiRouter, Call, JSONResponse

log = logging.getLogger(__name__)

router = ApiRouter("system")

READY_CHECK_TIMEOUT_SECS = 3.0
# Threads a hung database can hold at once: a probe that cannot get one fails by its timeout
# instead of taking the request threads every other endpoint needs.
READY_PROBE_THREADS = 4

Probe = Callable[[], Awaitable[bool]]


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str]


@router.route("GET", "/health", auth="none", response=HealthOut, aliases=("/api/healthz",),
              summary="Liveness: the process answers (touches nothing else)")
async def health(_call: Call) -> dict[str, Any]:
    return {"status": "ok"}


async def run_check(probe: Probe, timeout_secs: float | None = None) -> str:
    """One check's verdict: ok, error or timeout. Never raises; never outlasts its timeout."""
    try:
        with anyio.fail_after(timeout_secs or READY_CHECK_TIMEOUT_SECS):
            healthy = await probe()
    except TimeoutError:
        return "timeout"
    except Exception as exc:  # a dependency down is the answer, not a crash
        log.warning("readiness check failed: %s", exc.__class__.__name__)
        return "error"
    return "ok" if healthy else "error"


def _database_probe(request: Request, services: Services) -> Probe:
    state = request.app.state
    if getattr(state, "ready_threads", None) is None:
        state.ready_threads = anyio.CapacityLimiter(READY_PROBE_THREADS)
    limiter: anyio.CapacityLimiter = state.ready_threads

    async def probe() -> bool:
        await to_thread.run_sync(services.db.ping, abandon_on_cancel=True, limiter=limiter)
        return True

    return probe


@router.route("GET", "/ready", auth="none", response=ReadyOut, aliases=("/api/readyz",),
              errors=(503,), summary="Readiness: the database (and Redis when configured) answer")
async def ready(call: Call) -> dict[str, Any]:
    request, services = call.request, call.services
    database_check = run_check(_database_probe(request, services))
    if services.settings.redis_url is None:
        database = await database_check
        checks = {"database": database, "redis": "not_configured"}
    else:
        database, redis = await asyncio.gather(database_check, run_check(services.limiter.ping))
        checks = {"database": database, "redis": redis}
    if any(value not in ("ok", "not_configured") for value in checks.values()):
        raise AppError(ErrorCode.SERVICE_UNAVAILABLE, {"checks": checks})
    return {"status": "ready", "checks": checks}


async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    return Response(services.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def openapi_document(request: Request) -> dict[str, Any]:
    """Built on first use and kept on the app: the endpoints never change after start-up."""
    state = request.app.state
    document = getattr(state, "openapi_document", None)
    if document is None:
        document = build_document(state.endpoints)
        state.openapi_document = document
    return document


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document(request))


async def openapi_30_json(request: Request) -> Response:
    state = request.app.state
    converted = getattr(state, "openapi_30_document", None)
    if converted is None:
        converted = as_openapi_30(openapi_document(request))
        state.openapi_30_document = converted
    return JSONResponse(converted)


async def docs(_request: Request) -> Response:
    return HTMLResponse(DOCS_PAGE)


def extra_routes() -> list[BaseRoute]:
    return [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route(OPENAPI_30_PATH, openapi_30_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Mount(STATIC_PREFIX, app=StaticFiles(directory=SWAGGER_UI_DIR), name="docs-static"),
    ]
