"""Request/response models shared by several door modules, and their renderers.

Request models forbid unknown fields (`Strict` base) unless the spec says a field is
tolerated; response models exist for the OpenAPI document, handlers return plain dicts built
by the `render_*` functions here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from server.store.types import iso
from server.store.users import UserRecord


class Strict(BaseModel):
    """Base of request bodies: unknown fields are a 422, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class Lenient(BaseModel):
    """Base of query-string models: clients add cache-busters, so extra keys are ignored."""

    model_config = ConfigDict(extra="ignore")


class UserRead(BaseModel):
    id: int
    email: str
    role: str
    status: str
    created_at: str
    first_name: str | None


class MessageOut(BaseModel):
    message: str


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str


def render_user(user: UserRecord) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "status": user.status,
        "created_at": iso(user.created_at),
        "first_name": user.first_name,
    }


def render_tokens(access_token: str, refresh_token: str) -> dict[str, Any]:
    """The answer of every door that signs a user in (login, refresh, confirm, password)."""
    return {"access_token": access_token, "refresh_token": refresh_token, "token_type": "bearer"}
