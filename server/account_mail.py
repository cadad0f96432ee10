"""The e-mails the account flows send, and the SMTP self-test of `POST /api/test_send`.

Texts are plain functions returning `Mail` so the flows in `server/accounts.py` stay about
rules, and tests can read a code or link back out of a body with the patterns below.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

from anyio import to_thread

from server.context import Services
from server.store import users as user_store

log = logging.getLogger(__name__)

CODE_PATTERN = re.compile(r"confirmation code is: (\d{6})")
RESET_LINK_PATTERN = re.compile(r"(\S+/reset-password\?token=[\w-]+)")


@dataclasses.dataclass(frozen=True, slots=True)
class Mail:
    subject: str
    body: str
    kind: str


def confirmation_code_mail(code: str, ttl_secs: int) -> Mail:
    minutes = max(1, ttl_secs // 60)
    return Mail(
        subject="Confirm your ReplyX e-mail",
        body=(
            f"Welcome to ReplyX!\n\nYour confirmation code is: {code}\n\n"
            f"It is valid for {minutes} minutes. If you did not sign up, ignore this e-mail.\n"
        ),
        kind="confirm_email",
    )


def admin_new_user_mail(email: str, first_name: str | None, user_id: int) -> Mail:
    return Mail(
        subject=f"New ReplyX registration: {email}",
        body=(
            "A new account was registered.\n\n"
            f"User id: {user_id}\nE-mail: {email}\nName: {first_name or '-'}\n"
        ),
        kind="admin_new_user",
    )


def welcome_mail(first_name: str | None) -> Mail:
    greeting = f"Hello {first_name}," if first_name else "Hello,"
    return Mail(
        subject="Welcome to ReplyX",
        body=(
            f"{greeting}\n\nYour e-mail is confirmed and your account is ready. "
            "Create your first assistant from the dashboard.\n"
        ),
        kind="welcome",
    )


def password_reset_mail(link: str, ttl_secs: int) -> Mail:
    hours = max(1, ttl_secs // 3600)
    return Mail(
        subject="Reset your ReplyX password",
        body=(
            "Someone (hopefully you) asked to reset the password of this account.\n\n"
            f"Open this link to choose a new one: {link}\n\n"
            f"The link is valid for {hours} hours and works once. If it was not you, "
            "ignore this e-mail; your password stays as it is.\n"
        ),
        kind="password_reset",
    )


def smtp_test_mail() -> Mail:
    return Mail(
        subject="ReplyX SMTP test",
        body="This is a test message from the ReplyX server. SMTP delivery works.\n",
        kind="test_send",
    )


async def do_test_send(
    services: Services, to_addr: str, *, actor_id: int | None, ip: str
) -> dict[str, Any]:
    """Send one mail right now (not through the outbox) and report the SMTP configuration.

    The answer never carries exception text or credentials: only the error class, the
    details go to the log.
    """
    smtp = services.mailer.smtp
    report: dict[str, Any] = {
        "server": smtp.host if smtp else None,
        "port": smtp.port if smtp else None,
        "ssl": smtp.use_tls if smtp else False,
        # aiosmtplib upgrades a plain connection with STARTTLS whenever the server offers it.
        "starttls": (not smtp.use_tls) if smtp else False,
        "username_configured": bool(smtp and smtp.username),
        "from_email": services.settings.mail_from,
    }
    if smtp is None:
        success, message = False, "SMTP is not configured (SMTP_URL is unset); mails are kept"
    else:
        mail = smtp_test_mail()
        error = await services.mailer.send_now(to_addr, mail.subject, mail.body)
        success = error is None
        if success:
            message = f"Test e-mail sent to {to_addr}"
        else:
            error_class = error.split(":", 1)[0] if error else "error"
            message = f"Sending failed ({error_class}); see the server log"
    log.info("smtp test send", extra={"to": to_addr, "success": success})

    def audit() -> None:
        with services.db.write() as session:
            user_store.add_audit(
                session, "test_send", user_id=actor_id, success=success, ip=ip, to=to_addr
            )

    await to_thread.run_sync(audit)
    return {"message": message, "success": success, **report}
