"""Doors of the `auth` module (being written)."""

from __future__ import annotations

from server.http.routing import ApiRouter

router = ApiRouter("auth")
