"""``switchboard schedules …`` against a data dir, with no server running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import ServiceFactory

pytestmark = pytest.mark.e2e


async def test_schedules_commands(make_service: ServiceFactory, tmp_path: Path) -> None:
    service = make_service(
        {"SWITCHBOARD_SERVER__DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    )
    await service.cli("db", "upgrade")  # the CLI works on a migrated database only
    added = await service.cli(
        "schedules", "add", "--id", "standup", "--workflow", "echo", "--cron", "0 9 * * MON-FRI",
        "--timezone", "Europe/London", "--inputs", '{"team": "core"}',
        "--deliver-to", "webhook:https://example.com/hook",
    )  # fmt: skip
    assert "created schedule standup" in added.stdout
    listed = await service.cli("schedules", "list")
    assert "standup" in listed.stdout and "active" in listed.stdout
    preview = await service.cli("schedules", "preview", "standup", "--count", "3")
    assert len(preview.stdout.split()) == 3
    assert all(
        line.endswith(("08:00:00.000000Z", "09:00:00.000000Z")) for line in preview.stdout.split()
    )
    await service.cli("schedules", "pause", "standup")
    started = await service.cli("schedules", "run-now", "standup")
    assert started.stdout.startswith("started run req_")
    shown = json.loads((await service.cli("schedules", "show", "standup")).stdout)
    assert shown["paused"] is True and shown["inputs"] == {"team": "core"}
    assert shown["next_fire_at"] is None
    # A run by hand is in the history, but not a fired tick.
    [manual] = shown["recent_runs"]
    assert started.stdout.split()[-1] == manual["request_id"] and manual["tick"].startswith(
        "manual:"
    )
    assert shown["fired_count"] == 0 and shown["last_run_id"] == manual["request_id"]
    resumed = await service.cli("schedules", "resume", "standup")
    assert resumed.stdout.strip() == "resume: standup"
    shown = json.loads((await service.cli("schedules", "show", "standup")).stdout)
    assert shown["paused"] is False and shown["next_fire_at"].endswith(
        ("08:00:00.000000Z", "09:00:00.000000Z")
    )
    bad = await service.cli(
        "schedules", "add", "--workflow", "echo", "--cron", "0 9 * * 8", check=False
    )
    assert bad.returncode == 1 and "bad day-of-week field '8'" in bad.stderr
    await service.cli("schedules", "remove", "standup")
    assert "(none)" in (await service.cli("schedules", "list")).stdout
