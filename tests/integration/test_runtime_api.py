"""The runtime API through the real codewords-client and real sockets, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

import httpx
import pytest
from codewords_client import AsyncCodewordsClient

from tests.conftest import Live, LiveFactory


def client(live: Live, key: str | None = None) -> AsyncCodewordsClient:
    return AsyncCodewordsClient(base_url=live.url, api_key=key or live.key)


async def test_sync_run_of_builtin_echo(live: Live) -> None:
    async with client(live) as c:
        response = await c.run("echo", {"hello": "world", "n": [1, 2]})
    assert response.status_code == 200
    assert response.json() == {"hello": "world", "n": [1, 2]}
    request_id = response.headers["X-Request-Id"]
    record = await live.services.queue.get(request_id)
    assert record is not None and record.status == "completed"


async def test_bearer_and_raw_keys_both_work(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url) as http:
        raw = await http.post("/run/echo/", json=1, headers={"Authorization": live.key})
        bearer = await http.post(
            "/run/echo", json=2, headers={"Authorization": f"Bearer {live.key}"}
        )
    assert (raw.status_code, raw.json()) == (200, 1)
    assert (bearer.status_code, bearer.json()) == (200, 2)


async def test_script_workflow_background_run_result_details_and_logs(live: Live) -> None:
    await live.register("hello")
    async with client(live) as c:
        handle = await c.run("hello", {"name": "Ada"}, in_background=True)
        result = await handle.result(timeout_seconds=60)
        record = result.json()
        details = await handle.details()
        logs = [entry async for entry in handle.logs()]
    assert record["status"] == "completed"
    assert record["responseStatus"] == 200
    assert record["responseJson"] == {"message": "Hello Ada!"}
    assert record["requestJson"] == {"name": "Ada"}
    assert record["source"] == "api" and record["service_id"] == "hello"
    assert record["workflowVersion"] == 1
    assert record["durationMs"] >= 0 and record["createdAt"] and record["completedAt"]
    assert details["request_id"] == handle.request_id and details["status"] == "completed"
    messages = [entry["message"] for entry in logs]
    assert any("greeting Ada" in message for message in messages), messages
    assert all("createdAt" in entry for entry in logs)
    stamps = [entry["createdAt"] for entry in logs]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no store logic here
async def test_a_stderr_line_has_the_level_it_states_and_none_otherwise(live: Live) -> None:
    await live.register("log_levels")
    async with client(live) as c:
        handle = await c.run("log-levels", {}, in_background=True)
        await handle.result(timeout_seconds=60)
        logs = [entry async for entry in handle.logs()]
    seen = {entry["message"]: (entry["stream"], entry["level"]) for entry in logs}
    assert seen["INFO:levels:an info line"] == ("stderr", "info"), logs
    assert seen["WARNING:root:a warning line"] == ("stderr", "warning"), logs
    assert seen["a plain stderr line"] == ("stderr", None), logs
    assert seen["a plain stdout line"] == ("stdout", None), logs


async def test_logs_resume_after_timestamp(live: Live) -> None:
    await live.register("hello")
    async with client(live) as c:
        handle = await c.run("hello", {"name": "Bo"}, in_background=True)
        await handle.result(timeout_seconds=60)
        everything = [entry async for entry in handle.logs()]
    assert len(everything) >= 3
    after = everything[1]["createdAt"]
    async with httpx.AsyncClient(base_url=live.url) as http:
        response = await http.get(
            f"/logs/{handle.request_id}",
            params={"after": after},
            headers={"Authorization": live.key},
        )
    resumed = [line for line in response.text.splitlines() if line]
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    assert len(resumed) == len(everything) - 2


async def test_upload_then_workflow_downloads_the_file(live: Live) -> None:
    await live.register("fetch_file")
    content = b"name,score\nada,10\n" * 1000
    async with client(live) as c:
        url = await c.upload_file_content("scores.csv", content)
        response = await c.run("fetch-file", {"url": url})
    body = response.json()
    assert body["size"] == len(content)
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["content_type"].startswith("text/csv")
    async with httpx.AsyncClient() as http:
        tampered = await http.get(url.replace("sig=", "sig=x"))
        unsigned = await http.get(url.split("?")[0])
    assert tampered.status_code == 403 and "signature" in tampered.json()["detail"]
    assert unsigned.status_code == 403


async def test_upload_larger_than_limit_is_413(live_factory: LiveFactory) -> None:
    live = await live_factory.start(files={"max_size": 1024})
    async with client(live) as c:
        info = await c.create_file_upload("big.bin")
    async with httpx.AsyncClient() as http:
        response = await http.put(info["upload_uri"], content=b"x" * 4096)
        download = await http.get(info["download_uri"])
    assert response.status_code == 413
    assert "1024" in response.json()["detail"]
    assert download.status_code == 404


async def test_workflow_calls_another_service_through_runtime_uri(live: Live) -> None:
    await live.register("caller")
    async with client(live) as c:
        response = await c.run("caller", {"service_id": "echo", "inputs": {"ping": 1}})
    assert response.status_code == 200
    assert response.json() == {"inner": {"ping": 1}}
    runs = await live.services.queue.list_runs(limit=10)
    inner = [run for run in runs if run.service_id == "echo"]
    outer = [run for run in runs if run.service_id == "caller"]
    assert len(inner) == 1 and len(outer) == 1
    assert inner[0].caller_id == outer[0].id
    assert inner[0].owner_id == outer[0].owner_id


async def test_workflow_environment_and_headers(live: Live) -> None:
    await live.register("env_dump")
    async with client(live) as c:
        response = await c.run("env-dump", {}, correlation_id="corr-42")
    body = response.json()
    request_id = response.headers["X-Request-Id"]
    assert body["env"]["CODEWORDS_RUNTIME_URI"] == live.url
    assert body["env"]["RUNTIME_URI"] == live.url
    assert body["env"]["PORT"] == "8000" and body["env"]["LOGLEVEL"] == "INFO"
    assert body["env"]["CODEWORDS_SERVICE_ROOT"]
    assert body["has_key"] is True
    assert body["headers"]["X-Request-Id"] == request_id
    assert body["headers"]["X-Correlation-Id"] == "corr-42"
    assert body["headers"]["Codewords-Caller-Id"].startswith("key_")
    assert not any("cwk-" in arg for arg in body["argv"])


@pytest.mark.parametrize("header", [None, "cwk-not-a-real-key", "Bearer cwk-nope", "Basic abc"])
async def test_missing_or_bad_key_is_401(live: Live, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    async with httpx.AsyncClient(base_url=live.url) as http:
        response = await http.post("/run/echo/", json={}, headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"]


async def test_revoked_key_is_401(live: Live) -> None:
    key, info = await live.services.keys.create(name="soon revoked")
    async with client(live, key) as c:
        assert (await c.run("echo", 1)).status_code == 200
        await live.services.keys.revoke(info.id)
        with pytest.raises(httpx.HTTPStatusError) as failure:
            await c.run("echo", 2)
    assert failure.value.response.status_code == 401


async def test_one_time_key_starts_exactly_one_run(live: Live) -> None:
    once = await live.key_for(one_time=True)
    async with client(live, once) as c:
        handle = await c.run("echo", {"x": 1}, in_background=True)  # provision + run = one use
        record = (await handle.result(timeout_seconds=30)).json()
        assert record["responseJson"] == {"x": 1}
        assert (await handle.details())["status"] == "completed"
        with pytest.raises(httpx.HTTPStatusError) as second:
            await c.run("echo", {"x": 2})
        assert second.value.response.status_code == 401
        with pytest.raises(httpx.HTTPStatusError) as provision:
            await c.provision_request()
        assert provision.value.response.status_code == 401
    async with client(live) as c:
        other = await c.run("echo", 3)
    async with httpx.AsyncClient(base_url=live.url, headers={"Authorization": once}) as http:
        foreign = await http.get(f"/request/{other.headers['X-Request-Id']}")
        upload = await http.post("/file", params={"filename": "a.txt"})
    assert foreign.status_code == 401 and upload.status_code == 401


async def test_result_is_408_while_running_then_the_record(live: Live) -> None:
    await live.register("slow")
    async with client(live) as c, httpx.AsyncClient(base_url=live.url) as http:
        handle = await c.run("slow", {"seconds": 2}, in_background=True)
        early = await http.get(
            f"/result/{handle.request_id}",
            params={"timeout": "0"},
            headers={"Authorization": live.key},
        )
        assert early.status_code == 408
        assert handle.request_id in early.json()["detail"]
        final = await handle.result(timeout_seconds=60)  # the client retries on 408
    assert final.json()["responseJson"] == {"slept": 2}


async def test_sync_run_past_sync_timeout_is_504_and_result_stays_readable(
    live_factory: LiveFactory,
) -> None:
    live = await live_factory.start(runtime={"sync_timeout": 1})
    await live.register("slow")
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        response = await http.post(
            "/run/slow/", json={"seconds": 3}, headers={"Authorization": live.key}
        )
    assert response.status_code == 504
    detail = response.json()["detail"]
    request_id = detail.split("request ")[1].split(" ")[0]
    assert request_id.startswith("req_") and "/result/" in detail
    record = await live.services.gateway.wait_until_finished(request_id, 30)
    assert record is not None and record.status == "completed"
    assert record.to_api()["responseJson"] == {"slept": 3}


async def test_run_cut_at_run_timeout_is_timed_out(live_factory: LiveFactory) -> None:
    live = await live_factory.start(runtime={"run_timeout": 1})
    await live.register("slow")
    async with client(live) as c:
        handle = await c.run("slow", {"seconds": 30}, in_background=True)
        record = (await handle.result(timeout_seconds=30)).json()
    assert record["status"] == "timed_out"
    assert "timed out after 1 s" in record["error"]


async def test_a_run_whose_environment_is_missing_fails_at_once_and_builds_nothing(
    live_factory: LiveFactory, tmp_path: Path
) -> None:
    envs = tmp_path / "envs"
    live = await live_factory.start(runtime={"env_dir": str(envs)})
    await live.register("hello")
    (env,) = [path for path in envs.iterdir() if path.is_dir()]
    shutil.rmtree(env)  # a node whose environments were wiped after registration

    async with client(live) as c:
        handle = await c.run("hello", {"name": "Ada"}, in_background=True)
        failed = (await handle.result(timeout_seconds=60)).json()
    left_unbuilt = not env.exists()
    await live.services.registry.build("hello")  # what the demo does on start
    async with client(live) as c:
        rebuilt = await c.run("hello", {"name": "Ada"})

    assert failed["status"] == "failed"
    assert failed["error"] == "environment for workflow 'hello' is not built; re-register it"
    assert failed["workflowVersion"] is None
    assert left_unbuilt
    assert rebuilt.json() == {"message": "Hello Ada!"}


async def test_workflow_error_is_passed_through_and_recorded(live: Live) -> None:
    await live.register("fail")
    async with client(live) as c:
        with pytest.raises(httpx.HTTPStatusError) as failure:
            await c.run("fail", {})
    response = failure.value.response
    assert response.status_code == 500
    assert response.json() == {"detail": "boom: the workflow failed on purpose"}
    record = await live.services.queue.get(response.headers["X-Request-Id"])
    assert record is not None
    assert record.status == "failed" and record.response_status == 500
    assert "boom" in (record.error or "")


async def test_malformed_json_is_400_and_nothing_is_queued(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url) as http:
        response = await http.post(
            "/run_async/echo/",
            content=b'{"a": ',
            headers={"Authorization": live.key, "Content-Type": "application/json"},
        )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]
    assert await live.services.queue.list_runs() == []


async def test_oversize_body_is_413(live_factory: LiveFactory) -> None:
    live = await live_factory.start(server={"max_body_size": 2048})
    async with httpx.AsyncClient(base_url=live.url) as http:
        response = await http.post(
            "/run/echo/", json={"blob": "x" * 5000}, headers={"Authorization": live.key}
        )
    assert response.status_code == 413
    assert "2048" in response.json()["detail"]


async def test_unknown_service_and_request_are_404(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers={"Authorization": live.key}) as http:
        service = await http.post("/run/no-such-thing/", json={})
        request = await http.get("/request/req_000000000000000000000000")
    assert service.status_code == 404 and "no-such-thing" in service.json()["detail"]
    assert request.status_code == 404


async def test_other_owners_runs_logs_and_files_are_404(live: Live) -> None:
    mallory = await live.key_for("mallory")
    async with client(live) as c:
        response = await c.run("echo", {"secret": True})
        info = await c.create_file_upload("mine.txt")
    request_id = response.headers["X-Request-Id"]
    async with httpx.AsyncClient(base_url=live.url, headers={"Authorization": mallory}) as http:
        for path in (
            f"/result/{request_id}",
            f"/request/{request_id}",
            f"/logs/{request_id}",
            f"/file/{info['file_id']}",
        ):
            answer = await http.get(path)
            assert answer.status_code == 404, path
        husk = (await http.post("/provision-request")).json()["request_id"]
    async with httpx.AsyncClient(base_url=live.url, headers={"Authorization": live.key}) as http:
        stolen = await http.post(
            "/run_async/echo/", json={}, headers={"X-Provisioned-Request-Id": husk}
        )
    assert stolen.status_code == 404


async def test_provisioned_request_is_filled_once(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers={"Authorization": live.key}) as http:
        husk = (await http.post("/provision-request")).json()["request_id"]
        first = await http.post(
            "/run_async/echo/", json=1, headers={"X-Provisioned-Request-Id": husk}
        )
        again = await http.post(
            "/run_async/echo/", json=2, headers={"X-Provisioned-Request-Id": husk}
        )
    assert first.json() == {"request_id": husk}
    assert again.status_code == 409


async def test_idempotency_key_yields_one_run(live: Live) -> None:
    headers = {"Authorization": live.key, "Idempotency-Key": "order-17"}
    async with httpx.AsyncClient(base_url=live.url, headers=headers) as http:
        answers = await asyncio.gather(*(http.post("/run_async/echo/", json=i) for i in range(5)))
    ids = {answer.json()["request_id"] for answer in answers}
    assert len(ids) == 1
    assert len(await live.services.queue.list_runs()) == 1


async def test_health_reports_ready(live: Live, tmp_path: Path) -> None:
    async with httpx.AsyncClient(base_url=live.url) as http:
        health = await http.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    # The default: bubblewrap where it is installed (CI), else the loud fallback.
    assert health.json()["sandbox"] == ("bwrap" if shutil.which("bwrap") else "process")


async def test_sync_run_with_print_logs_streams_the_provisioned_run(
    live: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    await live.register("hello")
    async with client(live) as c:
        # print_logs: the client provisions, runs synchronously and follows /logs meanwhile.
        response = await c.run("hello", {"name": "Cy"}, print_logs=True)
    assert response.json() == {"message": "Hello Cy!"}
    printed = capsys.readouterr().out
    assert "greeting Cy" in printed


async def test_get_method_reaches_the_workflow_without_a_body(live: Live) -> None:
    async with client(live) as c:
        response = await c.run("echo", method="GET")
    assert response.status_code == 200 and response.json() is None
    record = await live.services.queue.get(response.headers["X-Request-Id"])
    assert record is not None and record.method == "GET" and record.request_body is None


async def test_metrics_count_accepted_rejected_and_finished_runs(live: Live) -> None:
    async with client(live) as c:
        await c.run("echo", {"a": 1})
    async with httpx.AsyncClient(base_url=live.url) as http:
        refused = await http.post("/run/echo/", json={}, headers={"Authorization": "cwk-wrong"})
        metrics = await http.get("/metrics")
    assert refused.status_code == 401
    assert metrics.status_code == 200
    text = metrics.text
    assert 'switchboard_runs_accepted_total{source="api"} 1.0' in text
    assert 'switchboard_requests_rejected_total{status="401"} 1.0' in text
    assert 'switchboard_run_duration_seconds_count{status="completed"} 1.0' in text
    assert 'switchboard_queue_depth{status="queued"} 0.0' in text


async def test_head_starts_no_run(live: Live) -> None:
    """GET /run runs a workflow, so HEAD is not served as a GET (nor on the other GET routes)."""
    async with httpx.AsyncClient(base_url=live.url) as http:
        headers = {"Authorization": live.key}
        for path in ("/run/echo", "/run/echo/sub", "/result/req_x", "/schedules"):
            response = await http.head(path, headers=headers)
            assert response.status_code == 405, path
        served = await http.get("/run/echo", headers=headers)
        assert served.status_code == 200
