"""Assistants: a tenant's AI agents — create, configure, embed on a site, delete (spec §4.3).

Capability functions, each one transaction. `access_assistant` is the ownership rule of every
`/api/assistants/{id}…` route: another tenant's assistant is "not found", for admins too (spec
§4.3 keeps admins out of here; they have admin endpoints). Site tokens minted here carry the
assistant's `widget_version` and `domains_hash`; a change of the allowed domains and a rotation
bump the version, so every older token is refused by the site guard from then on (DESIGN §8).
"""

from __future__ import annotations

import dataclasses
import html
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from server.admin_users import UPLOADS_DIR_NAME, remove_stored_files
from server.assistant_rules import (
    DEFAULT_AI_MODEL,
    DEFAULT_BUSINESS_NAME,
    DEFAULT_OPERATOR_NAME,
    DEFAULT_WIDGET_THEME,
    check_fields,
    check_system_prompt,
    field_error,
)
from server.context import Services
from server.errors import bad_request, not_found
from server.security import sha256_hex
from server.store import assistants as store
from server.store.assistants import AssistantRecord

log = logging.getLogger(__name__)

ASSISTANT_NOT_FOUND = "Assistant not found"

# What the widget shows when the owner saved nothing (spec §4.3 widget-settings).
WIDGET_DEFAULTS: dict[str, Any] = {
    "theme": DEFAULT_WIDGET_THEME,
    "position": "bottom-right",
    "welcomeMessage": "Hello! How can we help you today?",
    "buttonText": "Chat with us",
    "showAvatar": True,
    "showOnlineStatus": True,
    "buttonSize": 80,
    "borderRadius": 16,
}
# The fields `POST …/widget-settings` may set (the rest of the assistant goes through PATCH).
WIDGET_FIELDS = ("operator_name", "business_name", "avatar_url", "widget_theme",
                 "allowed_domains", "widget_settings")


def access_assistant(
    session: Session, owner_id: int, assistant_id: int, *, for_update: bool = False
) -> AssistantRecord:
    record = store.get_owned_assistant(session, assistant_id, owner_id, for_update=for_update)
    if record is None:
        raise not_found(ASSISTANT_NOT_FOUND)
    return record


# --- create, read, update, delete ---------------------------------------------------------


def do_create_assistant(
    services: Services, owner_id: int, fields: Mapping[str, Any]
) -> AssistantRecord:
    checked = check_fields(fields)
    checked.setdefault("ai_model", DEFAULT_AI_MODEL)
    checked.setdefault("operator_name", DEFAULT_OPERATOR_NAME)
    checked.setdefault("business_name", DEFAULT_BUSINESS_NAME)
    checked.setdefault("widget_theme", DEFAULT_WIDGET_THEME)
    if "name" not in checked:
        raise field_error("name", "name is required")
    if "system_prompt" not in checked:
        checked["system_prompt"] = check_system_prompt(None)
    with services.db.write() as session:
        return store.create_assistant(session, owner_id, **checked)


def list_assistants(services: Services, owner_id: int) -> list[AssistantRecord]:
    with services.db.read() as session:
        return store.list_assistants(session, owner_id)


def get_assistant(services: Services, owner_id: int, assistant_id: int) -> AssistantRecord:
    with services.db.read() as session:
        return access_assistant(session, owner_id, assistant_id)


def do_update_assistant(
    services: Services, owner_id: int, assistant_id: int, fields: Mapping[str, Any]
) -> AssistantRecord:
    """PATCH: only the given fields; `widget_settings` is replaced whole. Any edit bumps
    `knowledge_version` (cached answers stop matching); new domains bump `widget_version`."""
    checked = check_fields(fields)
    with services.db.write() as session:
        current = access_assistant(session, owner_id, assistant_id, for_update=True)
        return store.update_assistant(
            session, assistant_id, bump_knowledge=True,
            bump_widget=_domains_change(current, checked), **checked,
        )


def do_delete_assistant(services: Services, owner_id: int, assistant_id: int) -> None:
    """Knowledge, chunks, bots and the documents only this assistant uses go; dialogs stay
    with `assistant_id = NULL`; AI-usage rows stay (they are the admin's key ledger, the FK
    nulls their pointer). Stored files are removed after the commit, so a rolled-back
    deletion never loses files."""
    with services.db.write() as session:
        access_assistant(session, owner_id, assistant_id, for_update=True)
        deleted = store.delete_assistant(session, assistant_id, owner_id)
    log.info(
        "assistant deleted",
        extra={"assistant_id": assistant_id, "owner_id": owner_id,
               "dialogs_detached": deleted.dialogs_detached,
               "documents_deleted": deleted.documents_deleted},
    )
    remove_stored_files(services.settings.data_dir / UPLOADS_DIR_NAME, deleted.storage_keys)


def do_set_website_integration(
    services: Services, owner_id: int, assistant_id: int, enabled: bool
) -> AssistantRecord:
    checked = check_fields({"website_integration_enabled": enabled})
    with services.db.write() as session:
        access_assistant(session, owner_id, assistant_id, for_update=True)
        return store.update_assistant(session, assistant_id, **checked)


def _domains_change(current: AssistantRecord, checked: Mapping[str, Any]) -> bool:
    return "allowed_domains" in checked and checked["allowed_domains"] != current.allowed_domains


# --- widget ---------------------------------------------------------------------------------


def widget_view(record: AssistantRecord) -> dict[str, Any]:
    """Stored settings merged over the defaults, with the personalisation fields."""
    settings = dict(WIDGET_DEFAULTS)
    if record.widget_theme:
        settings["theme"] = record.widget_theme
    settings.update(record.widget_settings)
    settings.update(
        operator_name=record.operator_name,
        business_name=record.business_name,
        avatar_url=record.avatar_url,
        widget_theme=record.widget_theme,
        allowed_domains=record.allowed_domains or None,
    )
    return settings


def widget_settings_of(services: Services, owner_id: int, assistant_id: int) -> dict[str, Any]:
    with services.db.read() as session:
        return widget_view(access_assistant(session, owner_id, assistant_id))


def do_save_widget_settings(
    services: Services, owner_id: int, assistant_id: int, fields: Mapping[str, Any]
) -> AssistantRecord:
    """Sets the given fields; `widget_settings` is shallow-merged into what is stored."""
    for field in set(fields) - set(WIDGET_FIELDS):
        raise field_error(field, f"{field} is not a widget setting (use PATCH)")
    checked = check_fields(fields)
    with services.db.write() as session:
        current = access_assistant(session, owner_id, assistant_id, for_update=True)
        if "widget_settings" in checked:
            checked["widget_settings"] = {**current.widget_settings, **checked["widget_settings"]}
        return store.update_assistant(
            session, assistant_id, bump_widget=_domains_change(current, checked), **checked
        )


# --- embed code and site tokens -------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class EmbedCode:
    embed_code: str
    token: str
    assistant_id: int
    assistant_name: str
    allowed_domains: str


def embed_code_for(
    services: Services, owner_id: int, assistant_id: int, theme: str | None = None
) -> EmbedCode:
    """A fresh full site token for the assistant's current domains and widget version;
    `theme` (already checked) overrides the assistant's saved widget theme in the script."""
    with services.db.read() as session:
        record = access_assistant(session, owner_id, assistant_id)
    return _embed(services, record, theme)


def do_rotate_embed_code(services: Services, owner_id: int, assistant_id: int) -> EmbedCode:
    """Bump `widget_version`: every token minted before is refused from now on."""
    with services.db.write() as session:
        current = access_assistant(session, owner_id, assistant_id, for_update=True)
        _require_domains(current)
        record = store.update_assistant(session, assistant_id, bump_widget=True)
    return _embed(services, record)


def _require_domains(record: AssistantRecord) -> None:
    if not record.allowed_domains:
        raise bad_request("Set the allowed domains of the assistant before embedding it")


def _embed(services: Services, record: AssistantRecord, theme: str | None = None) -> EmbedCode:
    _require_domains(record)
    token = services.site_tokens.mint(
        record.user_id, record.id, record.allowed_domains, record.widget_version
    )
    frontend = services.settings.frontend_url
    query = urlencode({
        "token": token,
        "assistant_id": record.id,
        "theme": theme or record.widget_theme or DEFAULT_WIDGET_THEME,
        "type": "floating",
        "host": frontend,
        "v": sha256_hex(record.allowed_domains),
    })
    src = html.escape(f"{frontend}/widget.js?{query}", quote=True)
    return EmbedCode(
        embed_code=f'<script async src="{src}"></script>',
        token=token,
        assistant_id=record.id,
        assistant_name=record.name,
        allowed_domains=record.allowed_domains,
    )


# --- service lookups --------------------------------------------------------------------------


def telegram_assistant_of(services: Services, owner_id: int) -> AssistantRecord | None:
    """For the bot workers (service auth): the assistant of the owner's first active bot."""
    with services.db.read() as session:
        return store.telegram_assistant_of(session, owner_id)
