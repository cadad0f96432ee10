"""A real SMTP server on 127.0.0.1 (aiosmtpd, in a thread of the test process) that keeps
what it receives, and can refuse the first few recipients with a temporary 451 to exercise
the mailer's retries.

    with running_smtp_sink() as sink:
        settings_env = {"SMTP_URL": sink.url}
        ...
        mail = sink.wait_for("someone@example.com")   # polls, bounded
"""

from __future__ import annotations

import contextlib
import dataclasses
import email
import email.policy
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from aiosmtpd.controller import Controller

HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback port nobody listens on (right now): also the 'unreachable server' of tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclasses.dataclass(frozen=True, slots=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str
    body: str


class _Handler:
    def __init__(self, sink: SmtpSink, refuse_first: int) -> None:
        self._sink = sink
        self.refusals_left = refuse_first

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if self.refusals_left > 0:
            self.refusals_left -= 1
            return "451 4.3.0 Temporary failure, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        body_part = message.get_body(preferencelist=("plain",))
        body = body_part.get_content() if body_part is not None else ""
        self._sink.record(
            ReceivedMail(
                mail_from=envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                subject=str(message.get("Subject", "")),
                body=body,
            )
        )
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self, refuse_first: int = 0) -> None:
        self.port = free_port()
        self._messages: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self.handler = _Handler(self, refuse_first)
        self._controller = Controller(self.handler, hostname=HOST, port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://{HOST}:{self.port}"

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._messages)

    def record(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._messages.append(mail)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def wait_for(self, to_addr: str, *, count: int = 1, timeout_secs: float = 10.0
                 ) -> list[ReceivedMail]:
        """The mails received for `to_addr` once there are `count` of them (bounded poll)."""
        deadline = time.monotonic() + timeout_secs
        while True:
            found = [mail for mail in self.messages if to_addr in mail.rcpt_tos]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{count} mail(s) for {to_addr} not received within {timeout_secs} s; "
                    f"got {len(found)}"
                )
            time.sleep(0.05)


@contextlib.contextmanager
def running_smtp_sink(refuse_first: int = 0) -> Iterator[SmtpSink]:
    sink = SmtpSink(refuse_first=refuse_first)
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()
