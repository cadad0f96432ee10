"""The door framework: declare an endpoint once, get parsing, auth, limits and OpenAPI.

    router = ApiRouter("auth")

    @router.route("POST", "/api/register", auth="none", body=RegisterIn, response=UserRead,
                  rate_limit="register", summary="Self-registration")
    async def register(call: Call) -> dict: ...

Each endpoint's wrapper: checks the caller (guards), counts rate limits, reads the body under
a size cap, validates path ids, query and body with pydantic, and renders the handler's dict
as JSON. Every refusal is an `AppError`, rendered by `server/http/errors.py`.
`multipart=True` reads one uploaded `file` part (capped by MAX_UPLOAD_BYTES) into `call.upload`,
and a `RootModel` body (e.g. a JSON array) accepts a JSON value that is not an object.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import orjson
from anyio import to_thread
from pydantic import BaseModel, RootModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.context import Services
from server.errors import AppError, ErrorCode
from server.http.guards import Caller, authenticate
from server.ratelimit import Usage
from server.store.users import UserRecord

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Handler = Callable[["Call"], Awaitable[Any]]

PATH_PARAM = re.compile(r"{(\w+)}")
MAX_DB_ID = 2**31 - 1
# Room for the multipart envelope (boundaries, part headers, small fields) around one file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MULTIPART_FILE_FIELD = "file"
MULTIPART_MAX_FIELDS = 10


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=_json_default, option=orjson.OPT_UTC_Z)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def validation_error(errors: list[dict[str, Any]]) -> AppError:
    return AppError(ErrorCode.VALIDATION_ERROR, errors, status=422)


def pydantic_errors(exc: ValidationError, location: str) -> list[dict[str, Any]]:
    """FastAPI's list form, without echoing the input (it may hold a password)."""
    return [
        {"loc": [location, *error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def _nul_location(data: Any, path: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
    """Where a NUL character hides in parsed input (PostgreSQL text cannot store one)."""
    if isinstance(data, str):
        return path if "\x00" in data else None
    if isinstance(data, dict):
        for key, value in data.items():
            found = _nul_location(key, path) if isinstance(key, str) else None
            found = found if found is not None else _nul_location(value, (*path, key))
            if found is not None:
                return found
    if isinstance(data, list):
        for index, value in enumerate(data):
            found = _nul_location(value, (*path, index))
            if found is not None:
                return found
    return None


def parse_model(model: type[M], data: Any, location: str) -> M:
    nul_at = _nul_location(data)
    if nul_at is not None:
        raise validation_error(
            [{"loc": [location, *nul_at], "msg": "NUL characters are not allowed",
              "type": "string_nul"}]
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(pydantic_errors(exc, location)) from exc


def client_ip(request: Request, trusted_proxies: Sequence[str]) -> str:
    peer = request.client.host if request.client else "unknown"
    if peer in trusted_proxies:
        forwarded = request.headers.get("x-forwarded-for", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        # The right-most address not added by one of our proxies is the client.
        for hop in reversed(hops):
            if hop not in trusted_proxies:
                return hop
    return peer


@dataclasses.dataclass(frozen=True, slots=True)
class Upload:
    """The one file of a multipart request (`multipart=True` endpoints)."""

    filename: str | None
    content_type: str | None
    data: bytes


@dataclasses.dataclass(slots=True)
class Call:
    """One request as a handler sees it."""

    request: Request
    services: Services
    caller: Caller
    path: dict[str, Any]
    body: Any = None
    query: Any = None
    ip: str = ""
    response_headers: dict[str, str] = dataclasses.field(default_factory=dict)
    upload: Upload | None = None

    @property
    def user(self) -> UserRecord:
        if self.caller.user is None:
            raise AppError(ErrorCode.UNAUTHORIZED, "Not authenticated")
        return self.caller.user

    @property
    def identifier(self) -> str:
        """The rate-limit key: the user when logged in, else the client address."""
        if self.caller.user is not None:
            return f"user_{self.caller.user.id}"
        return f"ip_{self.ip}"

    async def limit(self, namespace: str, identifier: str | None = None) -> Usage | None:
        usage = await self.services.limiter.hit(namespace, identifier or self.identifier)
        if usage is not None:
            self.response_headers.update(usage.headers())
        return usage

    async def run(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work (the store, password hashing) off the event loop."""
        return await to_thread.run_sync(functools.partial(func, *args, **kwargs))


@dataclasses.dataclass(slots=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    auth: tuple[str, ...]
    module: str
    summary: str = ""
    body: type[BaseModel] | None = None
    form: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None
    status: int = 200
    rate_limit: str | None = None
    int_params: tuple[str, ...] = ()
    str_params: tuple[str, ...] = ()
    max_body_bytes: int | None = None
    errors: tuple[int, ...] = ()
    multipart: bool = False

    def starlette_route(self) -> Route:
        return Route(self.path, self._asgi, methods=[self.method], name=f"{self.method} {self.path}")

    async def _asgi(self, request: Request) -> Response:
        services: Services = request.app.state.services
        caller = await authenticate(request, services, self.auth)
        call = Call(
            request=request,
            services=services,
            caller=caller,
            path=self._path_params(request),
            ip=client_ip(request, services.settings.trusted_proxy_ips),
        )
        await self._count(call)
        if self.query is not None:
            call.query = parse_model(self.query, dict(request.query_params), "query")
        if self.multipart:
            await self._read_multipart(call)
        elif self.body is not None or self.form is not None:
            raw = await read_body(request, self.max_body_bytes or services.settings.max_request_body_bytes)
            if self.form is not None:
                form = await request.form(max_files=0, max_fields=50)
                fields = {key: value for key, value in form.items() if isinstance(value, str)}
                call.body = parse_model(self.form, fields, "body")
            elif self.body is not None:
                call.body = parse_model(self.body, _parse_json_for(self.body, raw), "body")
        result = await self.handler(call)
        if isinstance(result, Response):
            result.headers.update(call.response_headers)
            return result
        return JSONResponse(result, status_code=self.status, headers=call.response_headers)

    async def _read_multipart(self, call: Call) -> None:
        """One `file` part (required) and optional small text fields parsed with `form=`.

        The body is read under the upload cap (+ envelope room) before parsing, so an upload
        declared too large is refused from its Content-Length, before any of it is read.
        """
        request = call.request
        cap = self.max_body_bytes or call.services.settings.max_upload_bytes
        await read_body(request, cap + MULTIPART_OVERHEAD_BYTES)
        form = await request.form(
            max_files=1, max_fields=MULTIPART_MAX_FIELDS, max_part_size=MULTIPART_OVERHEAD_BYTES
        )
        try:
            part = form.get(MULTIPART_FILE_FIELD)
            if not isinstance(part, UploadFile):
                raise validation_error(
                    [{"loc": ["body", MULTIPART_FILE_FIELD], "msg": "A file is required",
                      "type": "missing"}]
                )
            data = await part.read()
            if len(data) > cap:
                raise AppError(ErrorCode.PAYLOAD_TOO_LARGE, f"The file is over {cap} bytes")
            call.upload = Upload(part.filename, part.content_type, data)
            if self.form is not None:
                fields = {key: value for key, value in form.items() if isinstance(value, str)}
                call.body = parse_model(self.form, fields, "body")
        finally:
            await form.close()

    async def _count(self, call: Call) -> None:
        limiter = call.services.limiter
        if call.caller.user is not None:
            await limiter.hit("api_general", call.identifier)
            if call.caller.user.is_admin and "admin" in self.auth:
                await limiter.hit("admin", call.identifier)
        if self.rate_limit is not None:
            await call.limit(self.rate_limit)

    def _path_params(self, request: Request) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, raw in request.path_params.items():
            if name in self.int_params:
                if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit():
                    raise validation_error(
                        [{"loc": ["path", name], "msg": "Input should be a valid integer",
                          "type": "int_parsing"}]
                    )
                number = int(raw)
                if number > MAX_DB_ID:
                    raise AppError(ErrorCode.NOT_FOUND, "Not found")
                values[name] = number
            else:
                values[name] = raw
        return values


async def read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise AppError(ErrorCode.PAYLOAD_TOO_LARGE, f"Request body over {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise AppError(ErrorCode.PAYLOAD_TOO_LARGE, f"Request body over {max_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # later readers (form parsing) reuse what we read
    return body


def _parse_json_for(model: type[BaseModel], raw: bytes) -> Any:
    # A RootModel body (e.g. a JSON array) takes any JSON value; other models take an object.
    if issubclass(model, RootModel):
        return parse_json_value(raw)
    return parse_json_object(raw)


def parse_json_value(raw: bytes) -> Any:
    """Any JSON value; an empty body is a validation error (nothing to validate)."""
    if not raw.strip():
        raise validation_error([{"loc": ["body"], "msg": "Field required", "type": "missing"}])
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise AppError(
            ErrorCode.INVALID_JSON, f"Malformed JSON body: {exc.msg}", status=422
        ) from exc


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise AppError(
            ErrorCode.INVALID_JSON, f"Malformed JSON body: {exc.msg}", status=422
        ) from exc
    if not isinstance(data, dict):
        raise validation_error(
            [{"loc": ["body"], "msg": "Input should be a JSON object", "type": "model_type"}]
        )
    return data


class ApiRouter:
    """Endpoints of one spec module."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.endpoints: list[Endpoint] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        auth: str | Sequence[str],
        summary: str = "",
        body: type[BaseModel] | None = None,
        form: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: Any = None,
        status: int = 200,
        rate_limit: str | None = None,
        aliases: Sequence[str] = (),
        str_params: Sequence[str] = (),
        max_body_bytes: int | None = None,
        errors: Sequence[int] = (),
        multipart: bool = False,
    ) -> Callable[[Handler], Handler]:
        classes = (auth,) if isinstance(auth, str) else tuple(auth)

        def register(handler: Handler) -> Handler:
            for each_path in (path, *aliases):
                names = PATH_PARAM.findall(each_path)
                self.endpoints.append(
                    Endpoint(
                        method=method.upper(),
                        path=each_path,
                        handler=handler,
                        auth=classes,
                        module=self.module,
                        summary=summary or (handler.__doc__ or "").strip().split("\n")[0],
                        body=body,
                        form=form,
                        query=query,
                        response=response,
                        status=status,
                        rate_limit=rate_limit,
                        int_params=tuple(n for n in names if n not in str_params),
                        str_params=tuple(str_params),
                        max_body_bytes=max_body_bytes,
                        errors=tuple(errors),
                        multipart=multipart,
                    )
                )
            return handler

        return register
