"""The visitor's chat page (`GET /api/chat-iframe`) and the legacy placeholder page.

The page is `widget_static/chat.html` with its CSS and script inlined (no build step, no
CDN), both allowed by a per-response CSP nonce. Its settings travel as a JSON block the
script reads (`<` `>` `&` escaped, so no value can close the block); the title is HTML-escaped
and every message is drawn with `textContent` by the script. `frame-ancestors` lists the
domains allowed to embed the page (each allowed domain and its subdomains).
"""

from __future__ import annotations

import dataclasses
import functools
import html
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import orjson
from starlette.responses import HTMLResponse

from server.security import normalise_domain

STATIC_DIR = Path(__file__).resolve().parent.parent / "widget_static"
PLACEHOLDER = re.compile(r"{{([A-Z]+)}}")
# The named themes of the embed codes (spec §4.10) and their colours.
THEMES = {"blue": "#2563eb", "green": "#16a34a", "purple": "#7c3aed", "orange": "#ea580c"}
DEFAULT_THEME = "blue"
HEX_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
# A plain DNS name: what may safely stand as a CSP host-source.
HOST_NAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
JSON_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


@dataclasses.dataclass(frozen=True, slots=True)
class ChatPageConfig:
    """What the script needs: how to authenticate (site token or widget assistant) and looks."""

    mode: str  # "site" | "widget"
    scope: str  # separates guest ids of different credentials in localStorage
    title: str
    accent: str
    site_token: str | None = None
    assistant_id: int | None = None
    operator_name: str | None = None
    welcome: str | None = None


def theme_colour(theme: str | None) -> str | None:
    """A named theme's colour, a `#hex` colour as is, None for anything else."""
    if theme is None:
        return None
    if theme in THEMES:
        return THEMES[theme]
    if HEX_COLOUR.fullmatch(theme):
        return theme
    return None


def frame_ancestors(domain_lists: Iterable[str], extra_origins: Iterable[str] = ()) -> str:
    """`'self'`, the extra origins, and each allowed domain with its subdomains."""
    sources = ["'self'"]
    for origin in extra_origins:
        parts = urlsplit(origin)
        if parts.scheme in ("http", "https") and parts.hostname and HOST_NAME.fullmatch(
            parts.hostname
        ):
            port = f":{parts.port}" if parts.port else ""
            sources.append(f"{parts.scheme}://{parts.hostname}{port}")
    for domain_list in domain_lists:
        for raw in domain_list.split(","):
            domain = normalise_domain(raw)
            if domain and HOST_NAME.fullmatch(domain):
                sources += [domain, f"*.{domain}"]
    return " ".join(dict.fromkeys(sources))


def _security_headers(csp: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",  # the page URL carries the site token
        "Cache-Control": "no-store",
    }


@functools.cache
def _asset(name: str) -> str:
    text = (STATIC_DIR / name).read_text(encoding="utf-8")
    if name.endswith((".js", ".css")) and "</" in text.replace("<\\/", ""):
        raise RuntimeError(f"{name} must not contain '</' (it is inlined into the page)")
    return text


def _config_json(config: ChatPageConfig) -> str:
    data = {
        "mode": config.mode,
        "scope": config.scope,
        "siteToken": config.site_token,
        "assistantId": config.assistant_id,
        "accent": config.accent,
        "operatorName": config.operator_name,
        "welcome": config.welcome,
    }
    return orjson.dumps(data).decode().translate(JSON_ESCAPES)


def render_chat_page(config: ChatPageConfig, ancestors: str, ws_origins: Iterable[str]) -> HTMLResponse:
    nonce = secrets.token_urlsafe(18)
    values = {
        "NONCE": nonce,
        "TITLE": html.escape(config.title),
        "STYLE": _asset("chat.css"),
        "SCRIPT": _asset("chat.js"),
        "CONFIG": _config_json(config),
    }
    # One pass: a value (e.g. a title containing "{{NONCE}}") is never expanded again.
    page = PLACEHOLDER.sub(lambda match: values[match.group(1)], _asset("chat.html"))
    connect = " ".join(["'self'", *ws_origins])
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        f"connect-src {connect}; img-src 'self' data: https:; base-uri 'none'; "
        f"form-action 'none'; frame-ancestors {ancestors}"
    )
    return HTMLResponse(page, headers=_security_headers(csp))


def render_placeholder(user_id: int) -> HTMLResponse:
    """The original's stub for `?user_id=` without a token: it only shows the number."""
    page = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Chat</title>"
        f"</head><body><p>Chat for user {int(user_id)}</p></body></html>"
    )
    csp = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
    return HTMLResponse(page, headers=_security_headers(csp))


def websocket_origins(public_url: str) -> list[str]:
    """`ws:`/`wss:` of the public host: older browsers do not let `'self'` cover sockets."""
    parts = urlsplit(public_url)
    if not parts.hostname:
        return []
    host = parts.hostname if HOST_NAME.fullmatch(parts.hostname) else None
    if host is None:
        return []
    port = f":{parts.port}" if parts.port else ""
    return [f"ws://{host}{port}", f"wss://{host}{port}"]
