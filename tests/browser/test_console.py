"""The web console in real Chromium against one demo server: each test is one thing a user does,
in the order a user would (the first signs in with the demo's link, the last signs out)."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import ConsoleServer, Screenshot
from tests.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.browser]


def test_the_demo_link_signs_in_and_no_token_stays_in_the_url(
    page: Page, console_server: ConsoleServer, screenshot: Screenshot
) -> None:
    page.goto(console_server.url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "login")
    page.goto(console_server.login_link)
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    assert "token" not in page.url
    cookie = next(c for c in page.context.cookies() if c["name"] == "switchboard_console")
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    # The link works once: a second visit asks to sign in again.
    again = httpx.get(console_server.login_link, follow_redirects=False)
    assert again.status_code == 303
    assert "used" in again.headers["Location"]


def test_a_run_started_by_the_api_appears_without_reload_and_completes(
    page: Page, console_server: ConsoleServer, screenshot: Screenshot
) -> None:
    page.goto(console_server.url + "/console/runs")
    expect(page.locator("#runs[data-ready='1']")).to_be_attached()
    run_id = console_server.start("hello", {"name": "Grace"})
    row = page.locator(f"tr[data-run='{run_id}']")
    expect(row).to_be_visible()
    expect(row.locator(".badge")).to_have_text("completed", timeout=30_000)
    expect(row).to_contain_text("hello")
    screenshot(page, "runs")


def test_filters_and_search_find_the_run(page: Page, console_server: ConsoleServer) -> None:
    page.goto(console_server.url + "/console/runs")
    page.get_by_label("Search input and output").fill("Grace")
    page.get_by_label("completed").check()
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("#runs tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("completed")
    page.get_by_label("Search input and output").fill("Nobody-at-all")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(0)
    expect(page.locator("#no-runs")).to_be_visible()


def test_a_running_runs_page_streams_its_log(
    page: Page, console_server: ConsoleServer, screenshot: Screenshot
) -> None:
    run_id = console_server.start("chatty", {"ticks": 12, "interval": 0.4})
    page.goto(f"{console_server.url}/console/runs/{run_id}")
    log = page.locator("#log")
    expect(log).to_have_attribute("data-following", "1")
    expect(log).to_contain_text("tick 8", timeout=30_000)
    assert page.locator("#run-status").inner_text() in ("queued", "running")
    screenshot(page, "run-live")
    expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
    expect(page.locator("#output")).to_contain_text('"ticks": 12')


def test_a_run_is_replayed_with_an_edited_input(
    page: Page, console_server: ConsoleServer, screenshot: Screenshot
) -> None:
    run_id = console_server.start("hello", {"name": "Ada"})
    page.goto(f"{console_server.url}/console/runs/{run_id}")
    page.get_by_label("Inputs (edit to replay with another payload)").fill('{"name": "Lin"}')
    page.get_by_role("button", name="Replay", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text(f"replay of {run_id} started")
    expect(page.locator(".facts")).to_contain_text(f"replays {run_id}")
    expect(page.locator("#run-status")).to_have_text("completed", timeout=30_000)
    expect(page.locator("#output")).to_contain_text("Hello Lin!")
    screenshot(page, "run")


def test_a_bulk_cancel_shows_the_count_first(
    page: Page, console_server: ConsoleServer, screenshot: Screenshot
) -> None:
    started = {console_server.start("chatty", {"ticks": 600, "interval": 0.1}) for _ in range(3)}
    page.goto(console_server.url + "/console/runs?service_id=chatty&status=queued&status=running")
    expect(page.locator("#runs tbody tr")).to_have_count(3)
    page.get_by_role("button", name="Cancel them…").click()
    expect(page.locator("[data-matching]")).to_have_text("3")
    screenshot(page, "bulk")
    page.get_by_role("button", name="Cancel 3 runs").click()
    expect(page.get_by_role("status")).to_contain_text("3 runs cancelled")
    for run_id in started:
        answer = httpx.get(
            f"{console_server.url}/api/v1/runs/{run_id}",
            headers={"Authorization": f"Bearer {console_server.admin_key}"},
        )
        assert answer.json()["run"]["status"] == "cancelled"


def test_a_change_without_the_csrf_token_is_refused(
    page: Page, console_server: ConsoleServer
) -> None:
    answer = page.request.post(
        console_server.url + "/console/triggers/action",
        form={"name": "email:smtp", "action": "suspend"},
    )
    assert answer.status == 403
    assert "CSRF" in answer.text()


def test_the_schedule_form_previews_fire_times_live_and_names_the_dst_gap(
    page: Page, console_server: ConsoleServer, screenshot: Screenshot
) -> None:
    page.goto(console_server.url + "/console/schedules/new")
    page.get_by_label("Workflow").fill("hello")
    page.get_by_label("Time zone").fill("America/New_York")
    page.get_by_label("From").fill("2027-03-10")
    page.get_by_label("Cron").fill("30 2 * * *")
    fires = page.locator("#preview ol.fires li")
    expect(fires).to_have_count(10)
    expect(fires.nth(0)).to_contain_text("2027-03-10 02:30:00 EST")
    expect(fires.nth(4)).to_contain_text("DST gap")
    expect(fires.nth(4)).to_contain_text("2027-03-14 03:00:00 EDT")
    screenshot(page, "schedule-form")
    page.get_by_label("Id").fill("nightly")
    page.get_by_label("Inputs (JSON)").fill('{"name": "Ada"}')
    page.get_by_role("button", name="Create schedule").click()
    expect(page.get_by_role("status")).to_contain_text("schedule nightly created")
    row = page.locator("tr[data-schedule='nightly']")
    expect(row).to_contain_text("30 2 * * *")
    expect(row).to_contain_text("your time")
    screenshot(page, "schedules")


def test_a_trigger_is_suspended_and_resumed(page: Page, console_server: ConsoleServer) -> None:
    page.goto(console_server.url + "/console/triggers")
    row = page.locator("tr[data-trigger='email:smtp']")
    row.get_by_role("button", name="Suspend").click()
    expect(page.get_by_role("status")).to_contain_text("email:smtp suspended")
    expect(row.locator(".badge")).to_have_text("suspended")
    row.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_contain_text("email:smtp resumed")
    expect(row.locator(".badge")).to_have_text("active")


def test_an_inbox_event_is_replayed(
    page: Page, console_server: ConsoleServer, screenshot: Screenshot
) -> None:
    mail = EmailMessage()
    mail["From"] = "ada@sender.test"
    mail["To"] = "hello@console.test"
    mail["Subject"] = "Hi"
    mail["Message-ID"] = "<console-replay@sender.test>"
    mail.set_content("Ada")
    with smtplib.SMTP("127.0.0.1", console_server.smtp_port, timeout=10) as smtp:
        smtp.send_message(mail)
    page.goto(console_server.url + "/console/triggers")
    original = page.locator("tr[data-event]").first
    event_id = original.get_attribute("data-event")
    original.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("status")).to_contain_text(f"event {event_id} replayed")
    expect(page.locator("tr[data-event]").first).to_contain_text(f"replays {event_id}")
    screenshot(page, "triggers")


def test_a_key_is_created_shown_once_and_revoked(
    page: Page, console_server: ConsoleServer, screenshot: Screenshot
) -> None:
    page.goto(console_server.url + "/console/keys")
    page.get_by_label("Name").fill("ci")
    page.get_by_label("Owner").fill("team-a")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("[data-new-key]").inner_text()
    assert key.startswith("cwk-")
    assert key not in page.url
    screenshot(page, "keys")
    listed = httpx.get(
        console_server.url + "/api/v1/triggers", headers={"Authorization": f"Bearer {key}"}
    )
    assert listed.status_code == 403  # a member key works, and is no admin
    row = page.locator("tr[data-key]", has_text="team-a")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("status")).to_contain_text("revoked")
    expect(row.locator(".badge")).to_have_text("revoked")


def test_a_workflow_is_deployed_by_upload(
    page: Page, console_server: ConsoleServer, screenshot: Screenshot
) -> None:
    page.goto(console_server.url + "/console/workflows")
    page.get_by_label("Workflow file").set_input_files(str(ROOT / "tests/workflows/chatty.py"))
    page.get_by_label("Id").fill("chatty")
    page.get_by_role("button", name="Deploy").click()
    expect(page.get_by_role("status")).to_contain_text("chatty v2 deployed", timeout=60_000)
    expect(page.locator("tr[data-workflow='chatty']")).to_contain_text("v2")
    screenshot(page, "workflows")
    page.get_by_role("link", name="chatty", exact=True).click()
    expect(page.locator("[data-version]")).to_have_count(2)
    expect(page.locator("[data-version='2']")).to_contain_text("current")
    expect(page.locator("[data-version='2']")).to_contain_text("fastapi")
    screenshot(page, "workflow")


def test_signing_out_ends_the_session_and_the_cli_prints_a_fresh_link(
    page: Page, console_server: ConsoleServer
) -> None:
    page.goto(console_server.url + "/console/triggers")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto(console_server.url + "/console/triggers")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    printed = console_server.cli("console").strip().splitlines()[-1]
    assert printed.startswith(f"{console_server.url}/login?token=")
    page.goto(printed)
    expect(page.get_by_role("heading", name="Runs")).to_be_visible()
