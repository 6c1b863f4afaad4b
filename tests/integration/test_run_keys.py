"""Run keys for real: a workflow's ``CODEWORDS_API_KEY`` lives as long as its run and can do
only what its header grants (README 'Run keys'), through real sockets and the real sandbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from codewords_client import AsyncCodewordsClient

from scheduler.actions import definition_fields
from scheduler.models import ScheduleSpec
from tests.conftest import WORKFLOWS, Live, LiveFactory

PROBE = (WORKFLOWS / "key_probe.py").read_text()


async def register_probe(live: Live, tmp_path: Path, name: str, header: str = "") -> None:
    """``key_probe`` registered as ``name`` with ``header`` as its [tool.switchboard] table."""
    table = "".join(f"# {line}\n" for line in header.strip().splitlines())
    source = PROBE.replace("# ]\n# ///", "# ]\n# [tool.switchboard]\n" + table + "# ///", 1)
    path = tmp_path / f"{name}.py"
    path.write_text(source if header else PROBE)
    await live.services.registry.add(path, name)


async def probe(live: Live, name: str, *calls: dict[str, Any]) -> dict[str, Any]:
    """Run the probe ``name`` with ``calls``; its answer (``key`` and one answer per call)."""
    async with AsyncCodewordsClient(base_url=live.url, api_key=live.key) as client:
        response = await client.run(name, {"calls": list(calls)})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    answer["request_id"] = response.headers["X-Request-Id"]
    return answer


def statuses(answer: dict[str, Any]) -> list[int]:
    return [item["status"] for item in answer["answers"]]


async def test_a_run_key_dies_when_its_run_ends(live: Live, tmp_path: Path) -> None:
    await register_probe(live, tmp_path, "probe")
    answer = await probe(live, "probe", {"path": "/run/echo", "json_body": {"during": 1}})
    assert answer["answers"] == [{"status": 200, "body": {"during": 1}}]
    async with httpx.AsyncClient(
        base_url=live.url, headers={"Authorization": answer["key"]}
    ) as http:
        after = await http.post("/run/echo", json={"after": 1})
        provision = await http.post("/provision-request")
    assert after.status_code == 401 and provision.status_code == 401
    assert answer["request_id"] in after.json()["detail"]
    assert "ended" in after.json()["detail"]


async def test_warm_reuse_gives_each_run_a_key_that_works_and_dies_with_it(
    live_factory: LiveFactory, tmp_path: Path
) -> None:
    live = await live_factory.start(runtime={"sandbox": "bwrap", "warm_idle_ttl": 600})
    await register_probe(live, tmp_path, "warm-probe", "warm = true")
    first = await probe(live, "warm-probe", {"path": "/run/echo", "json_body": 1})
    second = await probe(live, "warm-probe", {"path": "/run/echo", "json_body": 2})
    assert (statuses(first), statuses(second)) == ([200], [200])
    assert first["key"] != second["key"]
    assert f".{second['request_id']}." in second["key"]
    async with httpx.AsyncClient(base_url=live.url) as http:
        stale = await http.post("/run/echo", json=3, headers={"Authorization": first["key"]})
        health = (await http.get("/healthz")).json()
    assert stale.status_code == 401
    assert health["warm"] == 1, health  # the second run was served by the kept process


SCHEDULE = {"service_id": "echo", "cron_expression": "0 9 * * *", "input_data": {"a": 1}}


async def test_without_grants_a_run_key_cannot_touch_schedules_or_look_up_files(
    live: Live, tmp_path: Path
) -> None:
    await register_probe(live, tmp_path, "plain")
    async with AsyncCodewordsClient(base_url=live.url, api_key=live.key) as client:
        owners_file = (await client.create_file_upload("owner.txt"))["file_id"]
    answer = await probe(
        live,
        "plain",
        {"method": "GET", "path": "/schedules"},
        {"path": "/schedules", "json_body": {**SCHEDULE, "schedule_id": "by-rest"}},
        {"path": "/run/schedule_runs", "json_body": {**SCHEDULE, "schedule_id": "by-builtin"}},
        {"method": "GET", "path": f"/file/{owners_file}"},
        {"path": "/file?filename=answer.txt"},
    )
    assert statuses(answer) == [403, 403, 403, 403, 200]
    for refused in answer["answers"][:4]:
        assert (
            "add 'schedules'" in refused["body"]["detail"]
            or "'files'" in (refused["body"]["detail"])
        )
    assert await live.services.schedules.list_schedules(None) == []


async def test_granted_schedules_and_files_work_for_the_run_key(live: Live, tmp_path: Path) -> None:
    await register_probe(live, tmp_path, "granted", 'grants = ["schedules", "files"]')
    async with AsyncCodewordsClient(base_url=live.url, api_key=live.key) as client:
        owners_file = (await client.create_file_upload("owner.txt"))["file_id"]
    answer = await probe(
        live,
        "granted",
        {"path": "/schedules", "json_body": {**SCHEDULE, "schedule_id": "by-rest"}},
        {"path": "/run/schedule_runs", "json_body": {**SCHEDULE, "schedule_id": "by-builtin"}},
        {"method": "GET", "path": f"/file/{owners_file}"},
    )
    assert statuses(answer) == [201, 200, 200], answer
    stored = await live.services.schedules.list_schedules("default")
    assert sorted(s.id for s in stored) == ["by-builtin", "by-rest"]


NO_NETWORK = 'network = "none"\ngrants = ["schedules"]'
WEBHOOK = "webhook:https://hooks.example.test/collect"


async def test_a_network_none_workflow_cannot_make_the_server_send_for_it(
    live: Live, tmp_path: Path
) -> None:
    await register_probe(live, tmp_path, "sealed", NO_NETWORK)
    await live.services.schedules.create(
        "default",
        _spec({**SCHEDULE, "id": "owners-hook", "deliver_to": WEBHOOK}),
    )
    mail = {"to": "carol@example.test", "subject": "leak", "body": "the data"}
    answer = await probe(
        live,
        "sealed",
        {"path": "/run/send_email", "json_body": mail},
        {
            "path": "/run/schedule_runs",
            "json_body": {**SCHEDULE, "schedule_id": "out", "deliver_to": WEBHOOK},
        },
        {"path": "/schedules", "json_body": {**SCHEDULE, "id": "out2", "deliver_to": WEBHOOK}},
        {
            "path": "/schedules",
            "json_body": {**SCHEDULE, "id": "mailer", "service_id": "send_email"},
        },
        {"method": "PATCH", "path": "/schedules/owners-hook", "json_body": {"inputs": {"x": 1}}},
        {"path": "/schedules/owners-hook/run-now"},
        {"path": "/schedules", "json_body": {**SCHEDULE, "id": "kept-inside"}},
    )
    assert statuses(answer) == [403, 403, 403, 403, 403, 403, 201], answer
    for refused in answer["answers"][:6]:
        detail = refused["body"]["detail"]
        assert 'network = "none"' in detail and "'outbound'" in detail, detail
    ids = sorted(s.id for s in await live.services.schedules.list_schedules(None))
    assert ids == ["kept-inside", "owners-hook"]
    hook = await live.services.schedules.get(None, "owners-hook")
    assert hook.inputs == {"a": 1} and hook.last_run_id is None
    runs = await live.services.queue.list_runs(limit=50)
    assert not [run for run in runs if run.service_id == "send_email" and run.status == "completed"]


async def test_outbound_granted_or_internet_workflows_may_send(live: Live, tmp_path: Path) -> None:
    await register_probe(
        live, tmp_path, "sealed-out", 'network = "none"\ngrants = ["schedules", "outbound"]'
    )
    await register_probe(live, tmp_path, "online", 'grants = ["schedules"]')
    mail = {"to": "carol@example.test", "subject": "report", "body": "hello"}
    for name in ("sealed-out", "online"):
        answer = await probe(
            live,
            name,
            {"path": "/run/send_email", "json_body": mail},
            {"path": "/schedules", "json_body": {**SCHEDULE, "id": name, "deliver_to": WEBHOOK}},
        )
        assert statuses(answer) == [200, 201], (name, answer)


def _spec(fields: dict[str, Any]) -> ScheduleSpec:
    return ScheduleSpec.model_validate(definition_fields(fields))


async def test_a_run_key_cannot_use_the_management_api(live: Live, tmp_path: Path) -> None:
    """Else a run key without grants could mint a full key of its owner, or revoke its keys."""
    await register_probe(live, tmp_path, "operator-probe")
    before = await live.services.keys.list()
    answer = await probe(
        live,
        "operator-probe",
        {"path": "/api/v1/keys", "json_body": {"name": "escape"}},
        {"method": "GET", "path": "/api/v1/keys"},
        {"method": "DELETE", "path": f"/api/v1/keys/{before[0].id}"},
        {"method": "GET", "path": "/api/v1/runs"},
        {"method": "GET", "path": "/api/v1/workflows"},
    )
    assert statuses(answer) == [403] * 5
    assert all("a run's key cannot be used" in a["body"]["detail"] for a in answer["answers"])
    assert await live.services.keys.list() == before
