"""The website fetcher against a real HTTP server on 127.0.0.1 that counts its requests.

Refused targets must leave the server with ZERO requests; `allow_private=True` proves the
same server is reachable. Host names are answered by a fake resolver (no DNS query ever leaves
the machine) and every socket connect is checked to go to a loopback address.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from server.ai import fetch
from server.ai.fetch import fetch_url
from server.errors import AppError, ErrorCode

PAGE = b"<html><body><p>Hello from the loopback page.</p></body></html>"


@dataclasses.dataclass
class CountingServer:
    port: int
    requests: list[tuple[str, str]]  # (path, Host header)
    release: threading.Event

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    @property
    def paths(self) -> list[str]:
        return [path for path, _host in self.requests]


def _handler(requests: list[tuple[str, str]], release: threading.Event) -> type:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            requests.append((self.path, self.headers.get("Host", "")))
            parsed = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(parsed.query))
            route = parsed.path
            if route == "/redirect":
                self._send(302, b"", {"Location": query["to"]})
            elif route == "/loop":
                self._send(302, b"", {"Location": "/loop"})
            elif route == "/big":
                self._send(200, b"x" * 100_000, {"Content-Type": "text/plain"})
            elif route == "/big-undeclared":
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                for _ in range(100):
                    self.wfile.write(b"y" * 1000)
            elif route == "/slow":
                release.wait(10)
                self._send(200, PAGE, {"Content-Type": "text/html"})
            elif route == "/missing":
                self._send(404, b"not here", {"Content-Type": "text/plain"})
            else:
                self._send(200, PAGE, {"Content-Type": "text/html; charset=utf-8"})

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The fetcher hangs up on purpose (byte cap, time cap): a broken pipe is expected.
        pass


@pytest.fixture
def server() -> Iterator[CountingServer]:
    requests: list[tuple[str, str]] = []
    release = threading.Event()
    httpd = _QuietServer(("127.0.0.1", 0), _handler(requests, release))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield CountingServer(httpd.server_address[1], requests, release)
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A fake resolver for made-up names, and a guard that every connect goes to loopback."""
    names: dict[str, list[str]] = {}
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def fake_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in names:
            answers = names[name]
            address = answers.pop(0) if len(answers) > 1 else answers[0]
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (
                (address, int(port), 0, 0) if family == socket.AF_INET6 else (address, int(port))
            )
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr)]
        try:
            ipaddress.ip_address(name)
        except ValueError as exc:
            raise socket.gaierror(socket.EAI_NONAME, f"test resolver: unknown name {name}") from exc
        return real_getaddrinfo(host, port, *args, **kwargs)

    def check(address: Any) -> None:
        if isinstance(address, tuple):
            assert ipaddress.ip_address(address[0]).is_loopback, f"connect to {address}"

    def guarded_connect(self: socket.socket, address: Any) -> Any:
        check(address)
        return real_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> Any:
        check(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    return names


async def expect_error(url: str, **options: Any) -> AppError:
    with pytest.raises(AppError) as caught:
        await fetch_url(url, **options)
    return caught.value


# --- refused targets: the server never sees a request -------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "127.1",
        "2130706433",
        "0x7f.1",
        "017700000001",
        "[::ffff:127.0.0.1]",
        "app.localhost",
    ],
)
async def test_loopback_targets_are_refused_before_any_request(
    server: CountingServer, host: str
) -> None:
    error = await expect_error(server.url("/", host))
    assert error.status == 400
    assert error.code is ErrorCode.FETCH_REFUSED
    assert server.requests == []


async def test_name_resolving_to_loopback_is_refused(
    server: CountingServer, loopback_only: dict[str, list[str]]
) -> None:
    loopback_only["evil.test"] = ["127.0.0.1"]
    error = await expect_error(server.url("/", "evil.test"))
    assert error.code is ErrorCode.FETCH_REFUSED
    assert server.requests == []


async def test_name_with_one_private_address_among_public_ones_is_refused(
    server: CountingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def two_answers(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", two_answers)
    error = await expect_error(server.url("/", "mixed.test"))
    assert error.code is ErrorCode.FETCH_REFUSED
    assert server.requests == []


async def test_allow_private_reaches_the_same_server(server: CountingServer) -> None:
    result = await fetch_url(server.url("/"), allow_private=True)
    assert result.status_code == 200
    assert result.content == PAGE
    assert result.content_type.startswith("text/html")
    assert server.paths == ["/"]


async def test_connection_goes_to_the_checked_address_with_the_original_host_header(
    server: CountingServer, loopback_only: dict[str, list[str]]
) -> None:
    # A second lookup would answer 127.0.0.2, where nothing listens: only the pinned address
    # that was checked can serve this request.
    loopback_only["rebind.test"] = ["127.0.0.1", "127.0.0.2"]
    result = await fetch_url(server.url("/page", "rebind.test"), allow_private=True)
    assert result.url == server.url("/page", "rebind.test")
    assert server.requests == [("/page", f"rebind.test:{server.port}")]
    assert loopback_only["rebind.test"] == ["127.0.0.2"]  # resolved exactly once


# --- redirects ----------------------------------------------------------------------------


def allow_first_check_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Let the first hop's address through the policy; every later hop meets the real one."""
    checked: list[str] = []
    real = fetch.address_refusal

    def first_hop_allowed(address: Any, *, allow_private: bool = False) -> str | None:
        checked.append(str(address))
        return None if len(checked) == 1 else real(address, allow_private=allow_private)

    monkeypatch.setattr(fetch, "address_refusal", first_hop_allowed)
    return checked


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/secret",
        "http://2130706433:{port}/secret",
        "http://evil.test:{port}/secret",
        "http://[::1]:{port}/secret",
    ],
)
async def test_redirect_to_a_refused_target_is_refused(
    server: CountingServer,
    loopback_only: dict[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    target: str,
) -> None:
    loopback_only["allowed.test"] = ["127.0.0.1"]
    loopback_only["evil.test"] = ["127.0.0.1"]
    checked = allow_first_check_only(monkeypatch)
    location = urllib.parse.quote(target.format(port=server.port), safe="")
    error = await expect_error(server.url(f"/redirect?to={location}", "allowed.test"))
    assert error.code is ErrorCode.FETCH_REFUSED
    assert server.paths == [f"/redirect?to={location}"]
    assert len(checked) == 2


async def test_redirect_to_a_non_http_scheme_is_refused(
    server: CountingServer, loopback_only: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    loopback_only["allowed.test"] = ["127.0.0.1"]
    allow_first_check_only(monkeypatch)
    error = await expect_error(server.url("/redirect?to=file:///etc/passwd", "allowed.test"))
    assert error.code is ErrorCode.INVALID_URL
    assert len(server.requests) == 1


async def test_redirects_are_followed_and_the_final_url_reported(server: CountingServer) -> None:
    result = await fetch_url(server.url("/redirect?to=/final"), allow_private=True)
    assert result.url == server.url("/final")
    assert result.redirects == 1
    assert server.paths == ["/redirect?to=/final", "/final"]


async def test_redirect_loops_stop_at_the_cap(server: CountingServer) -> None:
    error = await expect_error(server.url("/loop"), allow_private=True, max_redirects=3)
    assert error.status == 502
    assert error.code is ErrorCode.FETCH_FAILED
    assert server.paths == ["/loop"] * 4


# --- caps and upstream failures ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/big", "/big-undeclared"])
async def test_body_over_the_byte_cap_is_refused(server: CountingServer, path: str) -> None:
    error = await expect_error(server.url(path), allow_private=True, max_bytes=10_000)
    assert error.status == 413
    assert error.code is ErrorCode.PAYLOAD_TOO_LARGE


async def test_body_within_the_byte_cap_is_returned(server: CountingServer) -> None:
    result = await fetch_url(server.url("/big"), allow_private=True, max_bytes=100_000)
    assert len(result.content) == 100_000


async def test_slow_server_hits_the_time_cap(server: CountingServer) -> None:
    error = await expect_error(server.url("/slow"), allow_private=True, timeout_secs=0.3)
    assert error.status == 502
    assert error.code is ErrorCode.FETCH_FAILED


async def test_upstream_error_status_is_a_502(server: CountingServer) -> None:
    error = await expect_error(server.url("/missing"), allow_private=True)
    assert error.status == 502


async def test_closed_port_is_a_502(unused_port: int) -> None:
    error = await expect_error(f"http://127.0.0.1:{unused_port}/", allow_private=True)
    assert error.status == 502
    assert error.code is ErrorCode.FETCH_FAILED


async def test_unknown_host_is_a_400(loopback_only: dict[str, list[str]]) -> None:
    error = await expect_error("http://no-such-host.test/")
    assert error.status == 400
    assert error.code is ErrorCode.INVALID_URL


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
