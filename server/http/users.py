"""Doors of the `users` module (spec §4.2): own profile, onboarding, and staff user management.

Thin: parse, call `server.profiles` / `server.admin_users`, render. `PATCH` and `DELETE
/api/admin/users/{user_id}` are listed in both the Users and the Admin modules of the seed;
they are served once, here (spec §3.4).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from server import admin_users, profiles
from server.http.routing import ApiRouter, Call
from server.http.schemas import Lenient, Strict, UserRead, render_user
from server.store.types import iso, utcnow
from server.store.users import UserRecord, UserStats

router = ApiRouter("users")

LEGACY_TOKEN_MAX_CHARS = 512
MAX_PAGE = 1_000_000  # keeps OFFSET inside a 64-bit integer whatever the limit


# --- request models ---------------------------------------------------------------------------


class ProfileUpdateIn(Lenient):
    """Any JSON object; only `first_name` is applied and `email` is only checked (spec)."""

    first_name: Any = Field(None, json_schema_extra={"type": "string", "maxLength": 100})
    email: Any = Field(None, json_schema_extra={"type": "string", "format": "email"})


class OnboardingStepIn(Strict):
    step: int | None = Field(None, ge=0, le=profiles.ONBOARDING_LAST_STEP, strict=True)
    completed: bool | None = Field(None, strict=True)
    skipped: bool | None = Field(None, strict=True)


class TipIn(Strict):
    tip_id: str = Field(min_length=1, max_length=profiles.TIP_ID_MAX_CHARS)


class AdminUserCreateIn(Strict):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    first_name: str | None = Field(None, max_length=1024)
    role: str = "user"
    status: str = "active"
    ai_token: str | None = Field(None, max_length=LEGACY_TOKEN_MAX_CHARS)
    telegram_token: str | None = Field(None, max_length=LEGACY_TOKEN_MAX_CHARS)


class AdminUserUpdateIn(Strict):
    email: str | None = Field(None, max_length=320)
    password: str | None = Field(None, max_length=1024)
    role: str | None = None
    status: str | None = None
    first_name: str | None = Field(None, max_length=1024)


class UsersQuery(Lenient):
    page: int = Field(1, ge=1, le=MAX_PAGE)
    limit: int = Field(50, ge=1, le=100)
    search: str | None = Field(None, max_length=255)
    status: str | None = Field(None, max_length=32)


# --- response models (for the OpenAPI document) ---------------------------------------------


class MeOut(UserRead):
    is_employee: bool
    balance: float


class RateLimitsOut(BaseModel):
    user_id: int
    rate_limits: dict[str, dict[str, Any]]
    timestamp: str


class ActivityOut(BaseModel):
    status: str
    timestamp: str


class OnboardingStatusOut(BaseModel):
    onboarding_completed: bool
    onboarding_step: int
    onboarding_started_at: str | None
    onboarding_completed_at: str | None
    onboarding_skipped: bool
    first_bot_created: bool
    first_message_sent: bool
    tutorial_tips_shown: list[str]
    should_show_onboarding: bool


class UserUpdatedOut(UserRead):
    message: str


class UserDeletedOut(BaseModel):
    ok: bool
    message: str
    deleted_user_id: int
    deleted_user_email: str


class UsersPageOut(BaseModel):
    users: list[dict[str, Any]]
    pagination: dict[str, int]


# --- own profile ------------------------------------------------------------------------------


@router.route("GET", "/api/me", auth="user", response=MeOut)
async def get_me(call: Call) -> dict[str, Any]:
    """Current user profile + balance"""
    profile = await call.run(profiles.get_profile, call.services, call.user)
    return render_user(profile.user) | {
        "first_name": profile.user.first_name or "",
        "is_employee": False,
        "balance": profile.balance,
    }


@router.route("PATCH", "/api/me", auth="user", body=ProfileUpdateIn, response=UserRead,
              errors=(422,))
async def update_me(call: Call) -> dict[str, Any]:
    """Update own profile (first_name only)"""
    body: ProfileUpdateIn = call.body
    updated = await call.run(
        profiles.do_update_profile, call.services, call.user.id,
        first_name=body.first_name, email=body.email,
    )
    return render_user(updated)


@router.route("GET", "/api/me/rate-limits", auth="user", response=RateLimitsOut)
async def my_rate_limits(call: Call) -> dict[str, Any]:
    """Own rate-limit counters per namespace"""
    report = await profiles.rate_limit_usage(call.services.limiter, call.identifier)
    return {"user_id": call.user.id, "rate_limits": report, "timestamp": iso(utcnow())}


@router.route("POST", "/api/update-activity", auth="user", response=ActivityOut)
async def update_activity(call: Call) -> dict[str, Any]:
    """Touch users.last_activity (dashboard presence)"""
    now = await call.run(profiles.touch_activity, call.services, call.user.id)
    return {"status": "ok", "timestamp": iso(now)}


# --- onboarding -------------------------------------------------------------------------------


def render_onboarding(user: UserRecord) -> dict[str, Any]:
    return {
        "onboarding_completed": user.onboarding_completed,
        "onboarding_step": user.onboarding_step,
        "onboarding_started_at": iso(user.onboarding_started_at),
        "onboarding_completed_at": iso(user.onboarding_completed_at),
        "onboarding_skipped": user.onboarding_skipped,
        "first_bot_created": user.first_bot_created,
        "first_message_sent": user.first_message_sent,
        "tutorial_tips_shown": list(user.tutorial_tips_shown),
        "should_show_onboarding": not user.onboarding_completed and not user.onboarding_skipped,
    }


@router.route("GET", "/api/users/onboarding/status", auth="user", response=OnboardingStatusOut)
async def onboarding_status(call: Call) -> dict[str, Any]:
    """Onboarding flags + should_show_onboarding"""
    return render_onboarding(call.user)


@router.route("POST", "/api/users/onboarding/start", auth="user")
async def start_onboarding(call: Call) -> dict[str, Any]:
    """Start onboarding (step 1)"""
    user = await call.run(profiles.start_onboarding, call.services, call.user.id)
    return {
        "message": "Onboarding started",
        "onboarding_step": user.onboarding_step,
        "started_at": iso(user.onboarding_started_at),
    }


@router.route("POST", "/api/users/onboarding/update-step", auth="user", body=OnboardingStepIn,
              errors=(422,))
async def update_onboarding_step(call: Call) -> dict[str, Any]:
    """Set step/completed/skipped"""
    body: OnboardingStepIn = call.body
    user = await call.run(
        profiles.update_onboarding_step, call.services, call.user.id,
        step=body.step, completed=body.completed, skipped=body.skipped,
    )
    return {
        "message": "Onboarding step updated",
        "onboarding_step": user.onboarding_step,
        "onboarding_completed": user.onboarding_completed,
        "onboarding_skipped": user.onboarding_skipped,
    }


@router.route("POST", "/api/users/onboarding/complete", auth="user")
async def complete_onboarding(call: Call) -> dict[str, Any]:
    """Mark onboarding completed (step 5, first_bot_created)"""
    user = await call.run(profiles.complete_onboarding, call.services, call.user.id)
    return {
        "message": "Onboarding completed",
        "completed_at": iso(user.onboarding_completed_at),
        "first_bot_created": user.first_bot_created,
    }


@router.route("POST", "/api/users/onboarding/skip", auth="user")
async def skip_onboarding(call: Call) -> dict[str, Any]:
    """Skip onboarding (skipped + completed)"""
    user = await call.run(profiles.skip_onboarding, call.services, call.user.id)
    return {
        "message": "Onboarding skipped",
        "skipped": user.onboarding_skipped,
        "completed_at": iso(user.onboarding_completed_at),
    }


@router.route("POST", "/api/users/onboarding/save-tip", auth="user", body=TipIn, errors=(422,))
async def save_tip(call: Call) -> dict[str, Any]:
    """Append tip_id to tutorial_tips_shown (idempotent)"""
    body: TipIn = call.body
    tips = await call.run(profiles.save_tip, call.services, call.user.id, body.tip_id)
    return {"message": "Tip saved", "shown_tips": list(tips)}


@router.route("POST", "/api/users/onboarding/mark-first-message", auth="user")
async def mark_first_message(call: Call) -> dict[str, Any]:
    """Set first_message_sent flag"""
    user = await call.run(profiles.mark_first_message, call.services, call.user.id)
    return {"message": "First message marked", "first_message_sent": user.first_message_sent}


@router.route("POST", "/api/users/onboarding/mark-bot-created", auth="user")
async def mark_bot_created(call: Call) -> dict[str, Any]:
    """Set first_bot_created flag"""
    user = await call.run(profiles.mark_bot_created, call.services, call.user.id)
    return {"message": "Bot creation marked", "first_bot_created": user.first_bot_created}


# --- staff user management --------------------------------------------------------------------


@router.route("POST", "/api/admin/users", auth="admin", body=AdminUserCreateIn,
              response=UserRead, rate_limit="admin_create_user", errors=(400, 422))
async def create_user(call: Call) -> dict[str, Any]:
    """Create user (confirmed e-mail, balance row, optional legacy tokens)"""
    body: AdminUserCreateIn = call.body
    created = await call.run(
        admin_users.do_create_user, call.services, call.user, ip=call.ip, **body.model_dump()
    )
    return render_user(created)


def render_user_with_stats(user: UserRecord, stats: UserStats) -> dict[str, Any]:
    return render_user(user) | {
        "is_email_confirmed": user.is_email_confirmed,
        "stats": {
            "totalDialogs": stats.total_dialogs,
            "totalMessages": stats.total_messages,
            "totalAssistants": stats.total_assistants,
            "totalDocuments": stats.total_documents,
            "lastActivity": iso(stats.last_activity),
        },
    }


@router.route("GET", "/api/admin/users/detailed", auth="admin", query=UsersQuery,
              response=UsersPageOut, errors=(422,))
async def list_users_detailed(call: Call) -> dict[str, Any]:
    """Paginated users with per-user stats"""
    query: UsersQuery = call.query
    page = await call.run(
        admin_users.list_users, call.services,
        page=query.page, limit=query.limit, search=query.search, status=query.status,
    )
    return {
        "users": [render_user_with_stats(user, stats) for user, stats in page.users],
        "pagination": {
            "page": query.page,
            "limit": query.limit,
            "total": page.total,
            "pages": -(-page.total // query.limit),  # ceil(total / limit)
        },
    }


@router.route("PATCH", "/api/admin/users/{user_id}", auth="admin", body=AdminUserUpdateIn,
              response=UserUpdatedOut, errors=(400, 404, 422))
async def update_user(call: Call) -> dict[str, Any]:
    """Update a user's email/password/role/status/first_name"""
    body: AdminUserUpdateIn = call.body
    updated = await call.run(
        admin_users.do_update_user, call.services, call.user, call.path["user_id"],
        ip=call.ip, **body.model_dump(),
    )
    return render_user(updated) | {"message": "User updated"}


@router.route("DELETE", "/api/admin/users/{user_id}", auth="admin", response=UserDeletedOut,
              rate_limit="admin_delete_user", errors=(400, 404))
async def delete_user(call: Call) -> dict[str, Any]:
    """Delete a user and all their data (never yourself)"""
    deleted = await call.run(
        admin_users.do_delete_user, call.services, call.user, call.path["user_id"], ip=call.ip
    )
    return {
        "ok": True,
        "message": f"User {deleted.email} deleted",
        "deleted_user_id": deleted.id,
        "deleted_user_email": deleted.email,
    }
