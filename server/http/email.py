"""Doors of the `email` module (spec §4.12): confirm the address, resend the code, SMTP test."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from server import account_mail, accounts
from server.http.routing import ApiRouter, Call
from server.http.schemas import Lenient, MessageOut, Strict, TokensOut, render_tokens

router = ApiRouter("email")


class ConfirmEmailIn(Strict):
    email: str
    code: str


class ResendCodeIn(Strict):
    email: str
    # The original reuses the confirm schema, so clients send a dummy code; it is optional here.
    code: str | None = None


class TestSendQuery(Lenient):
    to: str


class ConfirmEmailOut(TokensOut):
    message: str


class TestSendOut(BaseModel):
    message: str
    success: bool
    server: str | None
    port: int | None
    ssl: bool
    starttls: bool
    username_configured: bool
    from_email: str


@router.route("POST", "/api/confirm_email", auth="none", body=ConfirmEmailIn,
              response=ConfirmEmailOut, rate_limit="confirm_email",
              summary="Confirm the e-mail with the mailed code; signs the user in")
async def confirm_email(call: Call) -> dict[str, Any]:
    body: ConfirmEmailIn = call.body
    pair = await call.run(
        accounts.do_confirm_email, call.services, email=body.email, code=body.code, ip=call.ip
    )
    return {"message": "Email confirmed"} | render_tokens(pair.access_token, pair.refresh_token)


@router.route("POST", "/api/resend_email_code", auth="none", body=ResendCodeIn,
              response=MessageOut, rate_limit="resend_email_code",
              summary="Mail a new confirmation code (same answer for unknown e-mails)")
async def resend_email_code(call: Call) -> dict[str, Any]:
    body: ResendCodeIn = call.body
    email = accounts.clean_email(body.email)
    # Per address as well as per IP: rotating addresses must not flood one inbox.
    await call.limit("resend_email_code", f"email:{email}")
    await call.run(accounts.do_resend_email_code, call.services, email=email, ip=call.ip)
    return {"message": "If the account exists and is not confirmed, a new code has been sent"}


@router.route("POST", "/api/test_send", auth=("service", "admin"), query=TestSendQuery,
              response=TestSendOut, rate_limit="test_send",
              summary="Send a test e-mail now and report the SMTP settings (service or admin)")
async def test_send(call: Call) -> dict[str, Any]:
    query: TestSendQuery = call.query
    to_addr = accounts.check_email(query.to)
    actor_id = call.caller.user.id if call.caller.user is not None else None
    return await account_mail.do_test_send(call.services, to_addr, actor_id=actor_id, ip=call.ip)
