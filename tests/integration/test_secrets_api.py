"""Secrets through a live server (issue 14): ``/api/v1/secrets`` and ``manage_user_secrets`` from
outside and from a workflow's run, on both databases; values never in a listing, a log, or the
database's bytes."""

from __future__ import annotations

import hashlib
import logging
import secrets
from pathlib import Path

import httpx
import pytest
from codewords_client import AsyncCodewordsClient

from tests.conftest import WORKFLOWS, Live, LiveFactory
from tests.integration.secret_helpers import database_bytes

SECRETS_URL = "/api/v1/secrets"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def fresh(label: str) -> str:
    return f"{label}-{secrets.token_hex(16)}"


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def secret_keeper(directory: Path) -> Path:
    """``secret_user.py`` with the ``secrets`` grant and no declared secret: one body, two heads.

    A workflow runs from its registered source alone, so the two cannot share a module.
    """
    source = (WORKFLOWS / "secret_user.py").read_text(encoding="utf-8")
    declared, end = '#   "API_TOKEN",\n', "# ///\n"
    assert source.count(declared) == 1 and source.count(end) == 1, "secret_user.py's header moved"
    head, _, body = source.partition(end)
    head = head.replace(declared, "") + '# [tool.switchboard]\n# grants = ["secrets"]\n'
    path = directory / "secret_keeper.py"
    path.write_text(head + end + body, encoding="utf-8")
    return path


async def test_rest_routes_set_list_unset_by_scope_and_owner(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await live.register("secret_user")
    owner_wide, scoped, other_owner = fresh("owner-wide"), fresh("scoped"), fresh("team-b")
    store = live.services.secrets
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
        mine = bearer(live.key)
        put = await http.put(f"{SECRETS_URL}/API_TOKEN", json={"value": owner_wide}, headers=mine)
        assert put.status_code == 200, put.text
        assert (put.json()["name"], put.json()["scope"]) == ("API_TOKEN", "owner")
        put = await http.put(
            f"{SECRETS_URL}/API_TOKEN",
            json={"value": scoped, "workflow": "secret-user"},
            headers=mine,
        )
        assert (put.status_code, put.json()["workflow"]) == (200, "secret-user"), put.text

        listed = await http.get(SECRETS_URL, headers=mine)
        assert [(s["name"], s["workflow"]) for s in listed.json()["secrets"]] == [
            ("API_TOKEN", None),
            ("API_TOKEN", "secret-user"),
        ]
        # the workflow's own value wins for its runs; any other workflow gets the owner's
        assert await store.values_for_run("default", "secret-user", ["API_TOKEN", "NONE"]) == {
            "API_TOKEN": scoped
        }
        assert await store.values_for_run("default", "other", ["API_TOKEN"]) == {
            "API_TOKEN": owner_wide
        }

        # another owner: sees nothing of ours, and its value of the same name is its own
        theirs = bearer(await live.key_for("team-b"))
        assert (await http.get(SECRETS_URL, headers=theirs)).json() == {"secrets": []}
        assert await store.values_for_run("team-b", "secret-user", ["API_TOKEN"]) == {}
        put = await http.put(
            f"{SECRETS_URL}/API_TOKEN", json={"value": other_owner}, headers=theirs
        )
        assert put.status_code == 200, put.text
        assert await store.values_for_run("default", "other", ["API_TOKEN"]) == {
            "API_TOKEN": owner_wide
        }
        assert await store.values_for_run("team-b", "secret-user", ["API_TOKEN"]) == {
            "API_TOKEN": other_owner
        }

        # bad input: a 400 that names the problem, and nothing stored
        refused = [
            ("api_token", {"value": "v"}, "invalid secret name 'api_token'"),
            ("9LIVES", {"value": "v"}, "invalid secret name '9LIVES'"),
            ("PORT", {"value": "v"}, "PORT is set by the runtime"),
            ("BIG", {"value": "x" * (64 * 1024 + 1)}, "larger than the limit of 65536 bytes"),
            ("EMPTY", {"value": ""}, "cannot be empty"),
            ("NUMBER", {"value": 5}, "must be a string"),
            ("NOVALUE", {}, "needs 'value'"),
            ("EXTRA", {"value": "v", "owner": "team-b"}, "unknown field 'owner'"),
        ]
        for name, body, detail in refused:
            answer = await http.put(f"{SECRETS_URL}/{name}", json=body, headers=mine)
            assert answer.status_code == 400, (name, answer.text)
            assert detail in answer.json()["detail"], (name, answer.text)
        missing = await http.put(
            f"{SECRETS_URL}/API_TOKEN", json={"value": "v", "workflow": "nope"}, headers=mine
        )
        assert missing.status_code == 404
        assert missing.json()["detail"] == "workflow 'nope' not found"
        assert len((await http.get(SECRETS_URL, headers=mine)).json()["secrets"]) == 2

        # unset: the workflow falls back to the owner's value; unsetting again is a 404
        gone = await http.delete(f"{SECRETS_URL}/API_TOKEN?workflow=secret-user", headers=mine)
        assert gone.status_code == 200, gone.text
        assert await store.values_for_run("default", "secret-user", ["API_TOKEN"]) == {
            "API_TOKEN": owner_wide
        }
        again = await http.delete(f"{SECRETS_URL}/API_TOKEN?workflow=secret-user", headers=mine)
        assert again.status_code == 404
        assert "API_TOKEN" in again.json()["detail"]

        once = bearer(await live.key_for(one_time=True))
        assert (await http.get(SECRETS_URL, headers=once)).status_code == 401

        audit = (await http.get(f"{SECRETS_URL}/audit", headers=mine)).json()["events"]
        texts = [listed.text, repr(audit)]

    assert [(e["action"], e["workflow"]) for e in audit] == [
        ("delete", "secret-user"),
        ("set", "secret-user"),
        ("set", None),
    ]
    assert all(e["actor"].startswith("key_") and e["owner"] == "default" for e in audit)
    every_owner = await store.audit(None)
    assert {e.owner_id for e in every_owner} == {"default", "team-b"}

    values = (owner_wide, scoped, other_owner)
    stored = await database_bytes(live.settings.server.resolved_database_url())
    for value in values:
        assert value.encode() not in stored, "a stored value is readable in the database"
        assert value not in caplog.text, "a value reached the server's log"
        assert all(value not in text for text in texts)


async def test_manage_user_secrets_from_outside_is_answered_and_never_stored(live: Live) -> None:
    first, second = fresh("first"), fresh("second")
    async with AsyncCodewordsClient(base_url=live.url, api_key=live.key) as client:

        async def manage(body: dict[str, str]) -> httpx.Response:
            try:
                answer: httpx.Response = await client.run("manage_user_secrets", body)
            except httpx.HTTPStatusError as error:
                return error.response
            return answer

        added = await manage({"operation": "add", "name": "API_TOKEN", "value": first})
        assert (added.status_code, added.json()["status"]) == (200, "added"), added.text
        assert first not in added.text
        # CodeWords' spelling (client.manage_secrets(secret_name=…, secret_value=…))
        added = await manage(
            {"operation": "add", "secret_name": "OTHER_TOKEN", "secret_value": second}
        )
        assert added.status_code == 200, added.text
        got = await manage({"operation": "get", "name": "API_TOKEN"})
        assert got.json() == {"name": "API_TOKEN", "value": first}
        listed = await manage({"operation": "list"})
        assert [s["name"] for s in listed.json()["secrets"]] == ["API_TOKEN", "OTHER_TOKEN"]
        assert first not in listed.text and second not in listed.text
        deleted = await manage({"operation": "delete", "name": "OTHER_TOKEN"})
        assert deleted.json()["status"] == "deleted"
        missing = await manage({"operation": "get", "name": "OTHER_TOKEN"})
        assert missing.status_code == 404
        bad = await manage({"operation": "steal", "name": "API_TOKEN"})
        assert bad.status_code == 400
        assert "add, get, list, delete" in bad.json()["detail"]
        nameless = await manage({"operation": "get"})
        assert (nameless.status_code, nameless.json()["detail"]) == (
            400,
            "manage_user_secrets: get needs 'name'",
        )
        background = await client.client.post(
            f"{live.url}/run_async/manage_user_secrets",
            json={"operation": "get", "name": "API_TOKEN"},
            headers=bearer(live.key),
        )
        assert background.status_code == 400
        assert "never stored as a run" in background.json()["detail"]

    # answered within the request: no run holds the inputs (a value) or the answer (a value)
    assert await live.services.queue.list_runs(limit=10) == []
    stored = await database_bytes(live.settings.server.resolved_database_url())
    assert first.encode() not in stored and second.encode() not in stored


@pytest.mark.parametrize("sandbox", ["bwrap", "process"])
async def test_a_run_gets_only_what_its_workflow_declares(
    live_factory: LiveFactory, sandbox: str, tmp_path: Path
) -> None:
    live = await live_factory.start(runtime={"sandbox": sandbox})
    await live.register("secret_user")
    await live.services.registry.add(secret_keeper(tmp_path), "secret-keeper")
    owner_wide, scoped, undeclared = fresh("owner"), fresh("scoped"), fresh("undeclared")
    store = live.services.secrets
    await store.put("default", "API_TOKEN", owner_wide, workflow_id=None, actor="test")
    await store.put("default", "API_TOKEN", scoped, workflow_id="secret-user", actor="test")
    await store.put("default", "UNDECLARED_TOKEN", undeclared, workflow_id=None, actor="test")

    async with AsyncCodewordsClient(base_url=live.url, api_key=live.key) as client:
        user = await client.run(
            "secret-user",
            {
                "operations": [
                    {"operation": "get", "name": "API_TOKEN"},
                    {"operation": "get", "name": "UNDECLARED_TOKEN"},
                    {"operation": "list"},
                    {"operation": "add", "name": "API_TOKEN", "value": "from-a-run"},
                    {"operation": "delete", "name": "API_TOKEN"},
                ]
            },
        )
        keeper = await client.run(
            "secret-keeper",
            {
                "operations": [
                    {"operation": "add", "name": "KEPT_TOKEN", "value": "kept-by-a-run"},
                    {"operation": "list"},
                    {"operation": "get", "name": "KEPT_TOKEN"},
                    {"operation": "delete", "name": "UNDECLARED_TOKEN"},
                ]
            },
        )
    assert user.status_code == 200, user.text
    got, undeclared_get, listed, add, delete = user.json()
    assert got == {"status": 200, "value_sha256": sha256(scoped)}, "its workflow's value wins"
    assert undeclared_get["status"] == 403
    assert "secret-user does not list UNDECLARED_TOKEN" in undeclared_get["detail"]
    assert listed == {"status": 200, "names": ["API_TOKEN"]}, "a run lists what it declares"
    for refused in (add, delete):
        assert refused["status"] == 403
        assert "add 'secrets' to `grants`" in refused["detail"]

    assert keeper.status_code == 200, keeper.text
    kept, everything, not_declared, deleted = keeper.json()
    assert kept["status"] == 200
    assert everything == {"status": 200, "names": ["API_TOKEN", "KEPT_TOKEN", "UNDECLARED_TOKEN"]}
    assert not_declared["status"] == 403, "the grant does not widen what a run may read"
    assert deleted["status"] == 200
    assert await store.get("default", "KEPT_TOKEN", workflow_id=None) == "kept-by-a-run"
    assert await store.get("default", "UNDECLARED_TOKEN", workflow_id=None) is None
    assert await store.get("default", "API_TOKEN", workflow_id="secret-user") == scoped

    runs = {run.service_id: run.id for run in await live.services.queue.list_runs(limit=10)}
    changes = [
        (e.action, e.name, e.actor) for e in await store.audit("default") if e.actor != "test"
    ]
    assert changes == [
        ("delete", "UNDECLARED_TOKEN", runs["secret-keeper"]),
        ("set", "KEPT_TOKEN", runs["secret-keeper"]),
    ], "the run that made each change is on record"
    assert set(runs) == {"secret-user", "secret-keeper"}, "manage_user_secrets made no run"
    logs = [
        entry.message
        async for batch in live.services.gateway.follow_logs(runs["secret-user"], follow=False)
        for entry in batch
    ]
    assert logs, "the run wrote no log line"
    assert all(value not in line for line in logs for value in (owner_wide, scoped, undeclared))


async def test_a_lost_master_key_is_a_clear_error_not_garbage(
    live_factory: LiveFactory, caplog: pytest.LogCaptureFixture
) -> None:
    live = await live_factory.start()
    value = fresh("lost")
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
        put = await http.put(
            f"{SECRETS_URL}/API_TOKEN", json={"value": value}, headers=bearer(live.key)
        )
        assert put.status_code == 200, put.text
    await live_factory.stop(live)
    (live.settings.server.data_dir / "secrets.key").unlink()

    caplog.set_level(logging.WARNING)
    live = await live_factory.start()  # makes a new key file: the old values cannot open
    assert "stored secrets are encrypted under master key" in caplog.text
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
        got = await http.post(
            "/run/manage_user_secrets",
            json={"operation": "get", "name": "API_TOKEN"},
            headers=bearer(live.key),
        )
        put = await http.put(
            f"{SECRETS_URL}/OTHER_TOKEN", json={"value": "v"}, headers=bearer(live.key)
        )
        listed = await http.get(SECRETS_URL, headers=bearer(live.key))
    for answer in (got, put):
        assert answer.status_code == 503, answer.text
        assert answer.json()["detail"].startswith("secrets cannot be decrypted: ")
        assert "master key" in answer.json()["detail"]
    assert [s["name"] for s in listed.json()["secrets"]] == ["API_TOKEN"], "names stay listed"
    assert value not in caplog.text


async def test_nodes_with_the_same_secrets_key_read_the_same_secrets(
    live_factory: LiveFactory, tmp_path: Path
) -> None:
    shared = secrets.token_urlsafe(32)
    first = await live_factory.start(
        server={"data_dir": str(tmp_path / "node-a"), "secrets_key": shared}
    )
    second = await live_factory.start(
        server={"data_dir": str(tmp_path / "node-b"), "secrets_key": shared}
    )
    alone = await live_factory.start(server={"data_dir": str(tmp_path / "node-c")})
    value = fresh("shared")
    async with httpx.AsyncClient(timeout=60) as http:
        put = await http.put(
            f"{first.url}{SECRETS_URL}/API_TOKEN", json={"value": value}, headers=bearer(first.key)
        )
        assert put.status_code == 200, put.text
        answers = [
            await http.post(
                f"{node.url}/run/manage_user_secrets",
                json={"operation": "get", "name": "API_TOKEN"},
                headers=bearer(node.key),
            )
            for node in (second, alone)
        ]
    assert answers[0].json() == {"name": "API_TOKEN", "value": value}, answers[0].text
    assert answers[1].status_code == 503, "a node with a key file of its own reads nothing"
    assert "secrets cannot be decrypted" in answers[1].json()["detail"]
