"""What an assistant's fields may hold (spec §4.3): one `check_*` per field, 422 on a bad value.

The doors only check shapes (types, unknown fields); every value rule lives here, so the
capability functions in `server/assistants.py` are safe whoever calls them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from server.errors import AppError, ErrorCode
from server.ai.prompts import DEFAULT_SYSTEM_PROMPT as DEFAULT_SUPPORT_PROMPT
from server.security import normalise_domains

AI_MODELS = ("gpt-4o", "gpt-4o-mini")
DEFAULT_AI_MODEL = "gpt-4o-mini"
DEFAULT_OPERATOR_NAME = "Support"
DEFAULT_BUSINESS_NAME = "Our company"
DEFAULT_WIDGET_THEME = "blue"

NAME_MAX_CHARS = 100
SYSTEM_PROMPT_MAX_CHARS = 5000
OPERATOR_NAME_MAX_CHARS = 100
BUSINESS_NAME_MAX_CHARS = 200
AVATAR_URL_MAX_CHARS = 1000
WIDGET_SETTINGS_MAX_BYTES = 16_384
MAX_ALLOWED_DOMAINS = 50
HOSTNAME_MAX_CHARS = 253

# Letters and digits of any script (`\w`), space, hyphen, underscore, dot.
NAME_PATTERN = re.compile(r"[\w .\-]+")
THEME_PATTERN = re.compile(r"#[0-9a-fA-F]{3}|#[0-9a-fA-F]{6}|[a-z][a-z0-9-]{0,31}")
HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
HOST_WITH_PORT = re.compile(r"(?P<host>[^:/]+)(?::(?P<port>\d{1,5}))?/?")
HTML_TAG = re.compile(r"</?[a-zA-Z][^<>]*>")
SCRIPT_BLOCK = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def field_error(field: str, message: str) -> AppError:
    """The hand-validation 422 of spec §1.2."""
    return AppError(
        ErrorCode.VALIDATION_ERROR,
        {"error": "validation_error", "message": message, "field": field},
        status=422,
    )


def check_name(value: Any) -> str:
    name = _text(value, "name").strip()
    if not 1 <= len(name) <= NAME_MAX_CHARS:
        raise field_error("name", f"Name must be 1 to {NAME_MAX_CHARS} characters")
    if not NAME_PATTERN.fullmatch(name):
        raise field_error("name", "Name may hold letters, digits, spaces and - _ . only")
    return name


def check_ai_model(value: Any) -> str:
    if value not in AI_MODELS:
        raise field_error("ai_model", f"ai_model must be one of: {', '.join(AI_MODELS)}")
    return str(value)


def check_system_prompt(value: Any) -> str:
    """Markup is removed (the prompt is plain text for the model); empty → platform default."""
    raw = "" if value is None else _text(value, "system_prompt")
    if len(raw) > SYSTEM_PROMPT_MAX_CHARS:
        raise field_error(
            "system_prompt", f"system_prompt must be at most {SYSTEM_PROMPT_MAX_CHARS} characters"
        )
    cleaned = CONTROL_CHARS.sub("", HTML_TAG.sub("", SCRIPT_BLOCK.sub("", raw))).strip()
    return cleaned or DEFAULT_SUPPORT_PROMPT


def check_flag(field: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise field_error(field, f"{field} must be true or false")
        return value

    return check


def check_allowed_domains(value: Any) -> str:
    """Comma-separated hosts with an optional scheme, port or trailing `/`; stored normalised
    (lower-case, no scheme/`www.`/port, punycode, deduplicated, sorted) — the exact string the
    site token's `domains_hash` is taken over."""
    if value is None:
        return ""
    raw = _text(value, "allowed_domains")
    hosts: list[str] = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        hosts.append(_check_host(item))
    if len(hosts) > MAX_ALLOWED_DOMAINS:
        raise field_error("allowed_domains", f"At most {MAX_ALLOWED_DOMAINS} domains")
    normalised = normalise_domains(hosts)
    return ",".join(sorted(filter(None, normalised.split(","))))


def _check_host(item: str) -> str:
    invalid = field_error("allowed_domains", f"Not a host name with an optional port: {item!r}")
    lowered = item.lower()
    for scheme in ("https://", "http://"):
        if lowered.startswith(scheme):
            lowered = lowered[len(scheme):]
            break
    match = HOST_WITH_PORT.fullmatch(lowered)
    if match is None:
        raise invalid
    host = match["host"].rstrip(".")
    port = match["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise invalid
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise invalid from exc
    labels = host.split(".")
    if len(host) > HOSTNAME_MAX_CHARS or not all(HOST_LABEL.fullmatch(label) for label in labels):
        raise invalid
    return host if port is None else f"{host}:{port}"


def check_widget_theme(value: Any) -> str | None:
    if value is None or value == "":
        return None
    theme = _text(value, "widget_theme").strip()
    if not THEME_PATTERN.fullmatch(theme):
        raise field_error("widget_theme", "widget_theme must be a theme name or a #hex colour")
    return theme


def check_avatar_url(value: Any) -> str | None:
    """Shown as an <img> in customers' sites: only http(s) or a path on our own host."""
    if value is None or value == "":
        return None
    url = _text(value, "avatar_url").strip()
    allowed_start = url.startswith(("https://", "http://")) or (
        url.startswith("/") and not url.startswith("//")
    )
    if len(url) > AVATAR_URL_MAX_CHARS or not allowed_start or any(c.isspace() for c in url):
        raise field_error("avatar_url", "avatar_url must be an http(s) URL or a /path")
    return url


def check_widget_settings(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise field_error("widget_settings", "widget_settings must be an object")
    if len(orjson.dumps(dict(value))) > WIDGET_SETTINGS_MAX_BYTES:
        raise field_error(
            "widget_settings", f"widget_settings must be at most {WIDGET_SETTINGS_MAX_BYTES} bytes"
        )
    return dict(value)


def check_label(field: str, max_chars: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is None:
            return None
        label = CONTROL_CHARS.sub("", _text(value, field)).strip()
        if len(label) > max_chars:
            raise field_error(field, f"{field} must be at most {max_chars} characters")
        return label or None

    return check


FIELD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "name": check_name,
    "ai_model": check_ai_model,
    "system_prompt": check_system_prompt,
    "is_active": check_flag("is_active"),
    "website_integration_enabled": check_flag("website_integration_enabled"),
    "allowed_domains": check_allowed_domains,
    "operator_name": check_label("operator_name", OPERATOR_NAME_MAX_CHARS),
    "business_name": check_label("business_name", BUSINESS_NAME_MAX_CHARS),
    "avatar_url": check_avatar_url,
    "widget_theme": check_widget_theme,
    "widget_settings": check_widget_settings,
}


def check_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Every given field through its rule; a field without a rule is refused."""
    checked: dict[str, Any] = {}
    for field, value in fields.items():
        rule = FIELD_CHECKS.get(field)
        if rule is None:
            raise field_error(field, f"Unknown field {field!r}")
        checked[field] = rule(value)
    return checked


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise field_error(field, f"{field} must be a string")
    return value
