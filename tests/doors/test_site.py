"""Site integration doors (spec §4.10) and the widget's public checks (§5.A): tokens, embed
codes, the chat page, visitors' dialogs in site and widget mode, validate-widget-token and
widget-config with CORS."""

from __future__ import annotations

import html
import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest
from dialog_data import (
    DOMAINS,
    GUEST,
    OTHER_GUEST,
    Headers,
    add_assistant,
    add_dialog,
    embed_token,
    site_params,
    widget_params,
)
from starlette.testclient import TestClient

from server.context import Services
from server.http.guards import resolve_site
from server.store.models import Dialog
from server.store.types import utcnow
from server.store.users import UserRecord

NONCE = re.compile(r"script-src 'nonce-([A-Za-z0-9_-]+)'")
CONFIG_BLOCK = re.compile(
    r'<script type="application/json" id="chat-config">(.*?)</script>', re.DOTALL)


@pytest.fixture
def owner(make_user: Any) -> UserRecord:
    return make_user()


@pytest.fixture
def headers(owner: UserRecord, auth_headers: Headers) -> dict[str, str]:
    return auth_headers(owner)


@pytest.fixture
def assistant(services: Services, owner: UserRecord) -> int:
    return add_assistant(services, owner.id, business_name="Shop", operator_name="Anna")


@pytest.fixture
def token(client: TestClient, headers: dict[str, str], assistant: int) -> str:
    return embed_token(client, headers, assistant)


def stored_dialog(services: Services, dialog_id: int) -> Dialog:
    with services.db.read() as session:
        row = session.get(Dialog, dialog_id)
        assert row is not None
        session.expunge(row)
        return row


# --- site token and embed codes ---------------------------------------------------------------


def test_site_token_is_account_level_and_accepted_by_the_site_guard(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    token = client.get("/api/site-token", headers=headers).json()["site_token"]
    claims = services.site_tokens.decode(token)
    assert (claims.user_id, claims.assistant_id, claims.allowed_domains) == (owner.id, None, None)
    caller = anyio.run(resolve_site, services, token, GUEST)
    assert (caller.owner_id, caller.assistant_id) == (owner.id, None)


def test_account_embed_code_has_three_iframes_pointing_at_the_chat_page(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    body = client.get("/api/embed-code", headers=headers, params={"theme": "green"}).json()
    assert set(body["codes"]) == set(body["instructions"]) == {"floating", "inline", "mobile"}
    assert body["embed_code"] == body["codes"]["floating"] and body["theme"] == "green"
    assert set(body["themes"]) == {"blue", "green", "purple", "orange"}
    for code in body["codes"].values():
        src = html.unescape(re.search(r'src="([^"]+)"', code).group(1))  # type: ignore[union-attr]
        parts = urlsplit(src)
        assert parts.path == "/api/chat-iframe"
        query = parse_qs(parts.query)
        assert query["theme"] == ["green"]
        assert services.site_tokens.decode(query["site_token"][0]).user_id == owner.id


def test_account_embed_code_defaults_to_blue_and_refuses_other_themes(
    client: TestClient, headers: dict[str, str]
) -> None:
    assert client.get("/api/embed-code", headers=headers).json()["theme"] == "blue"
    response = client.get("/api/embed-code", headers=headers, params={"theme": "red"})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


def test_post_embed_code_mints_the_same_full_token_as_the_assistant_embed_code(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str],
    assistant: int,
) -> None:
    response = client.post("/api/embed-code", headers=headers,
                           json={"assistant_id": assistant, "theme": "#ff8800"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["assistant_id"] == assistant and body["allowed_domains"] == DOMAINS
    claims = services.site_tokens.decode(body["site_token"])
    assert (claims.user_id, claims.assistant_id, claims.widget_version) == (owner.id, assistant, 1)
    assert claims.allowed_domains == DOMAINS
    assert "theme=%23ff8800" in body["embed_code"] and "widget.js?" in body["embed_code"]
    caller = anyio.run(resolve_site, services, body["site_token"], GUEST)
    assert caller.assistant_id == assistant


def test_post_embed_code_errors(
    client: TestClient, services: Services, owner: UserRecord, make_user: Any,
    headers: dict[str, str], assistant: int,
) -> None:
    missing = client.post("/api/embed-code", headers=headers, json={})
    assert (missing.status_code, missing.json()["code"]) == (400, "bad_request")
    foreign = add_assistant(services, make_user().id)
    assert client.post("/api/embed-code", headers=headers,
                       json={"assistant_id": foreign}).status_code == 404
    no_domains = add_assistant(services, owner.id, allowed_domains="")
    assert client.post("/api/embed-code", headers=headers,
                       json={"assistant_id": no_domains}).status_code == 400
    for bad in ({"assistant_id": assistant, "theme": "red;x"}, {"assistant_id": "x"},
                {"assistant_id": assistant, "extra": 1}):
        assert client.post("/api/embed-code", headers=headers, json=bad).status_code == 422, bad


# --- the chat page --------------------------------------------------------------------------------


def page_config(response: Any) -> dict[str, Any]:
    match = CONFIG_BLOCK.search(response.text)
    assert match is not None
    config: dict[str, Any] = json.loads(match.group(1))
    return config


def test_chat_page_for_a_site_token_is_html_with_a_strict_csp(
    client: TestClient, owner: UserRecord, token: str, assistant: int
) -> None:
    response = client.get("/api/chat-iframe", params={"site_token": token, "theme": "purple"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    nonce = NONCE.search(csp).group(1)  # type: ignore[union-attr]
    assert f"style-src 'nonce-{nonce}'" in csp and "default-src 'none'" in csp
    assert "frame-ancestors 'self' http://testserver shop.example.com *.shop.example.com " \
           "example.org *.example.org" in csp
    assert "connect-src 'self' ws://testserver wss://testserver" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert f'<script nonce="{nonce}">' in response.text
    for sink in (".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in response.text, sink
    assert "//" not in response.text.split("<script")[0].replace("<!doctype html>", "")  # no CDN
    config = page_config(response)
    assert config["mode"] == "site" and config["siteToken"] == token
    assert config["accent"] == "#7c3aed" and config["operatorName"] == "Anna"
    assert config["scope"] == f"u{owner.id}a{assistant}"


def test_chat_page_nonce_differs_per_response(client: TestClient, token: str) -> None:
    first = client.get("/api/chat-iframe", params={"site_token": token})
    second = client.get("/api/chat-iframe", params={"site_token": token})
    assert NONCE.search(first.headers["content-security-policy"]).group(1) != NONCE.search(  # type: ignore[union-attr]
        second.headers["content-security-policy"]).group(1)  # type: ignore[union-attr]


def test_chat_page_escapes_the_assistants_texts(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    hostile = "</script><img src=x onerror=alert(1)>{{NONCE}}"
    assistant = add_assistant(services, owner.id, business_name=hostile, operator_name=hostile,
                              widget_settings={"welcomeMessage": hostile})
    response = client.get("/api/chat-iframe", params={"site_token": embed_token(
        client, headers, assistant)})
    assert response.status_code == 200
    assert "<img src=x" not in response.text
    assert response.text.count("</script>") == 2  # the config block and the script only
    config = page_config(response)
    assert config["operatorName"] == hostile and config["welcome"] == hostile
    assert f"<title>{html.escape(hostile)}</title>" in response.text


def test_chat_page_in_widget_mode(
    client: TestClient, services: Services, owner: UserRecord, assistant: int
) -> None:
    response = client.get("/api/chat-iframe", params={"assistant_id": assistant})
    assert response.status_code == 200
    config = page_config(response)
    assert (config["mode"], config["assistantId"], config["siteToken"]) == (
        "widget", assistant, None)
    assert config["accent"] == "#2563eb"
    disabled = add_assistant(services, owner.id, website_integration_enabled=False)
    refused = client.get("/api/chat-iframe", params={"assistant_id": disabled})
    assert (refused.status_code, refused.json()["code"]) == (404, "not_found")


def test_chat_page_with_an_account_token_is_framable_by_every_active_assistant_domain(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str],
) -> None:
    add_assistant(services, owner.id, allowed_domains="a.example")
    add_assistant(services, owner.id, allowed_domains="b.example")
    add_assistant(services, owner.id, allowed_domains="off.example", is_active=False)
    token = client.get("/api/site-token", headers=headers).json()["site_token"]
    csp = client.get("/api/chat-iframe", params={"site_token": token}).headers[
        "content-security-policy"]
    assert "a.example *.a.example b.example *.b.example" in csp and "off.example" not in csp


def test_chat_page_legacy_placeholder_and_bad_input(client: TestClient, token: str) -> None:
    legacy = client.get("/api/chat-iframe", params={"user_id": 17})
    assert legacy.status_code == 200 and "Chat for user 17" in legacy.text
    assert "frame-ancestors 'self'" in legacy.headers["content-security-policy"]
    for params in ({}, {"user_id": "x"}, {"site_token": token, "theme": "javascript:1"}):
        response = client.get("/api/chat-iframe", params=params)
        assert response.status_code == 422, params
    forged = client.get("/api/chat-iframe", params={"site_token": "not.a.token"})
    assert (forged.status_code, forged.json()["code"]) == (401, "invalid_site_token")


# --- visitors' dialogs ---------------------------------------------------------------------------


def test_site_post_dialog_is_get_or_create_with_assistant_and_channel(
    client: TestClient, services: Services, owner: UserRecord, token: str, assistant: int
) -> None:
    first = client.post("/api/site/dialogs", params=site_params(token))
    assert first.status_code == 200, first.text
    again = client.post("/api/site/dialogs", params=site_params(token))
    assert first.json() == again.json() == {"id": first.json()["id"], "handoff_status": "none"}
    row = stored_dialog(services, first.json()["id"])
    assert (row.user_id, row.guest_id, row.assistant_id, row.channel) == (
        owner.id, GUEST, assistant, "web")
    other = client.post("/api/site/dialogs", params=site_params(token, OTHER_GUEST)).json()
    assert other["id"] != first.json()["id"]


def test_site_lists_and_reads_the_visitors_dialogs(
    client: TestClient, services: Services, owner: UserRecord, token: str, assistant: int
) -> None:
    older = add_dialog(services, owner.id, assistant_id=assistant, guest_id=GUEST,
                       ended_at=utcnow(),  # closed: the POST below opens a new one
                       messages=[("user", "hi"), ("system", "Operator requested")])
    newer = client.post("/api/site/dialogs", params=site_params(token)).json()["id"]
    listed = client.get("/api/site/dialogs", params=site_params(token)).json()
    assert [d["id"] for d in listed] == [newer, older]
    assert listed[1]["guest_id"] == GUEST and listed[1]["user_id"] == owner.id
    messages = client.get(f"/api/site/dialogs/{older}/messages", params=site_params(token)).json()
    assert [(m["seq"], m["sender"], m["text"]) for m in messages] == [
        (1, "user", "hi"), (2, "system", "Operator requested")]
    assert set(messages[0]) >= {"id", "dialog_id", "seq", "sender", "text", "timestamp",
                                "system_type"}


def test_account_token_dialog_gets_the_owners_first_active_assistant(
    client: TestClient, services: Services, owner: UserRecord, headers: dict[str, str]
) -> None:
    add_assistant(services, owner.id, is_active=False)
    active = add_assistant(services, owner.id)
    token = client.get("/api/site-token", headers=headers).json()["site_token"]
    dialog = client.post("/api/site/dialogs", params=site_params(token)).json()["id"]
    assert stored_dialog(services, dialog).assistant_id == active


def test_widget_mode_is_scoped_to_the_assistant(
    client: TestClient, services: Services, owner: UserRecord, assistant: int
) -> None:
    second = add_assistant(services, owner.id)
    first_dialog = client.post("/api/widget/dialogs", params=widget_params(assistant)).json()["id"]
    second_dialog = client.post("/api/widget/dialogs", params=widget_params(second)).json()["id"]
    assert first_dialog != second_dialog
    assert stored_dialog(services, second_dialog).assistant_id == second
    listed = client.get("/api/widget/dialogs", params=widget_params(assistant)).json()
    assert [d["id"] for d in listed] == [first_dialog]
    path = f"/api/widget/dialogs/{second_dialog}/messages"
    assert client.get(path, params=widget_params(second)).json() == []
    assert client.get(path, params=widget_params(assistant)).status_code == 404


@pytest.mark.parametrize(
    "fields", [{"website_integration_enabled": False}, {"is_active": False}]
)
def test_widget_mode_needs_an_active_assistant_with_the_integration_on(
    client: TestClient, services: Services, owner: UserRecord, fields: dict[str, Any]
) -> None:
    closed = add_assistant(services, owner.id, **fields)
    for method, path in (("GET", "/api/widget/dialogs"), ("POST", "/api/widget/dialogs"),
                         ("GET", "/api/widget/dialogs/1/messages")):
        response = client.request(method, path, params=widget_params(closed))
        assert (response.status_code, response.json()["code"]) == (404, "not_found"), path


@pytest.mark.parametrize(
    "params",
    [{}, {"guest_id": GUEST}, {"assistant_id": 1}, {"assistant_id": "x", "guest_id": GUEST},
     {"assistant_id": 1, "guest_id": "g" * 129}, {"assistant_id": 1, "guest_id": "a\x00b"}],
)
def test_widget_bad_visitor_parameters_are_422(client: TestClient, params: dict[str, Any]) -> None:
    response = client.get("/api/widget/dialogs", params=params)
    assert response.status_code == 422, params
    assert response.json()["code"] == "validation_error"


def test_widget_unknown_or_huge_assistant_id_is_404(client: TestClient) -> None:
    for assistant_id in ("999", "9" * 5000):
        response = client.get("/api/widget/dialogs",
                              params={"assistant_id": assistant_id, "guest_id": GUEST})
        assert response.status_code == 404


def test_site_visitor_needs_a_token_and_a_guest(client: TestClient, token: str) -> None:
    assert client.get("/api/site/dialogs", params={"guest_id": GUEST}).status_code == 401
    assert client.get("/api/site/dialogs", params={"site_token": token}).status_code == 422
    forged = client.get("/api/site/dialogs", params=site_params("x.y.z"))
    assert (forged.status_code, forged.json()["code"]) == (401, "invalid_site_token")


# --- validate-widget-token and widget-config ------------------------------------------------------


def validate(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/validate-widget-token", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "*"
    answer: dict[str, Any] = response.json()
    return answer


def test_validate_widget_token_accepts_allowed_domains_and_subdomains(
    client: TestClient, owner: UserRecord, token: str, assistant: int
) -> None:
    expected = {"valid": True, "assistant_id": assistant, "allowed_domains": DOMAINS,
                "user_id": owner.id}
    assert validate(client, token=token) == expected
    assert validate(client, token=token, domain="https://www.shop.example.com/") == expected
    assert validate(client, token=token, domain="blog.example.org") == expected
    refused = validate(client, token=token, domain="evil-example.org")
    assert refused == {"valid": False, "reason": "Domain not allowed", "allowed_domains": DOMAINS}
    assert validate(client, token=token, domain="example.org.evil.com")["valid"] is False


def test_validate_widget_token_reasons(
    client: TestClient, services: Services, owner: UserRecord, make_user: Any,
    headers: dict[str, str], token: str, assistant: int,
) -> None:
    assert validate(client)["reason"] == "No token provided"
    assert validate(client, token="")["reason"] == "No token provided"
    assert validate(client, token="abc.def.ghi")["reason"] == "Invalid token"
    account = client.get("/api/site-token", headers=headers).json()["site_token"]
    assert validate(client, token=account)["reason"] == "No assistant_id in token"
    stranger = services.site_tokens.mint(make_user().id, assistant, DOMAINS, 1)
    assert validate(client, token=stranger)["reason"] == "Assistant not found"
    client.patch(f"/api/assistants/{assistant}", headers=headers,
                 json={"allowed_domains": "new.example"})
    assert validate(client, token=token) == {
        "valid": False, "reason": "domains changed", "allowed_domains": "new.example"}
    current = embed_token(client, headers, assistant)
    client.post(f"/api/assistants/{assistant}/embed-code/rotate", headers=headers)
    assert validate(client, token=current)["reason"] == "version changed"
    client.patch(f"/api/assistants/{assistant}", headers=headers, json={"is_active": False})
    fresh = services.site_tokens.mint(owner.id, assistant, "new.example", 3)
    assert validate(client, token=fresh) == {"valid": False, "reason": "Assistant disabled"}


def test_validate_widget_token_without_domains_configured(
    client: TestClient, services: Services, owner: UserRecord
) -> None:
    bare = add_assistant(services, owner.id, allowed_domains="")
    token = services.site_tokens.mint(owner.id, bare, "", 1)
    assert validate(client, token=token)["reason"] == "No domains configured"


def test_validate_widget_token_bad_body_is_422(client: TestClient) -> None:
    assert client.post("/api/validate-widget-token", json={"token": 5}).status_code == 422
    assert client.post("/api/validate-widget-token", content=b"{").status_code == 422


def test_widget_config_for_a_current_token(
    client: TestClient, token: str, assistant: int
) -> None:
    response = client.post("/api/widget-config", json={"token": token})
    assert response.headers["access-control-allow-origin"] == "*"
    body = response.json()
    assert body["success"] is True
    config = body["config"]
    assert (config["operator_name"], config["business_name"], config["assistant_id"]) == (
        "Anna", "Shop", assistant)
    assert config["widget_theme"] == "blue" and config["widget_settings"]["position"]


def test_widget_config_refuses_a_revoked_token(
    client: TestClient, headers: dict[str, str], token: str, assistant: int
) -> None:
    client.post(f"/api/assistants/{assistant}/embed-code/rotate", headers=headers)
    assert client.post("/api/widget-config", json={"token": token}).json() == {
        "success": False, "reason": "version changed"}
    assert client.post("/api/widget-config", json={}).json() == {
        "success": False, "reason": "No token provided"}


@pytest.mark.parametrize("path", ["/api/validate-widget-token", "/api/widget-config"])
def test_cors_preflight_is_open(client: TestClient, path: str) -> None:
    response = client.options(path, headers={"Origin": "https://shop.example.com",
                                             "Access-Control-Request-Method": "POST"})
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "content-type" in response.headers["access-control-allow-headers"].lower()


def test_the_chat_pages_calls_reach_the_visitor_socket(
    client: TestClient, token: str
) -> None:
    """The page's own sequence against the real doors: get-or-create, history, the socket
    after the last seq, a message frame echoed back with its client id."""
    params = site_params(token)
    dialog = client.post("/api/site/dialogs", params=params).json()["id"]
    history = client.get(f"/api/site/dialogs/{dialog}/messages", params=params).json()
    since = history[-1]["seq"] if history else 0
    query = f"site_token={token}&guest_id={GUEST}&since={since}"
    with client.websocket_connect(f"/ws/site/dialogs/{dialog}?{query}") as socket:
        assert socket.receive_json() == {"type": "ready", "dialog_id": dialog, "seq": since}
        socket.send_json({"type": "message", "text": "Hello", "client_message_id": "c-1"})
        for _ in range(50):
            frame = socket.receive_json()
            if frame["type"] == "message:new":
                break
        assert frame["message"]["client_message_id"] == "c-1"
        assert frame["message"]["seq"] == since + 1 and frame["message"]["sender"] == "user"
    stored = client.get(f"/api/site/dialogs/{dialog}/messages", params=params).json()
    assert stored[0]["client_message_id"] == "c-1"
