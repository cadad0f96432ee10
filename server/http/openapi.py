"""The OpenAPI 3.1 document, generated from the registered endpoints (never written by hand).

Every `Endpoint` already declares what a client needs to know: method, path, auth classes,
body/form/query models, response type and status. `build_document()` turns that list into
one document: request bodies and query parameters from the pydantic models, integer path
ids, the success response, the error responses the framework can give for that endpoint
(all with the shared `ErrorBody` shape), and the security requirement of its auth classes.
All models go through one pydantic call, so two models that share a name get distinct
component names instead of overwriting each other.
"""

from __future__ import annotations

import http
import importlib.metadata
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

from server.http.routing import MULTIPART_FILE_FIELD, Endpoint

OPENAPI_VERSION = "3.1.0"
REF_TEMPLATE = "#/components/schemas/{model}"
ERROR_BODY_REF = {"$ref": "#/components/schemas/ErrorBody"}

ERROR_BODY_SCHEMA: dict[str, Any] = {
    "title": "ErrorBody",
    "type": "object",
    "description": "Every refusal: a message (or an object/list, e.g. validation errors) "
    "and a stable machine-readable code.",
    "properties": {
        "detail": {"description": "Human-readable message, or a structured object/list"},
        "code": {"type": "string", "description": "Stable error code, e.g. not_found"},
    },
    "required": ["detail", "code"],
}

SECURITY_SCHEMES: dict[str, Any] = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    "serviceToken": {"type": "apiKey", "in": "header", "name": "X-Service-Token"},
    "siteToken": {"type": "apiKey", "in": "query", "name": "site_token"},
}
SCHEME_OF_AUTH = {
    "user": "bearerAuth",
    "admin": "bearerAuth",
    "service": "serviceToken",
    "site": "siteToken",
}

RATE_LIMIT_HEADERS: dict[str, Any] = {
    name: {"schema": {"type": "integer"}, "description": meaning}
    for name, meaning in (
        ("Retry-After", "Seconds until a request may succeed"),
        ("X-RateLimit-Limit", "Requests allowed in the window"),
        ("X-RateLimit-Remaining", "Requests left in the window"),
        ("X-RateLimit-Reset", "Unix time the window frees up"),
    )
}
GUEST_ID_PARAMETER: dict[str, Any] = {
    "name": "guest_id",
    "in": "query",
    "required": True,
    "description": "The visitor's opaque id (widget/site auth)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
}


def package_version() -> str:
    try:
        return importlib.metadata.version("replyx-server")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def build_document(
    endpoints: Sequence[Endpoint], *, title: str = "ReplyX server API", version: str | None = None
) -> dict[str, Any]:
    schemas, definitions = _model_schemas(endpoints)
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for index, endpoint in enumerate(endpoints):
        operation = _operation(endpoint, index, schemas, definitions)
        operation["operationId"] = _unique_operation_id(endpoint, operation_ids)
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    components = {"ErrorBody": ERROR_BODY_SCHEMA, **definitions}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": version or package_version(),
            "description": "Generated from the server's registered endpoints. Every error is "
            '`{"detail": ..., "code": ...}`.',
        },
        "tags": [{"name": name} for name in sorted({e.module for e in endpoints})],
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }


SchemaKey = tuple[int, str]


def _model_schemas(
    endpoints: Sequence[Endpoint],
) -> tuple[dict[SchemaKey, dict[str, Any]], dict[str, Any]]:
    """One JSON schema per (endpoint index, part), with their shared definitions hoisted."""
    inputs: list[tuple[SchemaKey, Any, TypeAdapter[Any]]] = []
    for index, endpoint in enumerate(endpoints):
        for part in ("body", "form", "query"):
            model = getattr(endpoint, part)
            if model is not None:
                inputs.append(((index, part), "validation", TypeAdapter(model)))
        if endpoint.response is not None:
            inputs.append(((index, "response"), "serialization", TypeAdapter(endpoint.response)))
    if not inputs:
        return {}, {}
    by_key, top = TypeAdapter.json_schemas(inputs, ref_template=REF_TEMPLATE)
    schemas = {key: schema for (key, _mode), schema in by_key.items()}
    return schemas, dict(top.get("$defs", {}))


def _resolve(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        return definitions[ref.rsplit("/", 1)[1]]
    return schema


def _operation(
    endpoint: Endpoint,
    index: int,
    schemas: dict[SchemaKey, dict[str, Any]],
    definitions: dict[str, Any],
) -> dict[str, Any]:
    operation: dict[str, Any] = {"tags": [endpoint.module]}
    if endpoint.summary:
        operation["summary"] = endpoint.summary
    doc = (endpoint.handler.__doc__ or "").strip()
    if doc:
        operation["description"] = doc
    parameters = _path_parameters(endpoint)
    if (index, "query") in schemas:
        parameters += _query_parameters(schemas[(index, "query")], definitions)
    if "site" in endpoint.auth and not any(p["name"] == "guest_id" for p in parameters):
        parameters.append(GUEST_ID_PARAMETER | {"required": endpoint.auth == ("site",)})
    if parameters:
        operation["parameters"] = parameters
    if endpoint.multipart:
        operation["requestBody"] = _request_body(
            "multipart/form-data", _multipart_schema(schemas.get((index, "form")), definitions)
        )
    elif (index, "body") in schemas:
        operation["requestBody"] = _request_body("application/json", schemas[(index, "body")])
    elif (index, "form") in schemas:
        operation["requestBody"] = _request_body(
            "application/x-www-form-urlencoded", schemas[(index, "form")]
        )
    operation["responses"] = _responses(endpoint, schemas.get((index, "response")))
    security = _security(endpoint.auth)
    if security is not None:
        operation["security"] = security
    return operation


def _path_parameters(endpoint: Endpoint) -> list[dict[str, Any]]:
    parameters = []
    for name in endpoint.int_params:
        # Digits only (a sign or a space is a 422); ids beyond the database's range are a 404.
        parameters.append(
            {"name": name, "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 0}}
        )
    for name in endpoint.str_params:
        parameters.append(
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        )
    return parameters


def _query_parameters(schema: dict[str, Any], definitions: dict[str, Any]) -> list[dict[str, Any]]:
    model = _resolve(schema, definitions)
    required = set(model.get("required", ()))
    parameters = []
    for name, prop in model.get("properties", {}).items():
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if "description" in prop:
            parameter["description"] = prop["description"]
        parameters.append(parameter)
    return parameters


def _multipart_schema(
    form: dict[str, Any] | None, definitions: dict[str, Any]
) -> dict[str, Any]:
    """The uploaded `file` part plus the text fields of the endpoint's form model."""
    fields = _resolve(form, definitions) if form is not None else {}
    return {
        "type": "object",
        "properties": {
            MULTIPART_FILE_FIELD: {"type": "string", "format": "binary"},
            **fields.get("properties", {}),
        },
        "required": [MULTIPART_FILE_FIELD, *fields.get("required", ())],
    }


def _request_body(media_type: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {media_type: {"schema": schema}}}


def _error_statuses(endpoint: Endpoint) -> set[int]:
    statuses = set(endpoint.errors)
    has_input = any((endpoint.body, endpoint.form, endpoint.query, endpoint.multipart))
    if "none" not in endpoint.auth:
        statuses.add(401)
    if {"user", "admin"} & set(endpoint.auth):
        statuses |= {403, 429}  # blocked/inactive accounts and roles; the per-user budget
    if endpoint.body is not None or endpoint.form is not None or endpoint.multipart:
        statuses.add(413)
    if endpoint.multipart:
        statuses.add(415)  # the file's content is not an allowed type
    if has_input or endpoint.int_params or "site" in endpoint.auth:
        statuses.add(422)
    if endpoint.int_params or endpoint.str_params:
        statuses.add(404)
    if endpoint.rate_limit is not None:
        statuses.add(429)
    return statuses


def _responses(endpoint: Endpoint, schema: dict[str, Any] | None) -> dict[str, Any]:
    success: dict[str, Any] = {"description": http.HTTPStatus(endpoint.status).phrase}
    if endpoint.status != 204:
        success["content"] = {"application/json": {"schema": schema if schema is not None else {}}}
    responses: dict[str, Any] = {str(endpoint.status): success}
    for status in sorted(_error_statuses(endpoint)):
        response: dict[str, Any] = {
            "description": http.HTTPStatus(status).phrase,
            "content": {"application/json": {"schema": ERROR_BODY_REF}},
        }
        if status == 429:
            response["headers"] = RATE_LIMIT_HEADERS
        responses[str(status)] = response
    return responses


def _security(auth: tuple[str, ...]) -> list[dict[str, list[str]]] | None:
    if auth == ("none",):
        return None
    requirements: list[dict[str, list[str]]] = []
    for auth_class in auth:
        # `none` among alternatives is the empty requirement: credentials are optional.
        scheme = SCHEME_OF_AUTH.get(auth_class)
        requirement: dict[str, list[str]] = {scheme: []} if scheme else {}
        if requirement not in requirements:
            requirements.append(requirement)
    return requirements


def _unique_operation_id(endpoint: Endpoint, taken: set[str]) -> str:
    candidate = getattr(endpoint.handler, "__name__", "") or endpoint.method.lower()
    if candidate in taken:
        slug = "".join(ch if ch.isalnum() else "_" for ch in endpoint.path.strip("/"))
        candidate = f"{candidate}__{endpoint.method.lower()}_{slug}"
    while candidate in taken:
        candidate += "_"
    taken.add(candidate)
    return candidate
