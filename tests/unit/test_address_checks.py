"""The SSRF address policy and numeric host parsing (pure functions, no network)."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from server.ai.fetch import address_refusal, parse_numeric_host, parse_url, pinned_request
from server.errors import AppError, ErrorCode

REFUSED = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.0.1",
    "192.168.255.255",
    "169.254.0.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "::",
    "fc00::1",
    "fd00:ec2::254",
    "fe80::1",
    "fe80::1%1",
    "fec0::1",
    "ff02::1",
    # IPv6 spellings of refused IPv4 addresses
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:192.168.1.1",
    "::ffff:169.254.169.254",
    "::ffff:7f00:1",
    "::127.0.0.1",
    "::10.0.0.1",
    "2002:7f00:1::",
    "2002:a9fe:a9fe::1",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "2001:4860:4860::8888"]


def address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize("text", REFUSED)
def test_non_public_addresses_are_refused(text: str) -> None:
    assert address_refusal(address(text)) is not None


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_are_allowed(text: str) -> None:
    assert address_refusal(address(text)) is None


@pytest.mark.parametrize("text", ["127.0.0.1", "::1", "10.0.0.1", "192.168.1.1", "fd00::1"])
def test_allow_private_lets_loopback_and_private_through(text: str) -> None:
    assert address_refusal(address(text), allow_private=True) is None


@pytest.mark.parametrize(
    "text",
    ["169.254.169.254", "fe80::1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "::ffff:169.254.169.254"],
)
def test_allow_private_still_refuses_metadata_and_special_addresses(text: str) -> None:
    assert address_refusal(address(text), allow_private=True) is not None


def test_refusal_names_the_kind_of_address() -> None:
    assert address_refusal(address("169.254.169.254")) == "a link-local address"
    assert "loopback" in (address_refusal(address("::ffff:127.0.0.1")) or "")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("0", "0.0.0.0"),
        ("3232235777", "192.168.1.1"),
        ("2852039166", "169.254.169.254"),
        ("[::1]", "::1"),
        ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
        ("8.8.8.8", "8.8.8.8"),
    ],
)
def test_numeric_host_spellings_are_parsed_as_addresses(host: str, expected: str) -> None:
    assert parse_numeric_host(host) == address(expected)


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.1", "017700000001", "3232235777"])
def test_numeric_spellings_of_private_addresses_are_refused(host: str) -> None:
    parsed = parse_numeric_host(host)
    assert parsed is not None
    assert address_refusal(parsed) is not None


@pytest.mark.parametrize("host", ["example.com", "1e100.net", "xn--e1afmkfd.xn--p1ai", "a1.b2.com"])
def test_host_names_are_not_numeric(host: str) -> None:
    assert parse_numeric_host(host) is None


@pytest.mark.parametrize(
    "host", ["1.2.3.4.5", "256.1.1.1", "1.2.65536", "99999999999", "0x", "08.1.1.1"]
)
def test_invalid_numeric_hosts_are_refused_not_looked_up(host: str) -> None:
    with pytest.raises(AppError) as caught:
        parse_numeric_host(host)
    assert caught.value.code is ErrorCode.INVALID_URL


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://example.com/",
        "http://",
        "",
        "javascript:alert(1)",
    ],
)
def test_only_http_and_https_urls_are_accepted(url: str) -> None:
    with pytest.raises(AppError) as caught:
        parse_url(url)
    assert caught.value.status == 400


def test_urls_with_credentials_are_refused() -> None:
    with pytest.raises(AppError):
        parse_url("http://user:secret@example.com/")


def test_pinned_request_connects_to_the_address_but_keeps_host_and_tls_name() -> None:
    client = httpx.AsyncClient()
    request = pinned_request(
        client, parse_url("https://example.com:8443/a?b=1"), address("93.184.216.34")
    )
    assert request.url.host == "93.184.216.34"
    assert request.url.port == 8443
    assert request.headers["host"] == "example.com:8443"
    assert request.extensions["sni_hostname"] == "example.com"


def test_pinned_request_brackets_ipv6_addresses() -> None:
    client = httpx.AsyncClient()
    request = pinned_request(client, parse_url("http://example.com/"), address("2606:4700::1111"))
    assert str(request.url) == "http://[2606:4700::1111]/"
    assert request.headers["host"] == "example.com"
