"""Embed code and site tokens: minted for the assistant's domains and widget version, refused
by the EXISTING site guard (`resolve_site`) once rotated or once the allowed domains change."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import jwt
import pytest
from assistant_data import Headers, create_assistant, stored
from starlette.testclient import TestClient

from server.context import Services
from server.errors import AppError
from server.http.guards import SiteCaller, resolve_site
from server.security import sha256_hex
from server.store.users import UserRecord

GUEST_ID = "0f6f3c1e-8d5e-4a5e-9a35-3d0f6f3c1e8d"
DOMAINS = "shop.example.com,example.org"
SCRIPT_TAG = re.compile(r'<script async src="([^"]+)"></script>')


@pytest.fixture
def headers(user: UserRecord, auth_headers: Headers) -> dict[str, str]:
    return auth_headers(user)


@pytest.fixture
def assistant(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    return create_assistant(client, headers, allowed_domains=DOMAINS)


def embed(client: TestClient, headers: dict[str, str], assistant_id: int) -> dict[str, Any]:
    response = client.get(f"/api/assistants/{assistant_id}/embed-code", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def rotate(client: TestClient, headers: dict[str, str], assistant_id: int) -> dict[str, Any]:
    response = client.post(f"/api/assistants/{assistant_id}/embed-code/rotate", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def site_check(services: Services, token: str) -> SiteCaller:
    return anyio.run(resolve_site, services, token, GUEST_ID)


def assert_refused(services: Services, token: str) -> None:
    with pytest.raises(AppError) as refused:
        site_check(services, token)
    assert refused.value.status == 401
    assert refused.value.code == "invalid_site_token"


# --- the embed code -------------------------------------------------------------------------


def test_embed_code_needs_allowed_domains(client: TestClient, headers: dict[str, str]) -> None:
    created = create_assistant(client, headers)
    response = client.get(f"/api/assistants/{created['id']}/embed-code", headers=headers)
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"


def test_embed_code_is_a_script_tag_loading_the_widget_with_a_full_site_token(
    client: TestClient, services: Services, headers: dict[str, str], assistant: dict[str, Any],
    user: UserRecord,
) -> None:
    body = embed(client, headers, assistant["id"])
    normalised = "example.org,shop.example.com"
    assert body["assistant_id"] == assistant["id"]
    assert body["assistant_name"] == assistant["name"]
    assert body["allowed_domains"] == normalised

    match = SCRIPT_TAG.fullmatch(body["embed_code"])
    assert match is not None
    src = urlsplit(html.unescape(match.group(1)))
    frontend = services.settings.frontend_url
    assert f"{src.scheme}://{src.netloc}{src.path}" == f"{frontend}/widget.js"
    query = {key: values[0] for key, values in parse_qs(src.query).items()}
    assert query == {"token": body["token"], "assistant_id": str(assistant["id"]),
                     "theme": "blue", "type": "floating", "host": frontend,
                     "v": sha256_hex(normalised)}

    claims = services.site_tokens.decode(body["token"])
    record = stored(services, assistant["id"])
    assert (claims.user_id, claims.assistant_id) == (user.id, assistant["id"])
    assert claims.allowed_domains == normalised
    assert claims.domains_hash == sha256_hex(normalised)
    assert claims.widget_version == record.widget_version


def test_embed_code_url_encodes_a_hex_theme(client: TestClient, headers: dict[str, str]) -> None:
    created = create_assistant(client, headers, allowed_domains=DOMAINS, widget_theme="#ff0066")
    body = embed(client, headers, created["id"])
    assert "theme=%23ff0066" in body["embed_code"]


def test_embed_code_token_is_accepted_by_the_site_guard(
    client: TestClient, services: Services, headers: dict[str, str], assistant: dict[str, Any],
    user: UserRecord,
) -> None:
    token = embed(client, headers, assistant["id"])["token"]
    caller = site_check(services, token)
    assert caller == SiteCaller(owner_id=user.id, assistant_id=assistant["id"], guest_id=GUEST_ID)


def test_two_embed_codes_without_changes_are_both_valid(
    client: TestClient, services: Services, headers: dict[str, str], assistant: dict[str, Any]
) -> None:
    first = embed(client, headers, assistant["id"])["token"]
    second = embed(client, headers, assistant["id"])["token"]
    site_check(services, first)
    site_check(services, second)


# --- revocation -----------------------------------------------------------------------------


def test_rotate_revokes_every_older_token(
    client: TestClient, services: Services, headers: dict[str, str], assistant: dict[str, Any]
) -> None:
    old = embed(client, headers, assistant["id"])["token"]
    version = stored(services, assistant["id"]).widget_version

    rotated = rotate(client, headers, assistant["id"])

    assert stored(services, assistant["id"]).widget_version == version + 1
    assert rotated["token"] != old
    assert set(rotated) == {"embed_code", "token", "assistant_id", "assistant_name",
                            "allowed_domains"}
    assert_refused(services, old)
    site_check(services, rotated["token"])


def test_rotate_without_allowed_domains_is_400_and_bumps_nothing(
    client: TestClient, services: Services, headers: dict[str, str]
) -> None:
    created = create_assistant(client, headers)
    before = stored(services, created["id"])
    response = client.post(f"/api/assistants/{created['id']}/embed-code/rotate", headers=headers)
    assert response.status_code == 400
    assert stored(services, created["id"]) == before


def test_changing_allowed_domains_by_patch_revokes_older_tokens(
    client: TestClient, services: Services, headers: dict[str, str], assistant: dict[str, Any]
) -> None:
    old = embed(client, headers, assistant["id"])["token"]
    version = stored(services, assistant["id"]).widget_version
    response = client.patch(f"/api/assistants/{assistant['id']}",
                            json={"allowed_domains": "new.example.com"}, headers=headers)
    assert response.status_code == 200
    assert stored(services, assistant["id"]).widget_version == version + 1
    assert_refused(services, old)
    site_check(services, embed(client, headers, assistant["id"])["token"])


def test_changing_allowed_domains_by_widget_settings_revokes_older_tokens(
    client: TestClient, services: Services, headers: dict[str, str], assistant: dict[str, Any]
) -> None:
    old = embed(client, headers, assistant["id"])["token"]
    version = stored(services, assistant["id"]).widget_version
    response = client.post(f"/api/assistants/{assistant['id']}/widget-settings",
                           json={"allowed_domains": DOMAINS + ",blog.example.org"},
                           headers=headers)
    assert response.status_code == 200
    assert stored(services, assistant["id"]).widget_version == version + 1
    assert_refused(services, old)


def test_saving_the_same_domains_keeps_tokens_valid(
    client: TestClient, services: Services, headers: dict[str, str], assistant: dict[str, Any]
) -> None:
    token = embed(client, headers, assistant["id"])["token"]
    response = client.patch(f"/api/assistants/{assistant['id']}",
                            json={"allowed_domains": "https://www.example.org/, shop.example.com",
                                  "name": "Renamed"},
                            headers=headers)
    assert response.status_code == 200
    site_check(services, token)


def test_token_claiming_another_tenants_assistant_is_refused(
    client: TestClient, services: Services, make_user: Any, auth_headers: Headers,
    user: UserRecord,
) -> None:
    foreign = create_assistant(client, auth_headers(make_user()), allowed_domains=DOMAINS)
    record = stored(services, foreign["id"])
    forged = services.site_tokens.mint(user.id, record.id, record.allowed_domains,
                                       record.widget_version)
    assert_refused(services, forged)


def test_token_of_a_deleted_assistant_is_refused(
    client: TestClient, services: Services, headers: dict[str, str], assistant: dict[str, Any]
) -> None:
    token = embed(client, headers, assistant["id"])["token"]
    assert client.delete(f"/api/assistants/{assistant['id']}", headers=headers).status_code == 200
    assert_refused(services, token)


def test_tampered_token_is_refused(
    client: TestClient, services: Services, headers: dict[str, str], assistant: dict[str, Any]
) -> None:
    token = embed(client, headers, assistant["id"])["token"]
    payload = jwt.decode(token, options={"verify_signature": False})
    payload["widget_version"] += 1
    resigned = jwt.encode(payload, "not-the-site-secret-" + "z" * 32, algorithm="HS256")
    header, _, signature = token.split(".")
    spliced = ".".join([header, resigned.split(".")[1], signature])
    assert_refused(services, resigned)
    assert_refused(services, spliced)
