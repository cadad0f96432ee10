"""One error type for every refusal a client can see, and the WebSocket close codes.

An `AppError` carries an `ErrorCode` (stable, machine-readable), an HTTP status and a `detail`
(a message, or an object where the spec keeps one, e.g. the 402 of billing). The single
handler in `server/http/errors.py` renders it as `{"detail": ..., "code": ...}`.
"""

from __future__ import annotations

import enum
from typing import Any


class ConfigError(RuntimeError):
    """The environment describes a server that cannot start."""


class ErrorCode(enum.StrEnum):
    BAD_REQUEST = "bad_request"
    VALIDATION_ERROR = "validation_error"
    INVALID_JSON = "invalid_json"
    UNAUTHORIZED = "unauthorized"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_REVOKED = "token_revoked"
    INVALID_CREDENTIALS = "invalid_credentials"
    INVALID_SITE_TOKEN = "invalid_site_token"
    INVALID_SERVICE_TOKEN = "invalid_service_token"
    FORBIDDEN = "forbidden"
    EMAIL_NOT_CONFIRMED = "email_not_confirmed"
    ACCOUNT_BLOCKED = "account_blocked"
    ACCOUNT_INACTIVE = "account_inactive"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    EMAIL_TAKEN = "email_taken"
    EMAIL_ALREADY_CONFIRMED = "email_already_confirmed"
    WEAK_PASSWORD = "weak_password"
    INVALID_EMAIL = "invalid_email"
    INVALID_CODE = "invalid_code"
    CODE_EXPIRED = "code_expired"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    INVALID_RESET_TOKEN = "invalid_reset_token"
    SAME_PASSWORD = "same_password"
    SELF_ACTION_FORBIDDEN = "self_action_forbidden"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL_ERROR = "internal_error"
    # documents and website import (issue 3)
    INVALID_URL = "invalid_url"
    FETCH_REFUSED = "fetch_refused"
    FETCH_FAILED = "fetch_failed"
    EMPTY_DOCUMENT = "empty_document"
    UNREADABLE_DOCUMENT = "unreadable_document"


_DEFAULT_STATUS: dict[ErrorCode, int] = {
    ErrorCode.VALIDATION_ERROR: 422,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.TOKEN_REVOKED: 401,
    ErrorCode.INVALID_CREDENTIALS: 401,
    ErrorCode.INVALID_SITE_TOKEN: 401,
    ErrorCode.INVALID_SERVICE_TOKEN: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.EMAIL_NOT_CONFIRMED: 403,
    ErrorCode.ACCOUNT_BLOCKED: 403,
    ErrorCode.ACCOUNT_INACTIVE: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.INSUFFICIENT_BALANCE: 402,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.FETCH_FAILED: 502,
}


class AppError(Exception):
    """A refusal with a stable code; raised anywhere, rendered once."""

    def __init__(
        self,
        code: ErrorCode,
        detail: Any,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail if isinstance(detail, str) else code.value)
        self.code = code
        self.detail = detail
        self.status = status if status is not None else _DEFAULT_STATUS.get(code, 400)
        self.headers = headers or {}

    def __repr__(self) -> str:
        return f"AppError({self.code.value!r}, {self.status}, {self.detail!r})"


def not_found(what: str = "Not found") -> AppError:
    return AppError(ErrorCode.NOT_FOUND, what)


def bad_request(detail: str, code: ErrorCode = ErrorCode.BAD_REQUEST) -> AppError:
    return AppError(code, detail, status=400)


class CloseCode(enum.IntEnum):
    """WebSocket close codes (DESIGN.md §5): which ones a client may reconnect after."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_VIOLATION = 1008
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    CREDENTIAL_EXPIRED = 4001
    CREDENTIAL_INVALID = 4002
    FORBIDDEN = 4003
    NOT_FOUND = 4004
    SLOW_CONSUMER = 4008
    REPLACED = 4009
