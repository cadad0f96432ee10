"""Outgoing e-mail through an outbox: a request only writes a row; a task delivers it.

`Mailer.enqueue()` adds the mail to `mail_outbox` inside the caller's transaction, so a mail
exists exactly when the change that caused it was committed, and wakes the dispatcher after
that commit. The dispatcher (one asyncio task per process) claims due rows with a conditional
update (safe with several processes), sends them over SMTP and retries failures with
exponential backoff until `MAIL_MAX_ATTEMPTS`. Without `SMTP_URL` (the embedded default) every
mail is kept in the outbox with status `kept` and written to the log, so a developer can read
their confirmation code there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import email.message
import logging
import urllib.parse

import aiosmtplib
from anyio import to_thread
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from server.config import Settings
from server.store.db import Database
from server.store.models import MailOutbox
from server.store.types import utcnow

log = logging.getLogger(__name__)

PENDING, SENDING, SENT, FAILED, KEPT = "pending", "sending", "sent", "failed", "kept"
CLAIM_LEASE = dt.timedelta(seconds=120)
BATCH_SIZE = 50


@dataclasses.dataclass(frozen=True, slots=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtp://user:pass@host:port")
        use_tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if use_tls else 587),
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=urllib.parse.unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class OutgoingMail:
    id: int
    to_addr: str
    subject: str
    body_text: str
    attempts: int


class Mailer:
    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._settings = settings
        self.smtp = SmtpTarget.parse(settings.smtp_url) if settings.smtp_url else None
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- producing ------------------------------------------------------------------------

    def enqueue(
        self, session: Session, to_addr: str, subject: str, body: str, kind: str = "generic"
    ) -> None:
        """Queue a mail in the caller's transaction; delivery starts after it commits."""
        status = PENDING if self.smtp else KEPT
        session.add(
            MailOutbox(to_addr=to_addr, subject=subject, body_text=body, kind=kind, status=status)
        )
        if self.smtp is None:
            log.info("mail kept in outbox (no SMTP_URL)", extra={"to": to_addr, "subject": subject,
                                                               "body": body, "kind": kind})
            return
        event.listen(session, "after_commit", lambda _s: self.wake(), once=True)

    def wake(self) -> None:
        if self._loop is not None and self._wakeup is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wakeup.set)

    # -- delivering -----------------------------------------------------------------------

    async def run(self) -> None:
        """The dispatcher loop; cancelled at shutdown."""
        if self.smtp is None:
            return
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        while True:
            try:
                await self.deliver_due()
            except Exception:
                log.exception("mail dispatcher pass failed")
            try:
                await asyncio.wait_for(
                    self._wakeup.wait(), timeout=self._settings.mail_poll_interval_secs
                )
            except TimeoutError:
                pass
            self._wakeup.clear()

    async def deliver_due(self) -> int:
        claimed = await to_thread.run_sync(self._claim_due)
        for mail in claimed:
            error = await self._send(mail.to_addr, mail.subject, mail.body_text)
            await to_thread.run_sync(self._record_result, mail, error)
        return len(claimed)

    async def send_now(self, to_addr: str, subject: str, body: str) -> str | None:
        """Send directly (the admin SMTP test); returns the error text or None."""
        return await self._send(to_addr, subject, body)

    async def _send(self, to_addr: str, subject: str, body: str) -> str | None:
        if self.smtp is None:
            return "SMTP is not configured (SMTP_URL is unset)"
        message = email.message.EmailMessage()
        message["From"] = self._settings.mail_from
        message["To"] = to_addr
        message["Subject"] = subject
        message.set_content(body)
        try:
            await aiosmtplib.send(
                message,
                hostname=self.smtp.host,
                port=self.smtp.port,
                username=self.smtp.username,
                password=self.smtp.password,
                use_tls=self.smtp.use_tls,
                timeout=self._settings.smtp_timeout_secs,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            log.warning("smtp send failed", extra={"to": to_addr, "error": str(exc)})
            return f"{type(exc).__name__}: {exc}"
        return None

    def _claim_due(self) -> list[OutgoingMail]:
        now = utcnow()
        with self._db.write() as session:
            rows = session.execute(
                select(MailOutbox)
                .where(MailOutbox.status.in_((PENDING, SENDING)), MailOutbox.next_attempt_at <= now)
                .order_by(MailOutbox.next_attempt_at)
                .limit(BATCH_SIZE)
            ).scalars().all()
            claimed = []
            for row in rows:
                result = session.execute(
                    update(MailOutbox)
                    .where(
                        MailOutbox.id == row.id,
                        MailOutbox.status.in_((PENDING, SENDING)),
                        MailOutbox.next_attempt_at <= now,
                    )
                    .values(status=SENDING, next_attempt_at=now + CLAIM_LEASE)
                )
                if result.rowcount == 1:
                    claimed.append(
                        OutgoingMail(row.id, row.to_addr, row.subject, row.body_text, row.attempts)
                    )
            return claimed

    def _record_result(self, mail: OutgoingMail, error: str | None) -> None:
        now = utcnow()
        attempts = mail.attempts + 1
        if error is None:
            values = {"status": SENT, "sent_at": now, "attempts": attempts, "last_error": None}
        elif attempts >= self._settings.mail_max_attempts:
            values = {"status": FAILED, "attempts": attempts, "last_error": error[:2000]}
            log.error("mail given up", extra={"mail_id": mail.id, "error": error})
        else:
            delay = self._settings.mail_retry_base_secs * 2 ** (attempts - 1)
            values = {
                "status": PENDING,
                "attempts": attempts,
                "last_error": error[:2000],
                "next_attempt_at": now + dt.timedelta(seconds=min(delay, 3600)),
            }
        with self._db.write() as session:
            session.execute(update(MailOutbox).where(MailOutbox.id == mail.id).values(**values))
