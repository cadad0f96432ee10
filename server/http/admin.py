"""Doors of the `admin` module: balances, the legacy per-user OpenAI key, the AI key pool."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, Field, field_validator

from server import admin_ai_keys
from server.billing import do_topup
from server.http.routing import ApiRouter, Call
from server.http.schemas import Strict

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


@router.route(
    "GET", "/api/admin/openai-token/{user_id}", auth="admin", response=OpenAITokenOut,
    summary="Legacy per-user OpenAI key",
)
async def get_openai_token(call: Call) -> dict[str, Any]:
    return await call.run(admin_ai_keys.legacy_openai_token, call.services.db, call.path["user_id"])


@router.route(
    "POST", "/api/admin/openai-token/{user_id}", auth="admin", body=OpenAITokenIn,
    response=OpenAITokenOut, summary="Set the legacy per-user OpenAI key",
)
async def set_openai_token(call: Call) -> dict[str, Any]:
    return await call.run(
        admin_ai_keys.do_set_legacy_openai_token, call.services.db, call.path["user_id"],
        call.body.token,
    )


# --- the AI key pool -------------------------------------------------------------------------

MODEL_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")


def _check_models(value: str | None) -> str | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names or len(names) > 50 or not all(MODEL_NAME.match(name) for name in names):
        raise ValueError("model_access must be a comma list of model names")
    return ",".join(names)
BASE_URL = r"^https?://[^\s]{1,490}$"


class AiKeyIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    token: str = Field(min_length=8, max_length=500, pattern=r"^\S+$")
    model_access: str = Field(default="gpt-4o,gpt-4o-mini", max_length=2000)
    daily_limit: int = Field(default=10000, ge=1, le=1_000_000_000)
    monthly_limit: int = Field(default=300000, ge=1, le=1_000_000_000)
    priority: int = Field(default=1, ge=1, le=1000)
    notes: str | None = Field(default=None, max_length=2000)
    base_url: str | None = Field(default=None, pattern=BASE_URL)

    _models = field_validator("model_access")(_check_models)


class AiKeyUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    model_access: str | None = Field(default=None, max_length=2000)
    daily_limit: int | None = Field(default=None, ge=1, le=1_000_000_000)
    monthly_limit: int | None = Field(default=None, ge=1, le=1_000_000_000)
    priority: int | None = Field(default=None, ge=1, le=1000)
    is_active: bool | None = None
    notes: str | None = Field(default=None, max_length=2000)
    base_url: str | None = Field(default=None, pattern=BASE_URL)

    _models = field_validator("model_access")(_check_models)


class AiKeyOut(BaseModel):
    id: int
    name: str
    is_active: bool
    priority: int
    models: list[str]
    daily_usage: int
    daily_limit: int
    daily_usage_percent: float
    monthly_usage: int
    monthly_limit: int
    monthly_usage_percent: float
    error_count: int
    last_used: str | None
    last_error: str | None


class AiKeyCreated(BaseModel):
    id: int
    name: str
    model_access: str
    daily_limit: int
    monthly_limit: int
    priority: int
    is_active: bool
    notes: str | None


class UsageDayOut(BaseModel):
    date: str
    requests: int
    tokens: int
    avg_response_time: float
    successful_requests: int
    failed_requests: int
    success_rate: float


class MessageOut(BaseModel):
    message: str


@router.route("GET", "/api/admin/ai-tokens", auth="admin", response=list[AiKeyOut],
              summary="The AI key pool with usage (keys themselves are never returned)")
async def list_ai_keys(call: Call) -> list[dict[str, Any]]:
    return await call.run(admin_ai_keys.list_keys, call.services.db)


@router.route("POST", "/api/admin/ai-tokens", auth="admin", body=AiKeyIn, response=AiKeyCreated,
              summary="Add an AI key to the pool (409 when already there)", errors=(409,))
async def add_ai_key(call: Call) -> dict[str, Any]:
    fields = call.body.model_dump()
    fields["token"] = fields["token"].strip()
    return await call.run(admin_ai_keys.do_add_key, call.services.db, fields)


@router.route("PUT", "/api/admin/ai-tokens/{token_id}", auth="admin", body=AiKeyUpdate,
              response=MessageOut, summary="Change an AI key's limits, models, priority or state")
async def update_ai_key(call: Call) -> dict[str, Any]:
    fields = call.body.model_dump(exclude_none=True)
    return await call.run(
        admin_ai_keys.do_update_key, call.services.db, call.path["token_id"], fields
    )


@router.route("DELETE", "/api/admin/ai-tokens/{token_id}", auth="admin", response=MessageOut,
              summary="Deactivate an AI key (its usage history stays)")
async def delete_ai_key(call: Call) -> dict[str, Any]:
    return await call.run(admin_ai_keys.do_delete_key, call.services.db, call.path["token_id"])


@router.route("GET", "/api/admin/ai-tokens/{token_id}/usage", auth="admin",
              response=list[UsageDayOut], summary="Per-day usage of an AI key, last 30 days")
async def ai_key_usage(call: Call) -> list[dict[str, Any]]:
    return await call.run(admin_ai_keys.key_usage, call.services.db, call.path["token_id"])
