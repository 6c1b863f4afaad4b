"""What an ``internet`` run may not reach: private, link-local, shared and reserved addresses.

slirp4netns connects out from the server's own network, so without a filter a run reaches what
the server reaches: the LAN, a cloud's metadata service (169.254.169.254), a VPN. An nftables
table in the run's network namespace, set by the server (host root) before any workflow code
runs, rejects packets to those destinations; an operator allow-list (``runtime.network_allow``)
goes first. It filters by destination address at packet level, after name resolution, so no
DNS answer can point around it. The run itself holds no capability over its network namespace
and cannot change the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
from collections.abc import Iterable

from core.addresses import NON_PUBLIC_NETWORKS, IPNetwork

SLIRP_DNS = "10.0.2.3"
"""slirp4netns' resolver (it forwards to the host's): the one private address a run needs."""
NFT_SECONDS = 10.0


@functools.cache
def ruleset(allow: tuple[IPNetwork, ...] = ()) -> str:
    """The nftables table of an ``internet`` run's network namespace (``nft -f`` syntax); the
    same for every run of a server (its allow-list), so made once."""
    rules = [
        'oifname "lo" accept',  # the run's own loopback: the runtime API relay, its own address
        f"ip daddr {SLIRP_DNS} udp dport 53 accept",
        f"ip daddr {SLIRP_DNS} tcp dport 53 accept",
    ]
    for family, version in (("ip", 4), ("ip6", 6)):
        allowed = _element_list(n for n in allow if n.version == version)
        if allowed:
            rules.append(f"{family} daddr {{ {allowed} }} accept")
    # Rejected, not dropped: a refused connect fails at once ("Network is unreachable").
    denied4 = _element_list(n for n in NON_PUBLIC_NETWORKS if n.version == 4)
    denied6 = _element_list(n for n in NON_PUBLIC_NETWORKS if n.version == 6)
    rules.append(f"ip daddr {{ {denied4} }} reject with icmp type net-unreachable")
    rules.append(f"ip6 daddr {{ {denied6} }} reject with icmpv6 type no-route")
    body = "\n".join(f"    {rule}" for rule in rules)
    return (
        "table inet switchboard {\n  chain output {\n"
        "    type filter hook output priority 0; policy accept;\n"
        f"{body}\n  }}\n}}\n"
    )


def _element_list(networks: Iterable[IPNetwork]) -> str:
    """Networks as one nft set: merged first, as nft refuses overlapping intervals."""
    collapsed = ipaddress.collapse_addresses(list(networks))  # type: ignore[type-var]
    return ", ".join(str(network) for network in collapsed)


async def filter_network(pid: int, allow: tuple[IPNetwork, ...]) -> str | None:
    """Load :func:`ruleset` into the network namespace of host process ``pid``; None when done,
    else why not (the run must not start without it). Never into the server's own namespace."""
    try:
        if await asyncio.to_thread(_shares_our_network, pid):
            return "cannot filter the sandbox's network: it is the server's own network"
    except OSError as exc:
        return f"cannot filter the sandbox's network: {exc.strerror or exc}"
    try:
        nft = await asyncio.create_subprocess_exec(
            "nsenter", f"--net=/proc/{pid}/ns/net", "--", "nft", "-f", "-",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},  # not the server's
        )  # fmt: skip
    except OSError as exc:
        return f"cannot filter the sandbox's network (nsenter): {exc.strerror or exc}"
    try:
        async with asyncio.timeout(NFT_SECONDS):
            _, stderr = await nft.communicate(ruleset(allow).encode())
    except BaseException as exc:  # timed out, or the run was cancelled meanwhile
        with contextlib.suppress(ProcessLookupError):
            nft.kill()
        await nft.wait()
        if isinstance(exc, TimeoutError):
            return "cannot filter the sandbox's network: nft did not finish"
        raise
    if nft.returncode != 0:
        problem = stderr.decode(errors="replace").strip()
        if nft.returncode == 127 or "No such file" in problem:
            problem = "nft is not installed (Debian: apt-get install nftables)"
        return f"cannot filter the sandbox's network: {problem}"
    return None


def _shares_our_network(pid: int) -> bool:
    ours = os.stat("/proc/self/ns/net")
    theirs = os.stat(f"/proc/{pid}/ns/net")
    return (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino)
