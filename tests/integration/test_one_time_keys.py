"""One-time keys bind only to what they made: a foreign request id never becomes theirs."""

from __future__ import annotations

import httpx
from codewords_client import AsyncCodewordsClient

from tests.conftest import Live


async def test_a_one_time_key_naming_another_run_is_refused_and_cannot_read_it(
    live: Live,
) -> None:
    once = await live.key_for(one_time=True)
    async with httpx.AsyncClient(base_url=live.url, headers={"Authorization": live.key}) as http:
        done = (await http.post("/run/echo", json={"secret": 1})).headers["X-Request-Id"]
        husk = (await http.post("/provision-request")).json()["request_id"]
    async with httpx.AsyncClient(base_url=live.url, headers={"Authorization": once}) as http:
        for foreign in (done, husk):
            fill = await http.post(
                "/run_async/echo", json={}, headers={"X-Provisioned-Request-Id": foreign}
            )
            assert fill.status_code == 401, fill.text
            assert "provisioned itself" in fill.json()["detail"]
            for path in (f"/request/{foreign}", f"/result/{foreign}"):
                assert (await http.get(path)).status_code == 401, path
    husk_record = await live.services.queue.get(husk)
    assert husk_record is not None and husk_record.status == "provisioned"
    async with AsyncCodewordsClient(base_url=live.url, api_key=once) as client:
        # Still unspent: its one run is its own.
        mine = await client.run("echo", {"mine": True}, in_background=True)
        record = (await mine.result(timeout_seconds=30)).json()
    assert record["responseJson"] == {"mine": True}


async def test_a_request_refused_for_its_headers_does_not_spend_a_one_time_key(
    live: Live,
) -> None:
    once = await live.key_for(one_time=True)
    headers = [(b"Authorization", once.encode()), (b"Content-Type", b"application/json")]
    async with httpx.AsyncClient(base_url=live.url) as http:
        for bad in ("Idempotency-Key", "X-Correlation-Id"):
            refused = await http.post(
                "/run_async/echo",
                content=b"{}",
                headers=httpx.Headers([*headers, (bad.encode(), b"not \xff utf-8")]),
            )
            assert refused.status_code == 400, refused.text
            assert bad in refused.json()["detail"]
        made = await http.post("/run_async/echo", content=b'{"after": 1}', headers=headers)
    assert made.status_code == 200, made.text
