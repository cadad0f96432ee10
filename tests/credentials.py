"""Credentials shared by the fixtures and the tests (a plain module: `conftest` is a name that
several test folders use, so tests never import from it)."""

from __future__ import annotations

SERVICE_TOKEN = "test-service-token-0123456789"
DEFAULT_PASSWORD = "Sturdy-pass-42"
