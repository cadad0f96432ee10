"""The API docs page: Swagger UI served from the installed `swagger_ui_bundle`, no CDN.

The bundled Swagger UI (4.x) renders OpenAPI 3.0 only, so the page loads a 3.0 rendering of
the generated 3.1 document (`as_openapi_30()`): the JSON-Schema-2020-12 forms pydantic emits
(`anyOf` with `null`, `const`, `examples`, numeric `exclusiveMinimum`) are rewritten into
their 3.0 equivalents. `/openapi.json` stays the 3.1 source of truth.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from swagger_ui_bundle import swagger_ui_path

SWAGGER_UI_DIR = Path(str(swagger_ui_path))
STATIC_PREFIX = "/docs/static"
OPENAPI_30_PATH = "/docs/openapi-3.0.json"

DOCS_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>ReplyX server API</title>
  <link rel="stylesheet" href="{STATIC_PREFIX}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{STATIC_PREFIX}/favicon-32x32.png" sizes="32x32">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{STATIC_PREFIX}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{OPENAPI_30_PATH}",
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    }});
  </script>
  <noscript>The OpenAPI document is at <a href="/openapi.json">/openapi.json</a>.</noscript>
</body>
</html>
"""

_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs")
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SUBSCHEMAS = ("items", "additionalProperties", "not")


def as_openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of a 3.1 document that OpenAPI 3.0 tools (Swagger UI 4) understand."""
    converted = copy.deepcopy(document)
    converted["openapi"] = "3.0.3"
    components = converted.get("components", {})
    for name, schema in components.get("schemas", {}).items():
        components["schemas"][name] = _schema_30(schema)
    for path_item in converted.get("paths", {}).values():
        for operation in path_item.values():
            _operation_30(operation)
    return converted


def _operation_30(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        parameter["schema"] = _schema_30(parameter["schema"])
    media: list[dict[str, Any]] = list(operation.get("requestBody", {}).get("content", {}).values())
    for response in operation.get("responses", {}).values():
        media += response.get("content", {}).values()
        for header in response.get("headers", {}).values():
            header["schema"] = _schema_30(header["schema"])
    for entry in media:
        entry["schema"] = _schema_30(entry["schema"])


def _schema_30(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: _schema_30(sub) for name, sub in out[key].items()}
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [_schema_30(sub) for sub in out[key]]
    for key in _SUBSCHEMAS:
        if isinstance(out.get(key), dict):
            out[key] = _schema_30(out[key])
    if "prefixItems" in out:  # tuples: 3.0 has no positional items
        out.pop("prefixItems")
        out.setdefault("items", {})
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if isinstance(out.get("examples"), list):
        examples = out.pop("examples")
        if examples:
            out["example"] = examples[0]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), (int, float)) and not isinstance(out[bound], bool):
            out[plain] = out.pop(bound)
            out[bound] = True
    _nullable_type_list(out)
    _nullable_union(out)
    if "$ref" in out and len(out) > 1:  # 3.0 ignores siblings of $ref
        ref = out.pop("$ref")
        out["allOf"] = [{"$ref": ref}]
    return out


def _nullable_type_list(out: dict[str, Any]) -> None:
    types = out.get("type")
    if not isinstance(types, list):
        return
    if "null" in types:
        out["nullable"] = True
    rest = [kind for kind in types if kind != "null"]
    if len(rest) == 1:
        out["type"] = rest[0]
    else:
        out.pop("type")
        out["anyOf"] = [{"type": kind} for kind in rest]


def _nullable_union(out: dict[str, Any]) -> None:
    for key in ("anyOf", "oneOf"):
        options = out.get(key)
        if not isinstance(options, list) or {"type": "null"} not in options:
            continue
        rest = [option for option in options if option != {"type": "null"}]
        out["nullable"] = True
        if len(rest) == 1 and "$ref" not in rest[0]:
            out.pop(key)
            out.update({k: v for k, v in rest[0].items() if k not in out})
        elif len(rest) == 1:
            out.pop(key)
            out["allOf"] = rest
        else:
            out[key] = rest
