"""A workflow's answer is capped (``runtime.max_response_size``): never held whole in memory."""

from __future__ import annotations

import resource

import httpx

from tests.conftest import LiveFactory

CAP = 1024 * 1024
HUGE = 200 * 1024 * 1024


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


async def test_an_answer_over_the_cap_fails_the_run_naming_the_limit_without_buffering_it(
    live_factory: LiveFactory,
) -> None:
    live = await live_factory.start(runtime={"max_response_size": CAP})
    await live.register("big_answer")
    headers = {"Authorization": live.key}
    peak_before = peak_rss_bytes()
    async with httpx.AsyncClient(base_url=live.url, timeout=120) as http:
        started = await http.post("/run_async/big-answer", json={"bytes": HUGE}, headers=headers)
        run_id = started.json()["request_id"]
        result = await http.get(f"/result/{run_id}", params={"timeout": 100}, headers=headers)
        within = await http.post("/run/big-answer", json={"bytes": CAP}, headers=headers)

    record = result.json()
    assert record["status"] == "failed"
    assert record["error"] == "response larger than 1 MiB (runtime.max_response_size)"
    assert record["responseStatus"] is None and record["responseJson"] is None
    # The 200 MiB answer was never held: the server's peak grew by far less than it.
    assert peak_rss_bytes() - peak_before < 64 * 1024 * 1024
    assert within.status_code == 200 and len(within.content) == CAP
