"""The HTTP client for URLs a caller chose (webhook targets): every address a host name resolves
to is checked against the :class:`~core.addresses.DestinationPolicy` when the connection is
made, and the connection goes to the address that was checked, so a name that resolved to a
public address when the target was stored and to ``127.0.0.1`` now (DNS rebinding) is refused.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable

import httpcore
import httpx

from core.addresses import DestinationPolicy, IPAddress, RefusedDestination, ip_literal


class GuardedNetwork(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves, checks, then connects to the checked address
    (TLS still verifies the certificate for the URL's host name)."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self._policy = policy
        self._network = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._addresses(host, port, timeout)
        if not self._policy.allows_name(host):
            for address in addresses:
                self._policy.check_address(host, address)
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return await self._network.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"{host} has no address")

    async def _addresses(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        literal = ip_literal(host.strip("[]"))
        if literal is not None:
            return [literal]
        try:
            async with asyncio.timeout(timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"{host} could not be resolved: {exc}") from exc
        found: list[IPAddress] = []
        for *_, sockaddr in infos:
            address = ip_literal(str(sockaddr[0]).split("%", 1)[0])
            if address is not None and address not in found:
                found.append(address)
        return found

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise RefusedDestination("Unix sockets are not a destination")

    async def sleep(self, seconds: float) -> None:
        await self._network.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (TLS, pooling, HTTP/1.1) over :class:`GuardedNetwork`. No proxy:
    through one, the address checked would be the proxy's."""

    def __init__(self, policy: DestinationPolicy) -> None:
        super().__init__(trust_env=False)
        # httpx takes no network backend; its transport's pool is rebuilt with one (the pool is
        # what every request goes through, tests/integration/test_ssrf.py proves it still is).
        limits = httpx.Limits()
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedNetwork(policy),
        )


def guarded_client(policy: DestinationPolicy) -> httpx.AsyncClient:
    """A client that never follows redirects (each hop would be a new caller-chosen URL) and
    reads no proxy settings from the environment."""
    return httpx.AsyncClient(
        transport=GuardedTransport(policy), follow_redirects=False, trust_env=False
    )
