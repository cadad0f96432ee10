"""Doors of the `users` module (being written)."""

from __future__ import annotations

from server.http.routing import ApiRouter

router = ApiRouter("users")
