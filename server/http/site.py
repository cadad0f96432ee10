"""Doors of the `site` module (spec §4.10) and the widget's public checks (§5.A
validate-widget-token, widget-config).

Visitors come in two ways: `site` (a site token + `guest_id`) and `widget` (the token-less
`assistant_id` + `guest_id` of an assistant whose owner turned the website integration on);
both are auth classes of `server/http/guards.py`. A visitor only ever sees dialogs of
(owner, guest) — and of the assistant when it came through one; anything else is 404.
Dialogs are created with the assistant and channel `web`. Messages are written by the
dialog's actor (the WebSocket and the lead's message doors), never here.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlencode

from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy.orm import Session
from starlette.responses import Response

from server import assistants
from server.actors.events import message_payload
from server.chat_page import (
    DEFAULT_THEME,
    THEMES,
    ChatPageConfig,
    frame_ancestors,
    render_chat_page,
    render_placeholder,
    theme_colour,
    websocket_origins,
)
from server.context import Services
from server.errors import AppError, bad_request, not_found
from server.http.dialogs import render_dialog_core
from server.http.guards import SiteCaller, resolve_site_token, resolve_widget_assistant
from server.http.routing import MAX_DB_ID, ApiRouter, Call, validation_error
from server.http.schemas import Lenient, Strict
from server.security import SiteClaims, domain_allowed, sha256_hex
from server.store import assistants as assistant_store
from server.store import dialog_queries as queries
from server.store import dialogs as dialog_store
from server.store import users as user_store
from server.store.assistants import AssistantRecord
from server.store.dialog_queries import DialogRecord
from server.store.dialogs import MessageRecord

router = ApiRouter("site")

T = TypeVar("T")
DbId = Annotated[int, Field(ge=0, le=MAX_DB_ID)]
MAX_TOKEN_CHARS = 4096
VISITOR_CHANNEL = "web"
DIALOG_NOT_FOUND = "Dialog not found"
CORS = {"Access-Control-Allow-Origin": "*"}
CORS_PREFLIGHT = CORS | {
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "600",
}
MAX_WELCOME_CHARS = 1000
NamedTheme = Literal["blue", "green", "purple", "orange"]


class EmbedQuery(Lenient):
    theme: NamedTheme = DEFAULT_THEME


def _check_theme(value: str) -> str:
    if theme_colour(value) is None:
        raise ValueError(f"theme must be one of {', '.join(THEMES)} or a #hex colour")
    return value


Theme = Annotated[str, Field(max_length=32), AfterValidator(_check_theme)]


class EmbedCodeIn(Strict):
    assistant_id: DbId | None = None  # required, but its absence is the spec's 400
    theme: Theme | None = None


class ChatIframeQuery(Lenient):
    site_token: str | None = Field(None, max_length=MAX_TOKEN_CHARS)
    assistant_id: DbId | None = None
    user_id: DbId | None = None
    theme: Theme | None = None


class WidgetQuery(Lenient):
    """The widget variant's visitor (documents the `widget` auth class's parameters)."""

    assistant_id: DbId
    guest_id: str = Field(min_length=1, max_length=128)


class WidgetTokenIn(Lenient):
    token: str | None = Field(None, max_length=MAX_TOKEN_CHARS)
    domain: str | None = Field(None, max_length=512)


class WidgetConfigIn(Lenient):
    token: str | None = Field(None, max_length=MAX_TOKEN_CHARS)


class DialogIdOut(BaseModel):
    id: int
    handoff_status: str


# --- rendering ------------------------------------------------------------------------------


def render_visitor_dialog(dialog: DialogRecord) -> dict[str, Any]:
    return render_dialog_core(dialog)


def render_visitor_message(message: MessageRecord) -> dict[str, Any]:
    return message_payload(message)


def iframe_codes(public_url: str, site_token: str, theme: str) -> dict[str, str]:
    src = html.escape(
        f"{public_url}/api/chat-iframe?{urlencode({'site_token': site_token, 'theme': theme})}",
        quote=True,
    )
    frame = f'<iframe src="{src}" title="Chat" allow="clipboard-write" style="border:0;'
    return {
        "floating": frame + "position:fixed;bottom:20px;right:20px;width:380px;height:600px;"
        "max-height:85vh;border-radius:16px;box-shadow:0 8px 32px rgba(0,0,0,.18);"
        'z-index:2147483000"></iframe>',
        "inline": frame + 'width:100%;height:600px;border-radius:12px"></iframe>',
        "mobile": frame + "position:fixed;top:0;left:0;width:100%;height:100%;"
        'z-index:2147483000"></iframe>',
    }


EMBED_INSTRUCTIONS = {
    "floating": "Paste before </body>: a chat window fixed to the bottom-right corner.",
    "inline": "Paste where the chat should appear inside the page content.",
    "mobile": "Paste on a page of its own: the chat fills the whole screen.",
}


# --- reads and the get-or-create --------------------------------------------------------------


def read(services: Services, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with services.db.read() as session:
        return func(session, *args, **kwargs)


def visitor(call: Call) -> SiteCaller:
    assert call.caller.site is not None  # the site/widget auth class set it
    return call.caller.site


def visitor_messages(session: Session, site: SiteCaller, dialog_id: int) -> list[MessageRecord]:
    dialog = queries.guest_dialog(session, dialog_id, site.owner_id, site.guest_id,
                                  site.assistant_id)
    if dialog is None:
        raise not_found(DIALOG_NOT_FOUND)
    return queries.list_messages(session, dialog_id)


def open_visitor_dialog(services: Services, site: SiteCaller) -> DialogRecord:
    """The visitor's open web dialog, created on first use. An account-level site token
    names no assistant: the owner's oldest active one answers, so it is stored too."""
    with services.db.write() as session:
        assistant_id = site.assistant_id
        if assistant_id is None:
            assistant_id = queries.first_active_assistant_id(session, site.owner_id)
        dialog_id = dialog_store.get_or_create_guest_dialog(
            session, site.owner_id, site.guest_id, VISITOR_CHANNEL, assistant_id
        )
        dialog = queries.get_dialog(session, dialog_id)
    assert dialog is not None
    return dialog


# --- tokens and embed codes -------------------------------------------------------------------


@router.route("GET", "/api/site-token", auth="user",
              summary="An account-level site token (no assistant, no domains)")
async def site_token(call: Call) -> dict[str, Any]:
    return {"site_token": call.services.site_tokens.mint(call.user.id)}


@router.route("GET", "/api/embed-code", auth="user", query=EmbedQuery,
              summary="Account-level iframe snippets (floating, inline, mobile)")
async def account_embed_code(call: Call) -> dict[str, Any]:
    theme: str = call.query.theme
    token = call.services.site_tokens.mint(call.user.id)
    codes = iframe_codes(call.services.settings.public_url, token, theme)
    return {"embed_code": codes["floating"], "codes": codes, "theme": theme,
            "instructions": EMBED_INSTRUCTIONS, "themes": THEMES}


@router.route("POST", "/api/embed-code", auth="user", body=EmbedCodeIn, errors=(400, 404),
              summary="The assistant's widget script and its domain-bound site token")
async def assistant_embed_code(call: Call) -> dict[str, Any]:
    body: EmbedCodeIn = call.body
    if body.assistant_id is None:
        raise bad_request("assistant_id is required")
    embed = await call.run(assistants.embed_code_for, call.services, call.user.id,
                           body.assistant_id, body.theme)
    return {"embed_code": embed.embed_code, "site_token": embed.token,
            "assistant_id": embed.assistant_id, "allowed_domains": embed.allowed_domains}


# --- the chat page ----------------------------------------------------------------------------


def _page_config(mode: str, scope: str, assistant: AssistantRecord | None, theme: str | None,
                 **credentials: Any) -> ChatPageConfig:
    welcome = (assistant.widget_settings.get("welcomeMessage") if assistant else None) or (
        assistants.WIDGET_DEFAULTS["welcomeMessage"])
    return ChatPageConfig(
        mode=mode,
        scope=scope,
        title=(assistant.business_name or assistant.name) if assistant else "Chat",
        accent=theme_colour(theme) or theme_colour(assistant.widget_theme if assistant else None)
        or THEMES[DEFAULT_THEME],
        operator_name=assistant.operator_name if assistant else None,
        welcome=str(welcome)[:MAX_WELCOME_CHARS] if isinstance(welcome, str) else None,
        **credentials,
    )


def _site_page(services: Services, claims: SiteClaims, site_token: str, theme: str | None
               ) -> tuple[ChatPageConfig, list[str]]:
    with services.db.read() as session:
        if claims.assistant_id is not None:
            assistant = assistant_store.get_assistant(session, claims.assistant_id)
            domains = [assistant.allowed_domains] if assistant else []
            scope = f"u{claims.user_id}a{claims.assistant_id}"
        else:
            first = queries.first_active_assistant_id(session, claims.user_id)
            assistant = assistant_store.get_assistant(session, first) if first else None
            domains = queries.active_assistant_domains(session, claims.user_id)
            scope = f"u{claims.user_id}"
    config = _page_config("site", scope, assistant, theme, site_token=site_token)
    return config, domains


@router.route("GET", "/api/chat-iframe", auth="none", query=ChatIframeQuery, errors=(401, 404),
              summary="The visitor's chat page (HTML) for the widget iframe")
async def chat_iframe(call: Call) -> Response:
    """`site_token` (site mode) or `assistant_id` (widget mode) → the chat page, framable
    only by the assistant's allowed domains; only `user_id` → the original's placeholder."""
    query: ChatIframeQuery = call.query
    settings = call.services.settings
    if query.site_token:
        claims = await resolve_site_token(call.services, query.site_token)
        config, domains = await call.run(_site_page, call.services, claims, query.site_token,
                                          query.theme)
    elif query.assistant_id is not None:
        assistant = await resolve_widget_assistant(call.services, query.assistant_id)
        config = _page_config("widget", f"a{assistant.id}", assistant, query.theme,
                              assistant_id=assistant.id)
        domains = [assistant.allowed_domains]
    elif query.user_id is not None:
        return render_placeholder(query.user_id)
    else:
        raise validation_error([{"loc": ["query", "site_token"], "type": "missing",
                                 "msg": "site_token, assistant_id or user_id is required"}])
    ancestors = frame_ancestors(domains, [settings.frontend_url])
    return render_chat_page(config, ancestors, websocket_origins(settings.public_url))


# --- visitors' dialogs ----------------------------------------------------------------------


@router.route("GET", "/api/site/dialogs", auth="site",
              summary="The visitor's dialogs, newest first (site token)")
@router.route("GET", "/api/widget/dialogs", auth="widget", query=WidgetQuery, errors=(404,),
              summary="The visitor's dialogs with this assistant, newest first (widget)")
async def visitor_dialogs(call: Call) -> list[dict[str, Any]]:
    site = visitor(call)
    dialogs = await call.run(read, call.services, queries.guest_dialogs, site.owner_id,
                             site.guest_id, site.assistant_id)
    return [render_visitor_dialog(dialog) for dialog in dialogs]


@router.route("POST", "/api/site/dialogs", auth="site", response=DialogIdOut,
              summary="Get or create the visitor's open dialog (site token)")
@router.route("POST", "/api/widget/dialogs", auth="widget", query=WidgetQuery,
              response=DialogIdOut, errors=(404,),
              summary="Get or create the visitor's open dialog with this assistant (widget)")
async def open_dialog(call: Call) -> dict[str, Any]:
    dialog = await call.run(open_visitor_dialog, call.services, visitor(call))
    return {"id": dialog.id, "handoff_status": dialog.handoff_status}


@router.route("GET", "/api/site/dialogs/{dialog_id}/messages", auth="site", errors=(404,),
              summary="Messages of the visitor's dialog in order (site token)")
@router.route("GET", "/api/widget/dialogs/{dialog_id}/messages", auth="widget",
              query=WidgetQuery, errors=(404,),
              summary="Messages of the visitor's dialog in order (widget)")
async def visitor_dialog_messages(call: Call) -> list[dict[str, Any]]:
    messages = await call.run(read, call.services, visitor_messages, visitor(call),
                              call.path["dialog_id"])
    return [render_visitor_message(message) for message in messages]


# --- the widget's public checks (CORS open) -------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    reason: str | None  # None: valid
    assistant: AssistantRecord | None = None


def token_verdict(session: Session, services: Services, token: str | None,
                  domain: str | None = None) -> Verdict:
    """The checks of spec §5.A in the original's order, each failure with its reason."""
    if not token:
        return Verdict("No token provided")
    try:
        claims = services.site_tokens.decode(token)
    except AppError:
        return Verdict("Invalid token")
    if claims.assistant_id is None:
        return Verdict("No assistant_id in token")
    assistant = assistant_store.get_assistant(session, claims.assistant_id)
    if assistant is None or assistant.user_id != claims.user_id:
        return Verdict("Assistant not found")
    owner = user_store.get_user(session, assistant.user_id)
    if not assistant.is_active or owner is None or owner.status != "active":
        return Verdict("Assistant disabled", assistant)
    if claims.domains_hash != sha256_hex(assistant.allowed_domains):
        return Verdict("domains changed", assistant)
    if claims.widget_version != assistant.widget_version:
        return Verdict("version changed", assistant)
    if not assistant.allowed_domains:
        return Verdict("No domains configured", assistant)
    if domain and domain.strip() and not domain_allowed(domain, assistant.allowed_domains):
        return Verdict("Domain not allowed", assistant)
    return Verdict(None, assistant)


@router.route("POST", "/api/validate-widget-token", auth="none", body=WidgetTokenIn,
              summary="Is this embed token current and allowed on this domain? (always 200)")
async def validate_widget_token(call: Call) -> dict[str, Any]:
    body: WidgetTokenIn = call.body
    call.response_headers.update(CORS)
    verdict = await call.run(read, call.services, token_verdict, call.services, body.token,
                             body.domain)
    assistant = verdict.assistant
    if verdict.reason is None and assistant is not None:
        return {"valid": True, "assistant_id": assistant.id,
                "allowed_domains": assistant.allowed_domains, "user_id": assistant.user_id}
    answer: dict[str, Any] = {"valid": False, "reason": verdict.reason}
    if assistant is not None and verdict.reason != "Assistant disabled":
        answer["allowed_domains"] = assistant.allowed_domains
    return answer


@router.route("POST", "/api/widget-config", auth="none", body=WidgetConfigIn,
              summary="The widget's look for a current embed token (always 200)")
async def widget_config(call: Call) -> dict[str, Any]:
    call.response_headers.update(CORS)
    verdict = await call.run(read, call.services, token_verdict, call.services, call.body.token)
    assistant = verdict.assistant
    if verdict.reason is not None or assistant is None:
        return {"success": False, "reason": verdict.reason}
    view = assistants.widget_view(assistant)
    return {
        "success": True,
        "config": {
            "operator_name": view["operator_name"],
            "business_name": view["business_name"],
            "avatar_url": view["avatar_url"],
            "widget_theme": assistant.widget_theme or DEFAULT_THEME,
            "widget_settings": {**assistants.WIDGET_DEFAULTS, **assistant.widget_settings},
            "assistant_id": assistant.id,
        },
    }


@router.route("OPTIONS", "/api/validate-widget-token", auth="none",
              summary="CORS preflight of validate-widget-token")
@router.route("OPTIONS", "/api/widget-config", auth="none",
              summary="CORS preflight of widget-config")
async def widget_preflight(call: Call) -> Response:
    return Response(status_code=204, headers=CORS_PREFLIGHT)

