"""Multi-workspace install with OAuth v2: state checked, installation stored, events answered
with the token of their workspace, uninstall forgets it."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import Live, LiveFactory
from tests.fakes.slack_api import SlackApi
from tests.integration.test_slack import (
    SECRET,
    envelope,
    mention,
    post_event,
    run_count,
    settled,
)
from triggers.slack.tables import slack_installations

STATE_COOKIE = "slack-app-oauth-state"


async def start(factory: LiveFactory, fake: SlackApi) -> Live:
    return await factory.start(
        slack={
            "signing_secret": SECRET,
            "api_url": fake.api_url,
            "workflow": "echo",
            "client_id": "111.222",
            "client_secret": "shh",
            "channel_interval": 0,
        }
    )


async def install(live: Live, code: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=live.url) as http:
        page = await http.get("/slack/install")
        assert page.status_code == 200
        state = page.cookies.get(STATE_COOKIE) or ""
        link = re.search(r'href="(https://slack.com/oauth/v2/authorize\?[^"]+)"', page.text)
        assert link is not None and f"state={state}" in link.group(1)
        assert "client_id=111.222" in link.group(1)
        return await http.get(
            "/slack/oauth_redirect",
            params={"code": code, "state": state},
            headers={"Cookie": f"{STATE_COOKIE}={state}"},
        )


async def stored_workspaces(live: Live) -> list[str]:
    """The installations once the inbox processed every event (revocations are events)."""
    await settled(live)
    async with live.services.database.read() as conn:
        rows = await conn.execute(select(slack_installations.c.team_id))
        return list(rows.scalars())


async def test_installed_workspace_is_answered_with_its_own_token(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack)
    done = await install(live, "abc")
    assert done.status_code == 200, done.text
    assert await stored_workspaces(live) == ["TABC"]
    [exchange] = slack.called("oauth.v2.access")
    assert exchange.args.get("code") == "abc"
    slack.tokens["xoxb-abc"] = ("TABC", "UBABC")
    event = {**mention(), "text": "<@UBABC> hi from abc"}
    assert (await post_event(live, envelope(event, team="TABC"))).status_code == 200
    await slack.wait_for(lambda: slack.posts)
    [post] = slack.posts
    assert post.token == "xoxb-abc" and post.args["text"] == "hi from abc"

    uninstalled = {"type": "app_uninstalled"}
    response = await post_event(live, envelope(uninstalled, event_id="EvU", team="TABC"))
    assert response.status_code == 200
    assert await stored_workspaces(live) == []


async def test_callback_with_a_forged_state_installs_nothing(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack)
    async with httpx.AsyncClient(base_url=live.url) as http:
        response = await http.get(
            "/slack/oauth_redirect",
            params={"code": "abc", "state": "forged"},
            headers={"Cookie": f"{STATE_COOKIE}=forged"},
        )
    assert response.status_code >= 400
    assert await stored_workspaces(live) == []
    assert slack.called("oauth.v2.access") == []


async def test_event_from_a_workspace_without_installation_is_not_run(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack)
    response = await post_event(live, envelope(mention(), team="TNOPE"))
    assert response.status_code == 200
    assert await run_count(live) == 0
    assert slack.posts == []


async def test_install_link_takes_nothing_from_the_environment(
    live_factory: LiveFactory, slack: SlackApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLACK_USER_SCOPES", "users:read,chat:write")
    monkeypatch.setenv("SLACK_REDIRECT_URI", "https://attacker.example/redirect")
    monkeypatch.setenv("SLACK_CLIENT_ID", "999.888")
    live = await start(live_factory, slack)
    async with httpx.AsyncClient(base_url=live.url) as http:
        page = await http.get("/slack/install")
    found = re.search(r'href="(https://slack.com/oauth/v2/authorize\?[^"]+)"', page.text)
    assert found is not None
    query = parse_qs(urlsplit(html.unescape(found.group(1))).query, keep_blank_values=True)
    assert query["client_id"] == ["111.222"] and query["user_scope"] == [""]
    assert query["redirect_uri"] == [f"{live.url}/slack/oauth_redirect"]


async def test_revoking_a_user_token_keeps_the_bot_and_revoking_the_bot_removes_it(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack)
    assert (await install(live, "abc")).status_code == 200
    slack.tokens["xoxb-abc"] = ("TABC", "UBABC")
    users_revoked = {"type": "tokens_revoked", "tokens": {"oauth": ["UINSTALLER"], "bot": []}}
    response = await post_event(live, envelope(users_revoked, event_id="EvR1", team="TABC"))
    assert response.status_code == 200
    assert await stored_workspaces(live) == ["TABC"]
    event = {**mention(), "text": "<@UBABC> still there?"}
    assert (await post_event(live, envelope(event, team="TABC"))).status_code == 200
    await slack.wait_for(lambda: slack.posts)
    assert [post.token for post in slack.posts] == ["xoxb-abc"]

    bot_revoked = {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": ["UBABC"]}}
    response = await post_event(live, envelope(bot_revoked, event_id="EvR2", team="TABC"))
    assert response.status_code == 200
    assert await stored_workspaces(live) == []
