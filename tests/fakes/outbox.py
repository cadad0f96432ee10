"""Read what the server mailed from the `mail_outbox` table (the embedded default keeps every
mail there with status `kept`): the latest mail of a kind, a confirmation code, a reset token.
"""

from __future__ import annotations

import urllib.parse

from server.account_mail import CODE_PATTERN, RESET_LINK_PATTERN
from server.context import Services
from server.store.mail import OutboxRecord, list_outbox


def mails(
    services: Services, to_addr: str | None = None, kind: str | None = None
) -> list[OutboxRecord]:
    with services.db.read() as session:
        return list_outbox(session, to_addr, kind=kind)


def latest_mail(services: Services, to_addr: str, kind: str) -> OutboxRecord:
    found = mails(services, to_addr, kind)
    assert found, f"no {kind!r} mail to {to_addr} in the outbox"
    return found[-1]


def code_in(body: str) -> str:
    match = CODE_PATTERN.search(body)
    assert match, f"no confirmation code in {body!r}"
    return match.group(1)


def confirmation_code(services: Services, to_addr: str) -> str:
    return code_in(latest_mail(services, to_addr, "confirm_email").body_text)


def reset_token_in(body: str) -> str:
    match = RESET_LINK_PATTERN.search(body)
    assert match, f"no reset link in {body!r}"
    query = urllib.parse.urlsplit(match.group(1)).query
    return urllib.parse.parse_qs(query)["token"][0]


def reset_token(services: Services, to_addr: str) -> str:
    return reset_token_in(latest_mail(services, to_addr, "password_reset").body_text)
