"""Fetch one web page for the knowledge base without becoming an SSRF proxy (spec §10 S15).

Every hop (the first request and each redirect) is checked the same way before any packet is
sent to the target: http/https only, no credentials in the URL, the host resolved once (numeric
spellings like `127.1` or `2130706433` are parsed as addresses, never looked up), and refused if
ANY of its addresses is not public (loopback, private, link-local incl. the cloud metadata
address, CGNAT, multicast, reserved, unspecified, and IPv6 forms embedding such an IPv4).
The request is then sent to the verified address itself -- the URL's host is replaced by
the IP, with the original `Host` header and TLS server name (SNI, certificate check) -- so a
DNS answer that changes between check and connect cannot steer the connection elsewhere.
The body is streamed under a byte cap, and the whole fetch runs under one deadline.

`allow_private` (setting ALLOW_PRIVATE_FETCH, tests only) lets loopback and private ranges
through; link-local, multicast, reserved and unspecified addresses stay refused.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import re
import socket

import anyio
import httpx

from server.errors import AppError, ErrorCode

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_MAX_BYTES = 2 * 1024 * 1024
DEFAULT_TIMEOUT_SECS = 20.0
DEFAULT_MAX_REDIRECTS = 5
MAX_URL_CHARS = 2048
USER_AGENT = "ReplyX-KnowledgeImport/1.0"
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# Names that only ever mean "this machine" or "this private network".
_PRIVATE_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan")


@dataclasses.dataclass(frozen=True, slots=True)
class FetchResult:
    url: str  # the final URL, after redirects
    status_code: int
    content_type: str
    content: bytes
    redirects: int


# --- the address policy (pure) ---------------------------------------------------------------


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, 6to4, NAT64, Teredo)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    low32 = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address in network for network in _NAT64):
        return low32
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return low32
    return None


def address_refusal(address: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why a connection to `address` is refused, or None when it is a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = address_refusal(embedded, allow_private=allow_private)
            if reason is not None:
                return f"{reason} (inside {address})"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if address.is_loopback:
        return None if allow_private else "a loopback address"
    if address.is_reserved:
        return "a reserved address"
    if address in _CGNAT:
        return None if allow_private else "a shared (CGNAT) address"
    if address.is_private:
        return None if allow_private else "a private address"
    if not address.is_global:
        return None if allow_private else "not a public address"
    return None


_NUMERIC_LABEL = re.compile(r"[0-9][0-9a-fx]*", re.IGNORECASE)


def parse_numeric_host(host: str) -> IPAddress | None:
    """An IP address written in any form a C resolver accepts (`127.1`, `0x7f.1`,
    `2130706433`, `017700000001`, `[::1]`), None for a host name.

    A host that looks numeric but is not a valid address raises: it must never go to DNS.
    """
    bare = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    labels = bare.rstrip(".").split(".")
    if not all(_NUMERIC_LABEL.fullmatch(label) for label in labels):
        return None
    try:
        values = [_c_integer(label) for label in labels]
    except ValueError as exc:
        raise AppError(ErrorCode.INVALID_URL, "The URL's host is not a valid address") from exc
    limits = {1: [2**32], 2: [256, 2**24], 3: [256, 256, 2**16], 4: [256] * 4}.get(len(values))
    if limits is None or any(value >= limit for value, limit in zip(values, limits, strict=True)):
        raise AppError(ErrorCode.INVALID_URL, "The URL's host is not a valid address")
    number = 0
    for value, limit in zip(values, limits, strict=True):
        number = number * limit + value
    return ipaddress.IPv4Address(number)


def _c_integer(label: str) -> int:
    lowered = label.lower()
    if lowered.startswith("0x"):
        return int(lowered, 16)
    if len(lowered) > 1 and lowered.startswith("0"):
        return int(lowered[1:], 8)
    return int(lowered, 10)


def _refused(detail: str) -> AppError:
    return AppError(ErrorCode.FETCH_REFUSED, detail, status=400)


def _invalid(detail: str) -> AppError:
    return AppError(ErrorCode.INVALID_URL, detail, status=400)


# --- one hop ------------------------------------------------------------------------------------


def parse_url(raw: str) -> httpx.URL:
    if not raw or len(raw) > MAX_URL_CHARS:
        raise _invalid("The URL is empty or too long")
    try:
        url = httpx.URL(raw.strip())
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise _invalid("The URL is not valid") from exc
    if url.scheme not in {"http", "https"}:
        raise _invalid("Only http and https URLs can be imported")
    if not url.raw_host:
        raise _invalid("The URL has no host")
    if url.userinfo:
        raise _invalid("URLs with credentials are not accepted")
    return url.copy_with(fragment=None)


async def resolve_checked(host: str, port: int, *, allow_private: bool) -> IPAddress:
    """The one address to connect to, after every address of the host passed the policy."""
    numeric = parse_numeric_host(host)
    if numeric is not None:
        addresses: list[IPAddress] = [numeric]
    else:
        name = host.rstrip(".").lower()
        if not allow_private and (
            "." not in name or name == "localhost" or name.endswith(_PRIVATE_SUFFIXES)
        ):
            raise _refused(f"Refused to fetch {host}: not a public host name")
        addresses = await _resolve(name, port)
    for address in addresses:
        reason = address_refusal(address, allow_private=allow_private)
        if reason is not None:
            log.warning("fetch refused", extra={"host": host, "address": str(address)})
            raise _refused(f"Refused to fetch {host}: it resolves to {reason}")
    return addresses[0]


async def _resolve(name: str, port: int) -> list[IPAddress]:
    lookup = functools.partial(socket.getaddrinfo, name, port, type=socket.SOCK_STREAM)
    try:
        infos = await anyio.to_thread.run_sync(lookup, abandon_on_cancel=True)
    except (socket.gaierror, UnicodeError) as exc:
        raise _invalid(f"The host {name} could not be resolved") from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise _invalid(f"The host {name} could not be resolved")
    return addresses


def pinned_request(client: httpx.AsyncClient, url: httpx.URL, address: IPAddress) -> httpx.Request:
    """A GET for `url` that connects to `address`, keeping the name for Host and TLS."""
    host = url.raw_host.decode("ascii")
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    return client.build_request(
        "GET",
        url.copy_with(host=str(address)),
        headers={"Host": url.netloc.decode("ascii")},
        extensions=extensions,
    )


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise AppError(ErrorCode.PAYLOAD_TOO_LARGE, f"The page is larger than {max_bytes} bytes")
    parts: list[bytes] = []
    total = 0
    async for part in response.aiter_bytes():
        total += len(part)
        if total > max_bytes:
            raise AppError(
                ErrorCode.PAYLOAD_TOO_LARGE, f"The page is larger than {max_bytes} bytes"
            )
        parts.append(part)
    return b"".join(parts)


# --- the whole fetch ------------------------------------------------------------------------


async def fetch_url(
    url: str,
    *,
    allow_private: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_secs: float = DEFAULT_TIMEOUT_SECS,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
) -> FetchResult:
    """GET a page under the SSRF policy, size cap and one overall deadline."""
    try:
        with anyio.fail_after(timeout_secs):
            return await _follow(
                parse_url(url), allow_private, max_bytes, timeout_secs, max_redirects
            )
    except TimeoutError as exc:
        raise AppError(ErrorCode.FETCH_FAILED, "The page took too long to fetch") from exc


async def _follow(
    url: httpx.URL, allow_private: bool, max_bytes: int, timeout_secs: float, max_redirects: int
) -> FetchResult:
    for hop in range(max_redirects + 1):
        address = await resolve_checked(
            url.raw_host.decode("ascii"),
            url.port or _default_port(url),
            allow_private=allow_private,
        )
        # A fresh client per hop: a pooled TLS connection verified for one name must never
        # carry a request for another name that happens to share the address.
        async with httpx.AsyncClient(
            trust_env=False,  # never through an environment proxy: we pinned the address
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_secs),
            headers={"User-Agent": USER_AGENT, "Accept": "text/html,text/plain,*/*;q=0.8"},
        ) as client:
            try:
                response = await client.send(pinned_request(client, url, address), stream=True)
            except httpx.HTTPError as exc:
                raise _upstream(url, exc) from exc
            try:
                if response.status_code in _REDIRECT_STATUSES and "location" in response.headers:
                    url = parse_url(str(url.join(response.headers["location"])))
                    continue
                if not 200 <= response.status_code < 300:
                    raise AppError(
                        ErrorCode.FETCH_FAILED,
                        f"The site answered with HTTP {response.status_code}",
                    )
                try:
                    content = await _read_capped(response, max_bytes)
                except httpx.HTTPError as exc:
                    raise _upstream(url, exc) from exc
                return FetchResult(
                    url=str(url),
                    status_code=response.status_code,
                    content_type=response.headers.get("content-type", ""),
                    content=content,
                    redirects=hop,
                )
            finally:
                await response.aclose()
    raise AppError(ErrorCode.FETCH_FAILED, f"More than {max_redirects} redirects")


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def _upstream(url: httpx.URL, exc: httpx.HTTPError) -> AppError:
    log.info("fetch failed", extra={"url": str(url), "error": repr(exc)})
    if isinstance(exc, httpx.TimeoutException):
        return AppError(ErrorCode.FETCH_FAILED, "The page took too long to fetch")
    return AppError(ErrorCode.FETCH_FAILED, "The page could not be fetched")
