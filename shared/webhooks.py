"""Standard Webhooks 1.0 signing and the SSRF rules for webhook targets (pure, plus one resolve).

Signature: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed by the base64 part of
a ``whsec_…`` secret. A target must be https on a public address; loopback, private,
link-local, metadata and other non-global addresses — and plain http — only where
``TT_WEBHOOK_ALLOWED_HOSTS`` names the host or a CIDR holding the address. The gateway checks
what it can without DNS at submit; the delivery worker resolves the name and checks every
address it resolves to before it connects (and then connects to that address: no rebinding).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) → the addresses it resolves to; a stub in tests, ``resolve`` otherwise."""


class UnsafeTarget(ValueError):
    """A webhook URL this deployment will not send to (the message says why)."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_…`` secret. Raises ValueError if it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error as exc:
        raise ValueError("a webhook secret is whsec_ followed by base64") from exc
    if not 24 <= len(key) <= 64:
        raise ValueError("a webhook secret holds 24 to 64 bytes")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL's parts: connect to ``address`` (pinned), send ``Host: host``."""

    scheme: str
    host: str
    port: int
    path: str
    address: str


@dataclass(frozen=True, slots=True)
class AllowList:
    hosts: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, entries: Sequence[str]) -> AllowList:
        hosts, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower())
        return cls(frozenset(hosts), tuple(networks))

    def permits(self, host: str, address: IpAddress | None) -> bool:
        if host.lower() in self.hosts:
            return True
        return address is not None and any(address in n for n in self.networks)


def split_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query). Raises UnsafeTarget for what is no http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeTarget(f"not a URL: {exc}") from exc
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeTarget("a webhook URL is https://host/…")
    if parts.username or parts.password:
        raise UnsafeTarget("a webhook URL carries no credentials")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def _literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_address(host: str, address: IpAddress, allow: AllowList) -> None:
    if not address.is_global and not allow.permits(host, address):
        raise UnsafeTarget(f"{host} resolves to {address}, a non-public address webhooks may not target")


def check_url(url: str, allow: AllowList) -> None:
    """What can be checked without DNS (at submit): scheme, form, a literal address."""
    scheme, host, _, _ = split_url(url)
    literal = _literal(host)
    if scheme == "http" and not allow.permits(host, literal):
        raise UnsafeTarget("a webhook URL must be https (plain http only for allowed hosts)")
    if literal is not None:
        check_address(host, literal, allow)


async def resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve_target(url: str, allow: AllowList, resolver: Resolver = resolve) -> Target:
    """Resolve the URL's host and refuse it unless every address is allowed; nothing is sent."""
    check_url(url, allow)
    scheme, host, port, path = split_url(url)
    literal = _literal(host)
    try:
        found = [str(literal)] if literal is not None else await resolver(host, port)
    except OSError as exc:
        raise UnsafeTarget(f"{host} does not resolve: {exc}") from exc
    if not found:
        raise UnsafeTarget(f"{host} does not resolve")
    for raw in found:
        check_address(host, ipaddress.ip_address(raw.split("%")[0]), allow)
    return Target(scheme, host, port, path, found[0])
