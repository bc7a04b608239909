"""Which callback URLs septet may call: the SSRF rules, checked at accept and at delivery.

A submit must not make septet call into the operator's own network. So a callback URL
    - is http or https, with a host and no user name or password in it;
    - names a host in the account's `allowed_hosts`, when that list is set ("*.example.com"
      allows the subdomains of example.com);
    - does not name or resolve to a loopback, private, link-local, multicast, unspecified
      or otherwise non-public address (IPv4 and IPv6, an IPv4-mapped IPv6 address judged
      as its IPv4 address; "localhost" and "*.localhost" are loopback, RFC 6761) — unless
      `allowed_hosts` lists that host exactly (a test receiver on 127.0.0.1, an internal
      service the operator means).
At accept (`check_url`) the URL itself is judged, without a DNS lookup on the send path;
at each delivery (`check_resolved`) the addresses its name resolves to are judged again,
since DNS may change. Refusals are values (`Refusal`); `describe` renders the sentence.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

import anyio
import msgspec

from engine.webhooks.settings import AccountWebhooks

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Rule(enum.Enum):
    NOT_HTTP = "not_http"
    NO_HOST = "no_host"
    CREDENTIALS = "credentials"
    NOT_ALLOWED = "not_allowed"
    ADDRESS = "address"
    UNRESOLVED = "unresolved"
    NO_SECRET = "no_secret"  # noqa: S105 - the rule's name, not a secret


class Refusal(msgspec.Struct, frozen=True):
    """Why a callback URL may not be called: the rule, the host, and for an address rule
    the kind of address (loopback, private, ...) and the address itself."""

    rule: Rule
    host: str = ""
    kind: str = ""
    address: str = ""


LOCALHOST_NAMES: Final = ("localhost", "localhost.")


def describe(refusal: Refusal) -> str:
    """The sentence a client reads (in a `rejected` event, or a webhook's give-up line)."""
    host = refusal.host
    match refusal.rule:
        case Rule.NOT_HTTP:
            return "callback_url must be an http or https URL"
        case Rule.NO_HOST:
            return "callback_url has no host"
        case Rule.CREDENTIALS:
            return "callback_url must not carry a user name or password"
        case Rule.NOT_ALLOWED:
            return f"callback_url host {host!r} is not in the account's webhook allowed_hosts"
        case Rule.ADDRESS:
            shown = f" ({refusal.address})" if refusal.address and refusal.address != host else ""
            return (
                f"callback_url host {host!r}{shown} is a {refusal.kind} address; septet calls"
                " only public addresses unless the account's webhook allowed_hosts lists"
                " the host"
            )
        case Rule.UNRESOLVED:
            return f"callback_url host {host!r} does not resolve to an address"
        case Rule.NO_SECRET:
            return "callback_url needs a webhook secret for the account, and it has none"


def host_of(url: str) -> str | Refusal:
    """The URL's host (lower case, IPv6 without brackets), or why it has none usable."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # a port that is not a number is a ValueError
    except ValueError:
        return Refusal(Rule.NO_HOST)
    if parts.scheme.lower() not in ("http", "https"):
        return Refusal(Rule.NOT_HTTP)
    if parts.username is not None or parts.password is not None:
        return Refusal(Rule.CREDENTIALS)
    if not host:
        return Refusal(Rule.NO_HOST)
    return host.lower()


def _listed(host: str, allowed: Sequence[str]) -> bool:
    for entry in allowed:
        entry = entry.lower()
        if entry == host or (entry.startswith("*.") and host.endswith(entry[1:])):
            return True
    return False


def address_kind(address: IPAddress) -> str | None:
    """What makes an address one septet does not call, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "non-public"
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_url(url: str, account: AccountWebhooks, *, signed: bool = True) -> Refusal | None:
    """The accept-time rules (no DNS lookup): scheme, host, allow-list, literal addresses
    and localhost names; and for a `signed` call (a webhook POST, not Kannel's dlr-url
    GET) the account must have a secret to sign with."""
    host = host_of(url)
    if isinstance(host, Refusal):
        return host
    if account.allowed_hosts and not _listed(host, account.allowed_hosts):
        return Refusal(Rule.NOT_ALLOWED, host)
    exact = host in (entry.lower() for entry in account.allowed_hosts)
    if not exact:
        if host in LOCALHOST_NAMES or host.endswith(".localhost"):
            return Refusal(Rule.ADDRESS, host, "loopback")
        literal = _literal(host)
        if literal is not None and (kind := address_kind(literal)) is not None:
            return Refusal(Rule.ADDRESS, host, kind, str(literal))
    if signed and not account.secret:
        return Refusal(Rule.NO_SECRET, host)
    return None


def names_an_address(url: str) -> bool:
    """Whether the URL's host is an IP address literal: its delivery-time check involves no
    DNS, so its answer holds as long as the account's settings do."""
    host = host_of(url)
    return not isinstance(host, Refusal) and _literal(host) is not None


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (the system resolver, off the event loop)."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def judge_addresses(
    host: str, addresses: Sequence[IPAddress], account: AccountWebhooks
) -> Refusal | None:
    """The delivery-time rule on what the host resolved to: every address must be public,
    unless the allow-list names the host exactly."""
    if not addresses:
        return Refusal(Rule.UNRESOLVED, host)
    if host in (entry.lower() for entry in account.allowed_hosts):
        return None
    for address in addresses:
        kind = address_kind(address)
        if kind is not None:
            return Refusal(Rule.ADDRESS, host, kind, str(address))
    return None


async def check_resolved(
    url: str, account: AccountWebhooks, *, signed: bool = True
) -> Refusal | None:
    """The delivery-time check: the accept-time rules again (the allow-list may have
    changed), then the addresses the host resolves to now."""
    refusal = check_url(url, account, signed=signed)
    if refusal is not None:
        return refusal
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    return judge_addresses(host, await resolve(host, port), account)
