"""The one place errors become responses: `{"detail": ..., "code": ...}` for every status."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from server.errors import AppError, ErrorCode
from server.http.routing import JSONResponse

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.SERVICE_UNAVAILABLE,
}


def error_response(
    code: ErrorCode | str, detail: object, status: int, headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse(
        {"detail": detail, "code": str(code)}, status_code=status, headers=headers or None
    )


async def app_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return error_response(exc.code, exc.detail, exc.status, exc.headers)


async def http_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.BAD_REQUEST)
    detail = exc.detail if exc.status_code != 404 else "Not found"
    return error_response(code, detail, exc.status_code, dict(exc.headers or {}))


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    # Never echo exception text to the client (spec §10 S21); the log has it all.
    log.error(
        "unhandled error", exc_info=exc, extra={"path": request.url.path, "method": request.method}
    )
    return error_response(ErrorCode.INTERNAL_ERROR, "Internal server error", 500)


EXCEPTION_HANDLERS = {
    AppError: app_error_handler,
    HTTPException: http_error_handler,
    Exception: unexpected_error_handler,
}
