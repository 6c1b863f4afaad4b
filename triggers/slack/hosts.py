"""Which URLs in a Slack payload may get our bot token or a run's result: Slack's own (https on
``slack.com`` and its subdomains) or ``[slack] api_url``'s scheme, host and port (the fake Slack
the tests run). A payload names these URLs; a forged or careless one must not send the token or
a result anywhere else."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from core.addresses import is_provider_url

logger = logging.getLogger(__name__)

SLACK_DOMAINS = ("slack.com",)


def is_slack_url(url: str, api_url: str) -> bool:
    return is_provider_url(url, domains=SLACK_DOMAINS, api_url=api_url)


def slack_file_url(value: object, api_url: str) -> bool:
    """Whether a file's ``url_private_download`` may be fetched with the bot token."""
    if not value:
        return False
    if is_slack_url(str(value), api_url):
        return True
    logger.warning(
        "slack: a file URL on %r is not Slack's; not downloaded", urlsplit(str(value)).hostname
    )
    return False
