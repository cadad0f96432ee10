"""Website import end to end, against a real HTTP server on 127.0.0.1 that counts requests.

With the default settings every spelling of this machine (127.0.0.1, localhost, 127.1,
2130706433, a name resolving to loopback) is refused with 400 `fetch_refused` and the server
receives ZERO requests. With ALLOW_PRIVATE_FETCH=true the same imports succeed and the page
is found by retrieval. Names are answered by a fake resolver (no DNS query leaves the
machine) and every socket connect is checked to go to a loopback address.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from doors.assistant_data import create_assistant
from doors.document_data import (
    PRICE,
    balance,
    count_rows,
    fund,
    ledger_types,
    search,
    stored_files,
)
from starlette.testclient import TestClient

from server.context import Services
from server.store.models import Document, UserKnowledge
from server.store.users import UserRecord

Headers = Callable[[UserRecord], dict[str, str]]
LOOPBACK_NAME = "intranet.test"
ARTICLE = (
    "The lighthouse cafe serves quokkaberry pancakes every morning from seven o'clock. "
    "Tables on the terrace can be booked by phone; groups of eight or more get a discount."
)
PAGE = f"""<!DOCTYPE html><html><head><title>Cafe</title><script>var x = 1;</script></head>
<body><nav><a href="/">Home</a></nav><main><article><h1>Breakfast</h1><p>{ARTICLE}</p>
<p>{ARTICLE.replace("pancakes", "waffles")}</p></article></main></body></html>""".encode()


@dataclasses.dataclass
class CountingServer:
    port: int
    paths: list[str]

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.port}{path}"


def _handler(paths: list[str]) -> type:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 -- the stdlib's name
            paths.append(self.path)
            if self.path == "/short":
                self._send(200, b"<html><body><p>Too short.</p></body></html>")
            elif self.path == "/missing":
                self._send(404, b"not here")
            elif self.path == "/moved":
                self.send_response(302)
                self.send_header("Location", "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(200, PAGE)

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture
def server() -> Iterator[CountingServer]:
    paths: list[str] = []
    httpd = _QuietServer(("127.0.0.1", 0), _handler(paths))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield CountingServer(httpd.server_address[1], paths)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """`intranet.test` and `localhost` resolve to 127.0.0.1; other names are unknown; every
    connect must go to a loopback address (the databases and the counting server)."""
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def fake_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in {LOOPBACK_NAME, "localhost"}:
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                     ("127.0.0.1", int(port)))]
        try:
            ipaddress.ip_address(name)
        except ValueError as exc:
            raise socket.gaierror(socket.EAI_NONAME, f"test resolver: unknown {name}") from exc
        return real_getaddrinfo(host, port, *args, **kwargs)

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple):
            assert ipaddress.ip_address(address[0]).is_loopback, f"connect to {address}"
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)


@pytest.fixture
def owner(user: UserRecord, services: Services) -> UserRecord:
    fund(services, user.id)
    return user


LOOPBACK_SPELLINGS = ["127.0.0.1", "localhost", "127.1", "2130706433", LOOPBACK_NAME]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
@pytest.mark.parametrize("door", ["import-website", "ingest-website"])
def test_loopback_target_is_refused_by_default_and_never_contacted(
    client: TestClient, services: Services, owner: UserRecord, auth_headers: Headers,
    server: CountingServer, host: str, door: str,
) -> None:
    headers = auth_headers(owner)
    assistant_id = create_assistant(client, headers)["id"]
    if door == "import-website":
        response = client.post("/api/documents/import-website", headers=headers,
                               json={"url": server.url(host), "assistant_id": assistant_id})
    else:
        response = client.post(f"/api/assistants/{assistant_id}/ingest-website",
                               headers=headers, json={"url": server.url(host)})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "fetch_refused"
    assert server.paths == []
    assert count_rows(services, Document) == 0
    assert ledger_types(services, owner.id) == []  # nothing charged, nothing refunded


class TestPrivateFetchAllowed:
    @pytest.fixture
    def settings_env(self) -> dict[str, str]:
        return {"ALLOW_PRIVATE_FETCH": "true"}

    @pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
    def test_import_succeeds_and_the_page_is_retrievable(
        self, client: TestClient, services: Services, owner: UserRecord,
        auth_headers: Headers, server: CountingServer, host: str,
    ) -> None:
        headers = auth_headers(owner)
        assistant_id = create_assistant(client, headers)["id"]
        before = balance(services, owner.id)
        response = client.post("/api/documents/import-website", headers=headers,
                               json={"url": server.url(host), "assistant_id": assistant_id})
        assert response.status_code == 200, response.text
        document = response.json()
        assert document["filename"].startswith("website_") and document["filename"].endswith(".txt")
        assert server.paths == ["/"]
        assert balance(services, owner.id) == before - PRICE
        [hit] = search(services, owner.id, assistant_id, "quokkaberry pancakes")
        assert hit.doc_id == document["id"] and hit.doc_type == "website"
        text = client.get(f"/api/documents/{document['id']}/text", headers=headers).json()["text"]
        assert "quokkaberry" in text and "var x" not in text

    def test_ingest_website_reports_the_final_url_and_indexes_for_the_assistant(
        self, client: TestClient, services: Services, owner: UserRecord,
        auth_headers: Headers, server: CountingServer,
    ) -> None:
        headers = auth_headers(owner)
        assistant_id = create_assistant(client, headers)["id"]
        response = client.post(f"/api/assistants/{assistant_id}/ingest-website", headers=headers,
                               json={"url": server.url(LOOPBACK_NAME, "/moved")})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["ok"] is True and body["url"] == server.url(LOOPBACK_NAME)
        assert body["chars_indexed"] > 100
        assert count_rows(services, UserKnowledge, UserKnowledge.doc_id == body["doc_id"],
                          UserKnowledge.assistant_id == assistant_id,
                          UserKnowledge.doc_type == "website_single") == 1
        [hit] = search(services, owner.id, assistant_id, "quokkaberry")
        assert hit.doc_id == body["doc_id"]
        assert ledger_types(services, owner.id) == ["document_upload"]

    def test_page_with_too_little_text_is_400_and_not_charged(
        self, client: TestClient, services: Services, owner: UserRecord,
        auth_headers: Headers, server: CountingServer,
    ) -> None:
        response = client.post("/api/documents/import-website", headers=auth_headers(owner),
                               json={"url": server.url("127.0.0.1", "/short")})
        assert response.status_code == 400 and response.json()["code"] == "empty_document"
        assert ledger_types(services, owner.id) == []
        assert stored_files(services) == []

    def test_upstream_error_is_502(
        self, client: TestClient, owner: UserRecord, auth_headers: Headers,
        server: CountingServer,
    ) -> None:
        response = client.post("/api/documents/import-website", headers=auth_headers(owner),
                               json={"url": server.url("127.0.0.1", "/missing")})
        assert response.status_code == 502 and response.json()["code"] == "fetch_failed"

    def test_import_without_balance_is_402_before_any_fetch(
        self, client: TestClient, user: UserRecord, auth_headers: Headers,
        server: CountingServer,
    ) -> None:
        response = client.post("/api/documents/import-website", headers=auth_headers(user),
                               json={"url": server.url("127.0.0.1")})
        assert response.status_code == 402
        assert response.json()["detail"]["error"] == "insufficient_balance"
        assert server.paths == []
