"""Doors of the `admin` module: balances, the legacy per-user OpenAI key, the AI key pool."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import Field, field_validator

from server.billing import do_topup
from server.context import Services
from server.errors import not_found
from server.http.routing import ApiRouter, Call
from server.http.schemas import Strict
from server.store import legacy_tokens
from server.store import users as user_store
from server.store.types import iso

router = ApiRouter("admin")

MAX_ADJUSTMENT = Decimal("1000000000")


class TopUpIn(Strict):
    amount: Decimal
    description: str | None = Field(default=None, max_length=500)

    @field_validator("amount", mode="before")
    @classmethod
    def _exact(cls, value: Any) -> Any:
        # JSON floats arrive as floats; go through their repr so 0.1 stays 0.1.
        if isinstance(value, bool):
            raise ValueError("amount must be a number")
        if isinstance(value, float):
            return Decimal(repr(value))
        return value

    @field_validator("amount")
    @classmethod
    def _range(cls, value: Decimal) -> Decimal:
        try:
            quantized = value.quantize(Decimal("0.01"))
        except InvalidOperation as exc:
            raise ValueError("amount is out of range") from exc
        if quantized != value:
            raise ValueError("amount has more than two decimal places")
        if value == 0 or abs(value) >= MAX_ADJUSTMENT:
            raise ValueError("amount must be non-zero and below 1e9 in magnitude")
        return quantized


class TopUpOut(Strict):
    message: str
    old_balance: float
    new_balance: float
    transaction_id: int


class OpenAITokenIn(Strict):
    token: str = Field(min_length=1, max_length=500)


class OpenAITokenOut(Strict):
    id: int
    user_id: int
    token: str
    created_at: str


@router.route(
    "POST", "/api/admin/users/{user_id}/balance/topup", auth="admin", body=TopUpIn,
    response=TopUpOut, summary="Credit or debit a user's balance (admin_adjustment)",
)
async def topup(call: Call) -> dict[str, Any]:
    body: TopUpIn = call.body
    return await call.run(
        do_topup, call.services.db, call.user.id, call.path["user_id"], body.amount,
        body.description,
    )


def _openai_token(services: Services, user_id: int) -> dict[str, Any]:
    with services.db.read() as session:
        token = legacy_tokens.get_openai_token(session, user_id)
    if token is None:
        raise not_found("OpenAI token not set")
    return {"id": token.id, "user_id": token.user_id, "token": token.token,
            "created_at": iso(token.created_at)}


def _set_openai_token(services: Services, user_id: int, value: str) -> dict[str, Any]:
    with services.db.write() as session:
        if user_store.get_user(session, user_id) is None:
            raise not_found("User not found")
        token = legacy_tokens.set_openai_token(session, user_id, value)
    return {"id": token.id, "user_id": token.user_id, "token": token.token,
            "created_at": iso(token.created_at)}


@router.route(
    "GET", "/api/admin/openai-token/{user_id}", auth="admin", response=OpenAITokenOut,
    summary="Legacy per-user OpenAI key",
)
async def get_openai_token(call: Call) -> dict[str, Any]:
    return await call.run(_openai_token, call.services, call.path["user_id"])


@router.route(
    "POST", "/api/admin/openai-token/{user_id}", auth="admin", body=OpenAITokenIn,
    response=OpenAITokenOut, summary="Set the legacy per-user OpenAI key",
)
async def set_openai_token(call: Call) -> dict[str, Any]:
    return await call.run(_set_openai_token, call.services, call.path["user_id"], call.body.token)
