"""Declared secrets for real (issue 14): resolved per run, injected through the environment only,
redacted from the run's logs and the server's, under every runner and both databases.

The values are set through the server's encrypted store (``services.secrets``);
``tests/workflows/secret_probe.py`` gives its secret away in its output in every form the
redaction covers and reports what it got.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from switchboard.cli import workflows_add
from switchboard.services import Services
from tests.conftest import Live, LiveFactory, make_settings
from tests.integration.sandbox_helpers import (
    memory_contains,
    processes_with,
    processes_with_in_environ,
    zygotes_only,
)
from tests.runs import WORKFLOWS

PROBE = "secret-probe"
RUNNERS: dict[str, dict[str, Any]] = {
    "process": {"sandbox": "process"},
    "bwrap-fresh": {"sandbox": "bwrap", "zygote": False},
    "bwrap-zygote": {"sandbox": "bwrap", "zygote": True},
}


@pytest.fixture(params=list(RUNNERS))
async def probe_server(request: pytest.FixtureRequest, live_factory: LiveFactory) -> Live:
    """A server with the probe registered, its runs under each runner in turn."""
    live = await live_factory.start(runtime=dict(RUNNERS[request.param]))
    await live.register("secret_probe")
    return live


class SecretFiller:
    """Sets values through the server's own encrypted store, as the CLI and the API do."""

    def __init__(self, services: Services) -> None:
        self._store = services.secrets
        self._keys = services.keys

    async def set(
        self, owner_id: str, name: str, value: str, *, workflow_id: str | None = None
    ) -> None:
        await self._keys.ensure_owner(owner_id)
        await self._store.put(owner_id, name, value, workflow_id=workflow_id, actor="test")


def secret_store(services: Services) -> SecretFiller:
    return SecretFiller(services)


def tricky_value(label: str) -> str:
    """A value whose base64 and URL-encoded forms differ from it."""
    return f"{label}/{secrets.token_hex(10)}+&=="


def forms_of(value: str) -> list[str]:
    return [value, base64.b64encode(value.encode()).decode(), quote(value, safe="")]


@pytest.fixture
async def http(probe_server: Live) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=probe_server.url, headers={"Authorization": probe_server.key}, timeout=90
    ) as client:
        yield client


async def start(http: httpx.AsyncClient, body: dict[str, Any], key: str | None = None) -> str:
    headers = {"Authorization": key} if key else {}
    answer = await http.post(f"/run_async/{PROBE}/", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    request_id: str = answer.json()["request_id"]
    return request_id


async def finished(
    http: httpx.AsyncClient, request_id: str, key: str | None = None
) -> dict[str, Any]:
    headers = {"Authorization": key} if key else {}
    answer = await http.get(f"/result/{request_id}", params={"timeout": 60}, headers=headers)
    assert answer.status_code == 200, answer.text
    record: dict[str, Any] = answer.json()
    return record


async def log_messages(
    http: httpx.AsyncClient, request_id: str, key: str | None = None
) -> list[str]:
    headers = {"Authorization": key} if key else {}
    answer = await http.get(f"/logs/{request_id}", headers=headers)
    assert answer.status_code == 200, answer.text
    return [json.loads(line)["message"] for line in answer.text.splitlines() if line]


async def wait_for_line(http: httpx.AsyncClient, request_id: str, wanted: str) -> None:
    """Follow the run's log stream until ``wanted`` appears (the run is still going on)."""
    async with http.stream("GET", f"/logs/{request_id}") as stream:
        async for line in stream.aiter_lines():
            if line and json.loads(line)["message"] == wanted:
                return
    raise AssertionError(f"the run ended without writing {wanted!r}")


def server_log_text(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)


async def test_a_run_gets_its_declared_secrets_redacted_and_nothing_else(
    probe_server: Live, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = secret_store(probe_server.services)
    owner_wide, scoped, other_owners = (tricky_value(n) for n in ("wide", "scoped", "other"))
    pem_lines = [f"pem-line-{secrets.token_hex(8)}", f"pem-line-{secrets.token_hex(8)}"]
    await store.set("default", "PROBE_TOKEN", owner_wide)
    await store.set("default", "PROBE_TOKEN", scoped, workflow_id=PROBE)
    await store.set("default", "PROBE_PEM", "\n".join(pem_lines))
    await store.set("default", "UNDECLARED_TOKEN", tricky_value("undeclared"))
    await store.set("team-b", "PROBE_TOKEN", other_owners)
    release = f"release-{secrets.token_hex(6)}"

    request_id = await start(http, {"hold": release})
    await wait_for_line(http, request_id, "holding")
    # From the host: no process of the run (nor any other) shows the value in its command line.
    in_argv = [pid for value in forms_of(scoped) for pid in processes_with(value)]
    # Nor in the environment any process was started with: a sandbox's chain (root's unshare,
    # sh, mount, then bwrap) has a fixed one, and its launcher reads the run's from a descriptor
    # (a declared LD_PRELOAD would otherwise run in root's processes). Without a sandbox the
    # workflow's process is started with it.
    in_environ = processes_with_in_environ(scoped)
    # The server's own log handlers mask the values of the runs in flight.
    logging.getLogger("dispatch.workers").warning("a server line with %s", scoped)
    version_dir = probe_server.settings.server.data_dir / "workflows" / PROBE / "v1"
    (version_dir / release).write_text("go", encoding="utf-8")
    record = await finished(http, request_id)
    messages = await log_messages(http, request_id)

    assert record["status"] == "completed", record
    got = record["responseJson"]
    assert got["env"]["PROBE_TOKEN"] == scoped  # the workflow-scoped value wins
    assert got["env"]["PROBE_PEM"] == "\n".join(pem_lines)
    assert got["env"]["PROBE_GREETING"] == "hello"  # the header's default
    assert got["env"]["UNDECLARED_TOKEN"] is None
    assert got["env"]["PORT"] == "8000"
    assert "overridden" not in json.dumps(got["env"]["CODEWORDS_RUNTIME_URI"])
    assert "overridden" not in json.dumps(got["env"]["HOME"])
    assert in_argv == []
    if probe_server.settings.runtime.sandbox == "bwrap":
        assert in_environ == []
    assert got["cmdlines_seen"] > 0 and got["cmdlines_with_token"] == []
    # Stored redacted: the value whole, split across two writes, base64, URL-encoded, each line
    # of a multi-line value; the stored response is left as the workflow returned it.
    for prefix in ("token=", "split=", "b64=", "url=", "stderr="):
        assert f"{prefix}***" in messages, messages
    assert messages.count("***") >= 2  # the lines of PROBE_PEM
    text = "\n".join(messages)
    assert "a server line with ***" in server_log_text(caplog)
    for leaked in [*forms_of(scoped), *forms_of(owner_wide), *pem_lines]:
        assert leaked not in text
        assert leaked not in server_log_text(caplog)

    failing = await finished(http, await start(http, {"fail": True}))
    assert failing["status"] == "failed"
    assert failing["error"] == "workflow answered 500: refused with ***"

    # Another owner's run of the same workflow gets that owner's value, never this one's.
    team_b = await probe_server.key_for("team-b")
    other = await finished(http, await start(http, {}, key=team_b), key=team_b)
    assert other["responseJson"]["env"]["PROBE_TOKEN"] == other_owners

    runtime = probe_server.settings.runtime
    if runtime.sandbox == "bwrap" and runtime.zygote:
        zygotes = zygotes_only(processes_with("zygote_server.py"))
        assert zygotes, "no zygote process found"
        assert [pid for pid in zygotes if memory_contains(pid, scoped.encode())] == []


async def test_a_declared_secret_without_a_value_fails_the_run_before_anything_starts(
    probe_server: Live, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = secret_store(probe_server.services)
    await store.set("team-b", "PROBE_TOKEN", tricky_value("not-for-team-a"))
    key = await probe_server.key_for("team-a")

    record = await finished(http, await start(http, {}, key=key), key=key)
    messages = await log_messages(http, record["request_id"], key=key)

    expected = "secret PROBE_TOKEN is not set for owner team-a (declared by workflow secret-probe)"
    assert record["status"] == "failed"
    assert record["error"] == expected
    assert any(message.endswith(expected) for message in messages), messages
    # Nothing of the run was started: no process, no run directory, no cgroup.
    started = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("dispatch.")
        and record["request_id"] in r.getMessage()
        and "started" in r.getMessage()
    ]
    assert started == []
    assert not (probe_server.services.runs_dir / record["request_id"]).exists()
    assert processes_with(record["request_id"]) == []
    # Undecryptable values (a lost master key): tests/integration/test_secret_store.py raises them,
    # tests/unit/test_declared_env.py fails the run with them.


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("zygote", [False, True], ids=["fresh", "zygote"])
async def test_a_changed_secret_gets_a_fresh_warm_process(
    live_factory: LiveFactory, zygote: bool
) -> None:
    live = await live_factory.start(
        runtime={"sandbox": "bwrap", "zygote": zygote, "warm_idle_ttl": 600}
    )
    await live.register("secret_warm")
    store = secret_store(live.services)
    first_value, second_value = tricky_value("first"), tricky_value("second")
    await store.set("default", "PROBE_TOKEN", first_value)

    async with httpx.AsyncClient(
        base_url=live.url, headers={"Authorization": live.key}, timeout=90
    ) as client:
        first = await client.post("/run/secret-warm/", json={})
        again = await client.post("/run/secret-warm/", json={})
        await store.set("default", "PROBE_TOKEN", second_value)
        changed = await client.post("/run/secret-warm/", json={})

    assert [r.status_code for r in (first, again, changed)] == [200, 200, 200], changed.text
    assert (
        first.json() == again.json() == {"process": first.json()["process"], "token": first_value}
    )
    assert changed.json()["token"] == second_value
    assert changed.json()["process"] != first.json()["process"]


class ServerLines(logging.Handler):
    """Every record the server logs, formatted as its handlers would; ``seen`` set on ``wanted``."""

    def __init__(self, wanted: str) -> None:
        super().__init__(logging.DEBUG)
        self.wanted = wanted
        self.lines: list[str] = []
        self.seen = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        if self.wanted in record.getMessage():
            self._loop.call_soon_threadsafe(self.seen.set)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_warm_process_printing_its_secret_between_runs_leaves_no_trace(
    live_factory: LiveFactory,
) -> None:
    watch = ServerLines("between runs")
    root = logging.getLogger()
    root.addHandler(watch)
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        live = await live_factory.start(runtime={"sandbox": "bwrap", "warm_idle_ttl": 600})
        await live.register("secret_warm")
        value = tricky_value("between")
        await secret_store(live.services).set("default", "PROBE_TOKEN", value)
        async with httpx.AsyncClient(
            base_url=live.url, headers={"Authorization": live.key}, timeout=90
        ) as client:
            answer = await client.post("/run/secret-warm/", json={"later": True})
        async with asyncio.timeout(30):
            await watch.seen.wait()
    finally:
        root.removeHandler(watch)
        root.setLevel(level)

    assert answer.status_code == 200, answer.text
    assert [line for line in watch.lines if value in line] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_registering_names_the_declared_secrets_that_have_no_value_yet(
    tmp_path: Path,
    database_url: str,
    workflow_cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(tmp_path / "data", database_url, workflow_cache, 0)
    args = argparse.Namespace(file=WORKFLOWS / "secret_probe.py", service_id=None, owner="team-a")

    assert await workflows_add(args, settings) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("registered secret-probe version 1")
    # PROBE_PEM and PROBE_GREETING have defaults; the runtime's own variables need nothing.
    assert lines[1:] == [
        "warning: workflow secret-probe declares PROBE_TOKEN, which is not set for owner "
        "team-a: its runs fail until it is (switchboard secrets set PROBE_TOKEN)"
    ]
