"""The ``switchboard`` command working on the data dir and database of a running server."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from core.db import Database
from switchboard.config import load_settings
from switchboard.migrate import downgrade, schema_revisions
from tests.e2e.conftest import ServiceFactory
from tests.e2e.harness import CliResult, Service, await_result, bearer, line_count, wait_until

pytestmark = pytest.mark.e2e

CREATED = re.compile(r"^created (?:one-time )?key (key_\w+) for owner default \((.*)\)")


def created_key(result: CliResult) -> tuple[str, str]:
    """(key id, secret key) from the output of ``keys create``."""
    match = CREATED.match(result.stdout)
    assert match is not None, result.describe()
    return match.group(1), result.last_line


def row(result: CliResult, first_column: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_column``."""
    for line in result.stdout.splitlines():
        cells = line.split()
        if cells and cells[0] == first_column:
            return cells
    raise AssertionError(f"no row {first_column!r} in\n{result.describe()}")


# The commands are the same code on either database (the integration tests run both); one
# store keeps this 40-second test from costing CI twice.
@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_keys_workflows_and_runs_commands_against_a_running_server(
    service: Service,
) -> None:
    server = await service.start_ready(SWITCHBOARD_SERVER__AUTH_CACHE_SECONDS="1")
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:

        async def run(service_id: str, key: str, body: object = None) -> httpx.Response:
            return await http.post(f"/run/{service_id}/", json=body, headers=bearer(key))

        # ---- keys (and the workflows registered meanwhile)
        made, doomed, added, _ = await asyncio.gather(
            service.cli("keys", "create", "--name", "cli"),
            service.cli("keys", "create", "--name", "doomed"),
            service.cli("workflows", "add", "tests/workflows/fail.py"),
            service.cli("workflows", "add", "tests/workflows/slow.py"),
        )
        key_id, key = created_key(made)
        doomed_id, doomed_key = created_key(doomed)
        echoed = await run("echo", key, {"hello": "cli"})
        assert (echoed.status_code, echoed.json()) == (200, {"hello": "cli"})
        assert (await run("echo", doomed_key, 1)).status_code == 200
        echo_run = echoed.headers["X-Request-Id"]

        listed, one_time = await asyncio.gather(
            service.cli("keys", "list"),
            service.cli("keys", "create", "--one-time", "--name", "once"),
        )
        assert row(listed, key_id)[-1] == "active"
        assert row(listed, doomed_id)[-1] == "active"
        assert key not in listed.stdout and doomed_key not in listed.stdout
        assert key[12:] not in listed.stdout, "keys list shows more of a key than its prefix"
        assert one_time.stdout.startswith("created one-time key "), one_time.describe()
        assert one_time.last_line.startswith("cwotk-"), one_time.describe()

        async def refused() -> bool:
            return (await run("echo", doomed_key, 2)).status_code == 401

        revoked = await service.cli("keys", "revoke", doomed_id)
        assert revoked.stdout.strip() == f"revoked {doomed_id}"
        await wait_until(refused, 10, "the running server to refuse the revoked key")
        assert (await run("echo", key, 3)).status_code == 200, "only the revoked key stops"

        # ---- workflows
        assert added.stdout.startswith("registered fail version 1 "), added.describe()
        failed, workflows = await asyncio.gather(run("fail", key), service.cli("workflows", "list"))
        assert failed.status_code == 500
        assert "boom: the workflow failed on purpose" in failed.text
        fail_run = failed.headers["X-Request-Id"]
        assert row(workflows, "fail")[1:3] == ["v1", "workflow"]
        assert row(workflows, "slow")[1:3] == ["v1", "workflow"]
        assert row(workflows, "echo")[1:3] == ["-", "built-in"]

        again = await service.cli("workflows", "add", "tests/workflows/fail.py")
        assert again.stdout.startswith("registered fail version 2 "), again.describe()
        workflows, runs, logs, keys_after = await asyncio.gather(
            service.cli("workflows", "list"),
            service.cli("runs", "list"),
            service.cli("runs", "logs", fail_run),
            service.cli("keys", "list"),
        )
        assert row(workflows, "fail")[1] == "v2"
        assert row(runs, echo_run)[1:3] == ["echo", "completed"]
        assert row(runs, fail_run)[1:3] == ["fail", "failed"]
        assert row(runs, fail_run)[-1] == "500"
        assert "system run started: fail (attempt 1)" in logs.stdout, logs.describe()
        assert "boom: the workflow failed on purpose" in logs.stdout, logs.describe()
        assert row(keys_after, doomed_id)[-1] == "revoked"
        assert row(keys_after, key_id)[-1] == "active"

        # ---- following a running run's logs, while `fail` is removed
        marker = service.tmp / "marker"
        started = await http.post(
            "/run_async/slow/", json={"seconds": 4, "marker": str(marker)}, headers=bearer(key)
        )
        slow_run: str = started.json()["request_id"]
        await wait_until(lambda: line_count(marker) == 1, 60, "the slow workflow to start")
        details = await http.get(f"/request/{slow_run}", headers=bearer(key))
        assert details.json()["status"] == "running"

        async def remove_fail() -> CliResult:
            removed = await service.cli("workflows", "remove", "fail")
            assert removed.stdout.strip() == "removed fail"

            async def gone() -> bool:
                return (await run("fail", key)).status_code == 404

            await wait_until(gone, 20, "POST /run/fail/ to answer 404 after `workflows remove`")
            return await service.cli("workflows", "list")

        followed, workflows = await asyncio.gather(
            service.cli("runs", "logs", "--follow", slow_run, timeout=60), remove_fail()
        )
        assert "stdout sleeping" in followed.stdout, followed.describe()
        assert "system run completed" in followed.stdout, followed.describe()
        record = await await_result(server.url, key, slow_run, timeout=5)
        assert record["status"] == "completed"
        assert "fail" not in workflows.stdout.split() and "slow" in workflows.stdout.split()

    # ---- bad usage and administration
    missing, bad_config, upgraded = await asyncio.gather(
        service.cli("runs", "show", "req_nope", check=False),
        service.cli("keys", "list", "--config", "/nonexistent.toml", check=False),
        service.cli("db", "upgrade", check=False),
    )
    assert missing.returncode != 0 and missing.stdout == "", missing.describe()
    assert "req_nope" in missing.stderr and "not found" in missing.stderr, missing.describe()
    assert bad_config.returncode != 0 and bad_config.stdout == "", bad_config.describe()
    assert "/nonexistent.toml" in bad_config.stderr, bad_config.describe()
    assert upgraded.returncode == 0, upgraded.describe()
    assert "latest schema" in upgraded.stdout


async def test_config_option_before_the_command_names_a_missing_file(
    make_service: ServiceFactory,
) -> None:
    service = make_service({})  # the data dir in tmp_path, should the file be ignored
    result = await service.cli("--config", "/nonexistent.toml", "keys", "list", check=False)
    assert result.returncode != 0, result.describe()
    assert "/nonexistent.toml" in result.stderr, result.describe()


async def test_a_command_on_a_database_one_migration_behind_names_it_and_migrates_nothing(
    make_service: ServiceFactory,
) -> None:
    service = make_service({})
    await service.cli("db", "upgrade")
    listed = await service.cli("keys", "list")
    assert "INFO" not in listed.stderr, listed.describe()
    settings = load_settings(None, server={"data_dir": str(service.data_dir)})
    database = Database(settings.server.resolved_database_url())
    try:
        await downgrade(database, "-1")
        behind, heads = await schema_revisions(database)
        assert behind and behind != heads
        result = await service.cli("keys", "list", check=False)
        after, _ = await schema_revisions(database)
    finally:
        await database.dispose()
    assert result.returncode == 1, result.describe()
    assert f"at revision {min(behind)}" in result.stderr, result.describe()
    assert "run `switchboard db upgrade`" in result.stderr, result.describe()
    assert "INFO" not in result.stderr and result.stdout == "", result.describe()
    assert after == behind
