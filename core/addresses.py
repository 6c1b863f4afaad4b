"""Which URLs the server may send to on a caller's behalf (webhook targets), and which hosts a
provider's payload may point our credentials at.

A caller-chosen URL must name a public address: loopback, link-local, private, CGNAT,
multicast, reserved and unspecified addresses (IPv4 and IPv6, also embedded in IPv4-mapped,
NAT64 and 6to4 addresses) are refused unless the operator allow-lists the host or a range
(``[delivery] allow_hosts``). The URL is checked when it is stored (no DNS: the answer can
change) and every resolved address again when the connection is made (``triggers/egress.py``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from core.errors import BadRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NON_PUBLIC_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
        "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
        "::/127", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/32",
        "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip
"""The same rule as a table, for a packet filter (``dispatch/sandbox/netfilter.py``, what an
``internet`` run may not reach): IANA's special-purpose registries minus what is global, plus
multicast and the reserved rest. :func:`is_public_address` refuses every address in them."""

# Beyond what ``ipaddress`` calls non-global on every supported Python version.
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "100.64.0.0/10",  # CGNAT (RFC 6598)
        "192.0.0.0/24",
        "192.88.99.0/24",  # the retired 6to4 relay anycast (RFC 7526)
        "198.18.0.0/15",
        "240.0.0.0/4",
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
        "fc00::/7",
        "fec0::/10",
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_HOSTNAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?$")
# WHATWG URL parsers read a host whose last label is a number as an IPv4 address
# (``0x7f.1``, ``0177.0.0.1``, ``2130706433``): never a name, and never canonical.
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")


class RefusedDestination(BadRequest):
    """The server does not send to this address."""


def is_public_address(address: IPAddress) -> bool:
    """Whether ``address`` is one the whole internet can reach, and nothing of ours."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
        if address.teredo is not None:
            return False
    return not (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or any(address in network for network in _NOT_PUBLIC if network.version == address.version)
    )


def _allow_entry(entry: str) -> str | IPNetwork:
    text = entry.strip().lower()
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    name = text.removeprefix("*.")
    if not _HOSTNAME.match(name):
        raise ValueError(f"{entry!r} is neither a host name, an IP address nor a CIDR range")
    return text.rstrip(".")


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """Public addresses, plus what the operator allow-listed (names, ``*.`` suffixes, ranges)."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def allowing(cls, entries: Iterable[str]) -> DestinationPolicy:
        """The policy for ``[delivery] allow_hosts`` (raises ``ValueError`` on a bad entry)."""
        parsed = [_allow_entry(entry) for entry in entries]
        return cls(
            names=frozenset(entry for entry in parsed if isinstance(entry, str)),
            networks=tuple(entry for entry in parsed if not isinstance(entry, str)),
        )

    def allows_name(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.names or any(
            name.startswith("*.") and host.endswith(name[1:]) for name in self.names
        )

    def allows_address(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            if self.allows_address(address.ipv4_mapped):
                return True
        return is_public_address(address) or any(
            address in network for network in self.networks if network.version == address.version
        )

    def check_address(self, host: str, address: IPAddress) -> None:
        """Raises :class:`RefusedDestination` unless the server may connect to ``address``
        (which ``host`` resolved to)."""
        if not self.allows_address(address):
            what = (
                f"{address} is" if ip_literal(host) == address else f"{host} resolves to {address},"
            )
            raise RefusedDestination(
                f"{what} not a public address (allow it in [delivery] allow_hosts)"
            )

    def check_url(self, url: str) -> SplitResult:
        """``url``, split, if the server may send to it, judged without DNS; else
        :class:`RefusedDestination` naming the problem."""
        parts = split_http_url(url)
        host = parts.hostname or ""
        if self.allows_name(host):
            return parts
        literal = ip_literal(host)
        if literal is not None:
            self.check_address(host, literal)
            return parts
        if not _HOSTNAME.match(host) or _NUMERIC_LABEL.match(host.rstrip(".").rsplit(".", 1)[-1]):
            raise RefusedDestination(f"{_shown(url)}: {host!r} is not a host name")
        if host.rstrip(".") == "localhost" or host.rstrip(".").endswith(".localhost"):
            raise RefusedDestination(
                f"{_shown(url)}: {host} is this machine (allow it in [delivery] allow_hosts)"
            )
        return parts


def split_http_url(url: str) -> SplitResult:
    """``url`` split, if it is a plain absolute http(s) URL: no user info, no control
    characters or spaces, a host, a valid port. Else :class:`RefusedDestination`."""
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise RefusedDestination(
            f"{_shown(url)}: a URL must not contain spaces or control characters"
        )
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed "[" in the host
        raise RefusedDestination(f"{_shown(url)} is not a URL") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise RefusedDestination(f"{_shown(url)} is not an http(s) URL")
    if "@" in parts.netloc:
        raise RefusedDestination(f"{_shown(url)}: user info (user:password@) is not allowed")
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise RefusedDestination(f"{_shown(url)}: invalid port") from exc
    if not parts.hostname:
        raise RefusedDestination(f"{_shown(url)} names no host")
    return parts


def ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells in canonical form (``[v6]`` unbracketed by urlsplit), else
    ``None``."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_provider_url(url: str, *, domains: Iterable[str], api_url: str) -> bool:
    """Whether ``url`` may carry a provider's credentials: https on one of ``domains`` (or a
    subdomain), or the same scheme, host and port as the configured ``api_url`` (the fake
    server the tests point it at)."""
    try:
        parts = split_http_url(url)
    except RefusedDestination:
        return False
    host = (parts.hostname or "").rstrip(".")
    configured = urlsplit(api_url)
    if (parts.scheme.lower(), host, parts.port) == (
        configured.scheme.lower(),
        (configured.hostname or "").rstrip("."),
        configured.port,
    ):
        return True
    if parts.scheme.lower() != "https" or parts.port not in (None, 443):
        return False
    return any(host == domain or host.endswith("." + domain) for domain in domains)


def _shown(url: str) -> str:
    """``url`` for a message: without its query (it may carry a secret), printable, short."""
    shown = repr(url.split("?", 1)[0])
    return shown if len(shown) <= 120 else shown[:117] + "..."
