"""Operations doors (being written)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from server.http.routing import ApiRouter

router = ApiRouter("system")


def extra_routes() -> list[BaseRoute]:
    return []
