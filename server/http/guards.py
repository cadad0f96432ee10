"""Who is calling: the auth classes of spec §2 (`none`, `user`, `admin`, `site`, `service`).

`widget` is the token-less variant of `site` (`assistant_id` + `guest_id`, spec §2.3).

A route names the classes it accepts; `authenticate()` tries them in order and returns a
`Caller`, or raises the refusal of the first class that applies (401 without a credential,
403 for a valid user without the role).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from anyio import to_thread
from starlette.requests import Request

from server.context import Services
from server.errors import AppError, ErrorCode
from server.security import ACCESS, SiteClaims, TokenClaims, constant_time_equal, sha256_hex
from server.store import assistants as assistant_store
from server.store import users as user_store
from server.store.assistants import AssistantRecord
from server.store.users import UserRecord

BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
MAX_GUEST_ID_LENGTH = 128
MAX_WIDGET_ASSISTANT_ID = 2**31 - 1  # the database's integer range (as routing.MAX_DB_ID)


@dataclasses.dataclass(frozen=True, slots=True)
class SiteCaller:
    """A widget visitor: acting for `owner_id`, through `assistant_id`, as `guest_id`."""

    owner_id: int
    assistant_id: int | None
    guest_id: str
    # What a site token was minted for (None for the widget variant and account-level tokens):
    # live sockets are re-checked against them when the assistant changes.
    # Not part of who the visitor is (compare=False): only what to re-check later.
    widget_version: int | None = dataclasses.field(default=None, compare=False)
    domains_hash: str | None = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    auth: str = "none"
    user: UserRecord | None = None
    claims: TokenClaims | None = None
    site: SiteCaller | None = None
    service: bool = False


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _unauthorized(detail: str, code: ErrorCode = ErrorCode.UNAUTHORIZED) -> AppError:
    return AppError(code, detail, status=401, headers=BEARER_CHALLENGE)


async def resolve_user(services: Services, token: str) -> tuple[UserRecord, TokenClaims]:
    try:
        claims = services.tokens.decode(token, ACCESS)
    except AppError as exc:
        raise _unauthorized(str(exc.detail), exc.code) from exc
    user, revoked = await to_thread.run_sync(_load_user, services, claims)
    return check_user(user, claims, revoked), claims


def _load_user(services: Services, claims: TokenClaims) -> tuple[UserRecord | None, bool]:
    with services.db.read() as session:
        return (
            user_store.get_user(session, claims.user_id),
            user_store.is_token_revoked(session, claims.jti),
        )


def check_user(user: UserRecord | None, claims: TokenClaims, revoked: bool) -> UserRecord:
    """The checks every user token passes (also used by the WebSocket doors)."""
    if user is None or user.email != claims.email:
        raise _unauthorized("Could not validate credentials")
    if revoked or claims.version != user.token_version:
        raise _unauthorized("Token has been revoked", ErrorCode.TOKEN_REVOKED)
    if user.status == "blocked":
        raise AppError(ErrorCode.ACCOUNT_BLOCKED, "Account is blocked")
    if user.status != "active":
        raise AppError(ErrorCode.ACCOUNT_INACTIVE, "Account is not active")
    return user


def check_service_token(services: Services, presented: str | None) -> None:
    expected = services.settings.service_api_token
    if not constant_time_equal(presented, expected):
        raise AppError(ErrorCode.INVALID_SERVICE_TOKEN, "Invalid or missing X-Service-Token")


def _decode_site_token(services: Services, site_token: str | None) -> SiteClaims:
    if not site_token:
        raise AppError(ErrorCode.INVALID_SITE_TOKEN, "Invalid site_token")
    return services.site_tokens.decode(site_token)


def _check_site_claims(services: Services, claims: SiteClaims) -> None:
    """Owner active; the token's assistant of the owner, active, at its current version."""
    with services.db.read() as session:
        owner = user_store.get_user(session, claims.user_id)
        if owner is None or owner.status != "active":
            raise AppError(ErrorCode.INVALID_SITE_TOKEN, "Invalid site_token")
        if claims.assistant_id is None:
            return
        assistant = assistant_store.get_assistant(session, claims.assistant_id)
        if assistant is None or assistant.user_id != owner.id or not assistant.is_active:
            raise AppError(ErrorCode.INVALID_SITE_TOKEN, "Invalid site_token")
        if claims.widget_version is not None and (
            claims.widget_version != assistant.widget_version
            or claims.domains_hash != sha256_hex(assistant.allowed_domains)
        ):
            raise AppError(ErrorCode.INVALID_SITE_TOKEN, "Site token has been revoked")


def _check_guest(guest_id: str | None) -> str:
    # A NUL cannot be stored or compared by PostgreSQL: refuse it here, not with a 500 later.
    if not guest_id or len(guest_id) > MAX_GUEST_ID_LENGTH or "\x00" in guest_id:
        raise AppError(ErrorCode.VALIDATION_ERROR, "guest_id is required (at most 128 chars)",
                       status=422)
    return guest_id


async def resolve_site_token(services: Services, site_token: str | None) -> SiteClaims:
    """The token checks of `resolve_site` without a visitor (the chat page learns its guest
    id only in the browser)."""
    claims = _decode_site_token(services, site_token)
    await to_thread.run_sync(_check_site_claims, services, claims)
    return claims


async def resolve_site(services: Services, site_token: str | None, guest_id: str | None,
                       origin_domain: str | None = None) -> SiteCaller:
    """Spec §2.3: token → owner active → assistant of the owner, active, current version."""
    claims = _decode_site_token(services, site_token)
    guest = _check_guest(guest_id)
    await to_thread.run_sync(_check_site_claims, services, claims)
    return SiteCaller(owner_id=claims.user_id, assistant_id=claims.assistant_id, guest_id=guest,
                      widget_version=claims.widget_version, domains_hash=claims.domains_hash)


async def resolve_widget(services: Services, assistant_id: str | int | None,
                         guest_id: str | None) -> SiteCaller:
    """Spec §2.3 widget variant: `assistant_id` + `guest_id`, no token."""
    number = _widget_assistant_id(assistant_id)
    guest = _check_guest(guest_id)
    assistant = await to_thread.run_sync(_widget_assistant, services, number)
    return SiteCaller(owner_id=assistant.user_id, assistant_id=assistant.id, guest_id=guest)


async def resolve_widget_assistant(services: Services, assistant_id: str | int | None
                                   ) -> AssistantRecord:
    """The assistant a token-less widget may talk to (see `_widget_assistant`)."""
    number = _widget_assistant_id(assistant_id)
    return await to_thread.run_sync(_widget_assistant, services, number)


def _widget_assistant(services: Services, assistant_id: int) -> AssistantRecord:
    """The owner opted in: the assistant is active with the website integration on, and its
    owner is active; otherwise, or when unknown, it is "not found" (spec §4.10: 404)."""
    with services.db.read() as session:
        assistant = assistant_store.get_assistant(session, assistant_id)
        owner = user_store.get_user(session, assistant.user_id) if assistant else None
    if (assistant is None or not assistant.is_active
            or not assistant.website_integration_enabled
            or owner is None or owner.status != "active"):
        raise AppError(ErrorCode.NOT_FOUND, "Assistant not found")
    return assistant


def _widget_assistant_id(raw: str | int | None) -> int:
    if isinstance(raw, int) and raw >= 0:
        number = raw
    elif isinstance(raw, str) and raw and raw.isascii() and raw.isdigit():
        # Longer than the range's digits is out of range (and int() of huge strings raises).
        number = int(raw) if len(raw) <= len(str(MAX_WIDGET_ASSISTANT_ID)) else -1
        if number < 0:
            raise AppError(ErrorCode.NOT_FOUND, "Assistant not found")
    else:
        raise AppError(ErrorCode.VALIDATION_ERROR, "assistant_id must be an integer",
                       status=422)
    if number > MAX_WIDGET_ASSISTANT_ID:
        raise AppError(ErrorCode.NOT_FOUND, "Assistant not found")
    return number


async def authenticate(request: Request, services: Services, classes: Sequence[str]) -> Caller:
    if "none" in classes:
        return Caller()
    failure: AppError | None = None
    for auth in classes:
        try:
            caller = await _try(request, services, auth)
        except AppError as exc:
            # The first refusal wins, except that "you may not" (403 from a class whose
            # credential was valid) beats "who are you?" (401 from an absent credential).
            if failure is None or (failure.status == 401 and exc.status == 403):
                failure = exc
            continue
        if caller is not None:
            return caller
    raise failure or _unauthorized("Not authenticated")


async def _try(request: Request, services: Services, auth: str) -> Caller | None:
    if auth == "service":
        presented = request.headers.get("x-service-token")
        if presented is None:
            raise AppError(ErrorCode.INVALID_SERVICE_TOKEN, "Missing X-Service-Token")
        check_service_token(services, presented)
        return Caller(auth="service", service=True)
    if auth in ("user", "admin"):
        token = bearer_token(request)
        if token is None:
            raise _unauthorized("Not authenticated")
        user, claims = await resolve_user(services, token)
        if auth == "admin" and not user.is_admin:
            raise AppError(ErrorCode.FORBIDDEN, "Insufficient rights")
        return Caller(auth=auth, user=user, claims=claims)
    if auth == "site":
        params = request.query_params
        site = await resolve_site(services, params.get("site_token"), params.get("guest_id"))
        return Caller(auth="site", site=site)
    if auth == "widget":
        params = request.query_params
        site = await resolve_widget(services, params.get("assistant_id"), params.get("guest_id"))
        return Caller(auth="widget", site=site)
    raise ValueError(f"unknown auth class {auth!r}")
