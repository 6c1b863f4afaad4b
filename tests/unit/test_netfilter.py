"""The nftables table of ``internet`` runs: what it refuses, and that the allow-list goes first."""

from __future__ import annotations

import ipaddress

from core.addresses import NON_PUBLIC_NETWORKS
from dispatch.sandbox.netfilter import ruleset


def test_every_private_link_local_and_shared_network_is_refused() -> None:
    refused = {str(network) for network in NON_PUBLIC_NETWORKS}

    for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
                    "100.64.0.0/10", "fc00::/7", "fe80::/10"):  # fmt: skip
        assert network in refused


def test_the_allow_list_is_merged_and_comes_before_the_refusals() -> None:
    allow = tuple(ipaddress.ip_network(n) for n in ("10.1.2.0/25", "10.1.2.128/25", "fd00::/8"))

    lines = [line.strip() for line in ruleset(allow).splitlines()]

    accepted4 = lines.index("ip daddr { 10.1.2.0/24 } accept")
    accepted6 = lines.index("ip6 daddr { fd00::/8 } accept")
    refused = [i for i, line in enumerate(lines) if "reject" in line]
    assert len(refused) == 2 and max(accepted4, accepted6) < min(refused)
    assert lines.index("ip daddr 10.0.2.3 udp dport 53 accept") < min(refused)  # slirp's DNS


def test_without_an_allow_list_nothing_private_is_accepted() -> None:
    accepted = [line.strip() for line in ruleset().splitlines() if line.endswith("accept")]

    assert accepted == [
        'oifname "lo" accept',
        "ip daddr 10.0.2.3 udp dport 53 accept",
        "ip daddr 10.0.2.3 tcp dport 53 accept",
    ]
