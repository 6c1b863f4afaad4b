"""Which URLs the server sends to on a caller's behalf (core/addresses.py), without DNS."""

from __future__ import annotations

import ipaddress

import pytest

from core.addresses import (
    NON_PUBLIC_NETWORKS,
    DestinationPolicy,
    IPNetwork,
    RefusedDestination,
    is_provider_url,
    is_public_address,
)
from dispatch.settings import DeliverySettings
from scheduler.cron import InvalidSchedule
from scheduler.targets import parse_deliver_to

PUBLIC_ONLY = DestinationPolicy()

REFUSED_URLS = [
    "http://127.0.0.1:8080/hook",
    "http://127.1/hook",
    "http://[::1]/hook",
    "http://0.0.0.0/hook",
    "http://2130706433/hook",
    "http://0x7f.1/hook",
    "http://0177.0.0.1/hook",
    "http://0x7f000001/hook",
    "http://localhost:9000/hook",
    "http://LOCALHOST./hook",
    "http://api.localhost/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://10.0.0.5/hook",
    "http://172.16.3.4/hook",
    "http://192.168.1.1/hook",
    "http://100.64.0.1/hook",
    "http://224.0.0.1/hook",
    "http://239.255.255.250/hook",
    "http://240.0.0.1/hook",
    "http://255.255.255.255/hook",
    "http://[fc00::1]/hook",
    "http://[fd12:3456::1]/hook",
    "http://[ff02::1]/hook",
    "http://[::]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "http://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of 169.254.169.254
    "http://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/hook",  # Teredo
    "http://user:pass@example.com/hook",
    "http://@example.com/hook",
    "http://example.com/ho\r\nX-Injected: 1",
    "http://example.com\n/hook",
    "http://exa mple.com/hook",
    "ftp://example.com/hook",
    "file:///etc/passwd",
    "http:///hook",
    "http://example.com:99999/hook",
    "http://[::1/hook",
    "http://exa%6dple.com/hook",
]


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_a_webhook_url_that_is_not_plainly_public_is_refused(url: str) -> None:
    with pytest.raises(RefusedDestination) as refused:
        PUBLIC_ONLY.check_url(url)
    assert refused.value.status == 400
    assert refused.value.detail


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/in?token=x",
        "http://example.com:8080/hook",
        "https://93.184.216.34/hook",
        "https://[2606:4700:4700::1111]/hook",
        "https://[::ffff:93.184.216.34]/hook",
        "https://xn--bcher-kva.example/hook",
    ],
)
def test_a_public_webhook_url_is_accepted(url: str) -> None:
    assert PUBLIC_ONLY.check_url(url).hostname


def test_the_allow_list_admits_named_hosts_suffixes_and_ranges() -> None:
    policy = DestinationPolicy.allowing(
        ["hooks.internal.example", "*.corp.example", "10.0.5.0/24", "::1"]
    )
    for url in (
        "http://hooks.internal.example/x",
        "http://HOOKS.internal.example./x",
        "http://a.b.corp.example/x",
        "http://10.0.5.7/x",
        "http://[::1]:8000/x",
    ):
        policy.check_url(url)
    for url in ("http://10.0.6.1/x", "http://127.0.0.1/x"):
        with pytest.raises(RefusedDestination):
            policy.check_url(url)
    assert policy.allows_name("x.corp.example")
    assert not policy.allows_name("corp.example.evil")
    assert not policy.allows_name("xcorp.example")
    with pytest.raises(RefusedDestination):  # the allow-list never admits user info
        policy.check_url("http://u:p@hooks.internal.example/x")


def test_an_allow_listed_range_admits_resolved_addresses_only_inside_it() -> None:
    policy = DestinationPolicy.allowing(["10.0.5.0/24"])
    policy.check_address("h", ipaddress.ip_address("10.0.5.9"))
    policy.check_address("h", ipaddress.ip_address("::ffff:10.0.5.9"))
    with pytest.raises(RefusedDestination, match=r"10\.0\.4\.1"):
        policy.check_address("h", ipaddress.ip_address("10.0.4.1"))


def test_a_bad_allow_list_entry_is_refused_when_the_settings_load() -> None:
    with pytest.raises(ValueError, match="neither a host name"):
        DeliverySettings(allow_hosts=("http://x/",))
    assert DeliverySettings(allow_hosts=("10.0.0.0/8",)).destinations().networks


def test_a_schedule_target_is_checked_when_stored() -> None:
    with pytest.raises(InvalidSchedule, match=r"169\.254\.169\.254"):
        parse_deliver_to("webhook:http://169.254.169.254/", PUBLIC_ONLY)
    with pytest.raises(InvalidSchedule, match="user info"):
        parse_deliver_to("webhook:https://u:p@example.com/", PUBLIC_ONLY)
    target = parse_deliver_to("webhook:https://example.com/hook", PUBLIC_ONLY)
    assert target.address == "https://example.com/hook"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://files.slack.com/files-pri/T1-F1/a.txt", True),
        ("https://hooks.slack.com/commands/T1/1/x", True),
        ("https://slack.com/x", True),
        ("http://files.slack.com/files-pri/a", False),
        ("https://files.slack.com.evil.example/a", False),
        ("https://evilslack.com/a", False),
        ("https://files.slack.com:8443/a", False),
        ("https://u:p@files.slack.com/a", False),
        ("http://127.0.0.1:5000/files-pri/a", True),  # the configured API (a fake)
        ("http://127.0.0.1:5001/files-pri/a", False),
        ("https://127.0.0.1:5000/files-pri/a", False),
    ],
)
def test_a_provider_url_must_be_the_providers_https_or_the_configured_api(
    url: str, allowed: bool
) -> None:
    assert is_provider_url(url, domains=["slack.com"], api_url="http://127.0.0.1:5000/api/") is (
        allowed
    )


# IPv6 forms that carry an IPv4 address: the webhook rule judges them by that address, the
# packet filter refuses them whole (a run reaches IPv4 hosts as themselves).
EMBEDDING = {ipaddress.ip_network(n) for n in ("::ffff:0:0/96", "64:ff9b::/96", "2002::/16")}


@pytest.mark.parametrize("network", [n for n in NON_PUBLIC_NETWORKS if n not in EMBEDDING], ids=str)
def test_the_packet_filters_table_and_the_address_rule_agree(network: IPNetwork) -> None:
    # One rule in two forms: what an internet run may not reach (nft) is what a webhook may not.
    for address in (network.network_address, network[network.num_addresses // 2], network[-1]):
        assert not is_public_address(address), address
