"""Doors of the `auth` module (spec §4.1, §5.A refresh-token, §5.B validate-token).

Thin: parse, call a capability of `server/accounts.py` / `server/account_passwords.py`,
render. Token answers always carry a refresh token next to the access token.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from server import account_passwords, accounts
from server.errors import AppError, ErrorCode
from server.http.routing import ApiRouter, Call
from server.http.schemas import (
    Lenient,
    MessageOut,
    Strict,
    TokensOut,
    UserRead,
    render_tokens,
    render_user,
)

router = ApiRouter("auth")


class RegisterIn(Strict):
    email: str
    password: str
    first_name: str | None = None
    # The original schema accepts these; self-registration ignores them (spec §4.1).
    role: Any = None
    status: Any = None
    ai_token: Any = None
    telegram_token: Any = None


class LoginForm(Lenient):
    """OAuth2 password form: `username` is the e-mail; the OAuth2 extras are tolerated."""

    username: str
    password: str
    grant_type: str | None = None
    scope: str = ""
    client_id: str | None = None
    client_secret: str | None = None


class LogoutIn(Strict):
    refresh_token: str | None = None


class RefreshIn(Strict):
    refresh_token: str | None = None


class ChangePasswordIn(Strict):
    current_password: str
    new_password: str


class ForgotPasswordIn(Strict):
    email: str


class ResetTokenIn(Strict):
    token: str | None = None


class ResetPasswordIn(Strict):
    token: str
    new_password: str


class RefreshOut(TokensOut):
    user_id: int
    email: str


class ChangePasswordOut(TokensOut):
    message: str


class ValidTokenOut(BaseModel):
    valid: bool
    user_id: int
    email: str
    role: str


class ValidResetTokenOut(BaseModel):
    message: str
    valid: bool


def render_pair(pair: accounts.TokenPair) -> dict[str, Any]:
    return render_tokens(pair.access_token, pair.refresh_token)


FORGOT_PASSWORD_ANSWER = (
    "If an account with this e-mail exists, we have sent a link to reset the password"
)


@router.route("POST", "/api/register", auth="none", body=RegisterIn, response=UserRead,
              rate_limit="register", summary="Self-registration; mails a confirmation code")
async def register(call: Call) -> dict[str, Any]:
    body: RegisterIn = call.body
    user = await call.run(
        accounts.do_register, call.services,
        email=body.email, password=body.password, first_name=body.first_name, ip=call.ip,
    )
    return render_user(user)


@router.route("POST", "/api/login", auth="none", form=LoginForm, response=TokensOut,
              rate_limit="login", summary="Log in with e-mail and password (form-encoded)")
async def login(call: Call) -> dict[str, Any]:
    form: LoginForm = call.body
    email = accounts.clean_email(form.username)
    await call.limit("login_account", f"ip_{call.ip}:{email}")
    pair = await call.run(
        accounts.do_login, call.services, email=email, password=form.password, ip=call.ip
    )
    return render_pair(pair)


@router.route("POST", "/api/logout", auth="user", body=LogoutIn, response=MessageOut,
              rate_limit="logout", summary="Revoke the access token (and the refresh token sent)")
async def logout(call: Call) -> dict[str, Any]:
    body: LogoutIn = call.body
    assert call.caller.claims is not None  # a user caller always has claims
    await call.run(
        accounts.do_logout, call.services,
        user=call.user, claims=call.caller.claims, refresh_token=body.refresh_token, ip=call.ip,
    )
    return {"message": "Logged out"}


@router.route("POST", "/api/refresh-token", auth="none", body=RefreshIn, response=RefreshOut,
              rate_limit="refresh_token", summary="Exchange a refresh token for a new pair")
async def refresh_token(call: Call) -> dict[str, Any]:
    body: RefreshIn = call.body
    if not body.refresh_token:
        raise AppError(ErrorCode.BAD_REQUEST, "refresh_token is required", status=400)
    pair = await call.run(
        accounts.do_refresh, call.services, refresh_token=body.refresh_token, ip=call.ip
    )
    return render_pair(pair) | {"user_id": pair.user.id, "email": pair.user.email}


@router.route("POST", "/api/validate-token", auth="user", response=ValidTokenOut,
              summary="Check the bearer token; answers who it belongs to")
async def validate_token(call: Call) -> dict[str, Any]:
    user = call.user
    return {"valid": True, "user_id": user.id, "email": user.email, "role": user.role}


@router.route("POST", "/api/auth/change-password", auth="user", body=ChangePasswordIn,
              response=ChangePasswordOut, rate_limit="change_password",
              summary="Change the password; ends every session and returns a fresh token pair")
async def change_password(call: Call) -> dict[str, Any]:
    body: ChangePasswordIn = call.body
    pair = await call.run(
        account_passwords.do_change_password, call.services,
        user=call.user, current_password=body.current_password,
        new_password=body.new_password, ip=call.ip,
    )
    # Every token issued before (this request's too) is dead now; the new pair keeps the
    # caller signed in.
    return {"message": "Password changed"} | render_pair(pair)


@router.route("POST", "/api/forgot-password", auth="none", body=ForgotPasswordIn,
              response=MessageOut, rate_limit="password_reset",
              aliases=("/api/auth/forgot-password",),
              summary="Mail a password reset link; the answer never tells if the account exists")
async def forgot_password(call: Call) -> dict[str, Any]:
    body: ForgotPasswordIn = call.body
    email = accounts.clean_email(body.email)
    await call.limit("password_reset_account", f"ip_{call.ip}:{email}")
    await call.run(
        account_passwords.do_forgot_password, call.services, email=email, ip=call.ip
    )
    return {"message": FORGOT_PASSWORD_ANSWER}


@router.route("POST", "/api/validate-reset-token", auth="none", body=ResetTokenIn,
              response=ValidResetTokenOut, rate_limit="password_reset",
              aliases=("/api/auth/validate-reset-token",),
              summary="Check a password reset token without using it")
async def validate_reset_token(call: Call) -> dict[str, Any]:
    body: ResetTokenIn = call.body
    if not body.token:
        raise AppError(ErrorCode.INVALID_RESET_TOKEN, "Token is required", status=400)
    await call.run(account_passwords.do_validate_reset_token, call.services, token=body.token)
    return {"message": "Token is valid", "valid": True}


@router.route("POST", "/api/reset-password", auth="none", body=ResetPasswordIn,
              response=MessageOut, rate_limit="password_reset",
              aliases=("/api/auth/reset-password",),
              summary="Set a new password with a reset token; ends every session")
async def reset_password(call: Call) -> dict[str, Any]:
    body: ResetPasswordIn = call.body
    await call.run(
        account_passwords.do_reset_password, call.services,
        token=body.token, new_password=body.new_password, ip=call.ip,
    )
    return {"message": "Password has been reset; sign in with the new password"}
