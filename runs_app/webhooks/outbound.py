"""One outbound POST that cannot be aimed at the inside of the network.

A webhook URL is typed by a workspace owner, so the server must not become their way into
what only it can reach (a cloud's metadata service at 169.254.169.254, the database, an
admin page on localhost). So the host is resolved here, every address it resolves to must
be public (not loopback, private, link-local, multicast, reserved or otherwise not global)
unless STEPWORKS_WEBHOOK_ALLOW_PRIVATE=1, and the connection goes to the address that was
checked (the Host header and TLS name stay the URL's): a second DNS answer cannot change
where it goes. Redirects are followed here, a few at most, each new URL checked the same
way. Everything has a timeout. This never runs in a web request: an actor calls it.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import SplitResult, urljoin, urlsplit

MAX_REDIRECTS = 3
READ_LIMIT = 64 * 1024  # of an answer's body: read (so the connection ends cleanly), not kept
REDIRECTS = (301, 302, 303, 307, 308)


class Refused(Exception):
    """The URL is not one we deliver to (its scheme, or where its host resolves)."""


@dataclass(frozen=True)
class Answer:
    status: int
    latency_ms: int
    url: str  # where the last request went (after redirects)


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What makes an address off limits, or None for a public one."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_unspecified:
        return "unspecified"  # 0.0.0.0 and :: reach the machine itself
    if address.is_multicast or address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "non-public"
    return None


def _split(url: str) -> SplitResult:
    """The URL's parts, its port checked (urlsplit checks it only when asked)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as error:
        raise Refused(f"not a URL: {error}") from None
    return parts


def _a(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind


def resolve(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to for `host`: every address it resolves to is checked, so a
    name that answers with one public and one private address is refused too."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise OSError(f"cannot resolve {host}: {error}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    if not addresses:
        raise OSError(f"cannot resolve {host}")
    if not allow_private:
        for text in addresses:
            kind = _kind(ipaddress.ip_address(text.split("%", 1)[0]))
            if kind is not None:
                raise Refused(
                    f"{host} is at {text}, {_a(kind)} address: webhooks are not delivered "
                    "to the server's own network (STEPWORKS_WEBHOOK_ALLOW_PRIVATE=1 allows it)"
                )
    return addresses[0]


def check_url(url: str, allow_private: bool) -> None:
    """Refuse at once what can never be delivered: not http(s), no host, or a host that is
    itself a literal off-limits address. (A name is resolved, and checked, at each delivery.)"""
    parts = _split(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("only http:// and https:// URLs with a host")
    if parts.username or parts.password:
        raise Refused("no user name or password in the URL (the signature authenticates)")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        literal = None
    if literal is not None and not allow_private:
        kind = _kind(literal)
        if kind is not None:
            raise Refused(
                f"{parts.hostname} is {_a(kind)} address: webhooks are not delivered to the "
                "server's own network (STEPWORKS_WEBHOOK_ALLOW_PRIVATE=1 allows it)"
            )
    if parts.hostname in ("localhost", "localhost.localdomain") and not allow_private:
        raise Refused(
            "localhost is a loopback address: webhooks are not delivered to the server's own "
            "network (STEPWORKS_WEBHOOK_ALLOW_PRIVATE=1 allows it)"
        )


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to `address`, with the URL's host in the Host header."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to `address`; the certificate is checked against the URL's host."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _exchange(
    url: str, method: str, body: bytes, headers: dict[str, str], timeout: float, allow: bool
) -> tuple[int, str | None]:
    parts = _split(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"{url[:200]}: only http:// and https:// URLs with a host")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    address = resolve(parts.hostname, port, allow)
    kind = _PinnedHTTPS if secure else _PinnedHTTP
    connection = kind(parts.hostname, address, port, timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.request(method, path, body=body if method == "POST" else None, headers=headers)
        response = connection.getresponse()
        response.read(READ_LIMIT)
        return response.status, response.getheader("Location")
    finally:
        connection.close()


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    allow_private: bool = False,
    max_redirects: int = MAX_REDIRECTS,
) -> Answer:
    """POST `body` to `url`, following at most `max_redirects` redirects (307/308 repeat
    the POST; 301/302/303 become a GET, as browsers do), each checked before it is followed.
    Refused for an address off limits; OSError or http.client.HTTPException when the
    exchange fails (no answer, a timeout, a broken answer)."""
    started = time.monotonic()
    method = "POST"
    for _ in range(max_redirects + 1):
        status, location = _exchange(url, method, body, headers, timeout, allow_private)
        if status not in REDIRECTS or not location:
            return Answer(status, int((time.monotonic() - started) * 1000), url)
        url = urljoin(url, location)
        if status in (301, 302, 303):
            method, body = "GET", b""
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    raise Refused(f"more than {max_redirects} redirects")
