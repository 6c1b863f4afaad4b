"""What we serve cannot run as our page in a browser, and /metrics can be closed."""

from __future__ import annotations

import httpx
import pytest
from codewords_client import AsyncCodewordsClient

from switchboard.headers import CONTENT_SECURITY_POLICY
from tests.conftest import Live, LiveFactory


def assert_inert(response: httpx.Response) -> None:
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "sandbox" in CONTENT_SECURITY_POLICY and "default-src 'none'" in CONTENT_SECURITY_POLICY


async def upload(live: Live, filename: str, content_type: str, content: bytes) -> httpx.Response:
    async with AsyncCodewordsClient(base_url=live.url, api_key=live.key) as c:
        info = await c.create_file_upload(filename)
    async with httpx.AsyncClient() as http:
        put = await http.put(
            info["upload_uri"], content=content, headers={"Content-Type": content_type}
        )
        assert put.status_code == 200, put.text
        return await http.get(info["download_uri"])


@pytest.mark.parametrize(
    ("content_type", "disposition"),
    [
        ("text/html", "attachment"),
        ("image/svg+xml", "attachment"),
        ("application/xhtml+xml", "attachment"),
        ("text/plain, text/html", "attachment"),
        ("image/png", "inline"),
        ("text/plain; charset=utf-8", "inline"),
    ],
)
async def test_an_upload_is_shown_inline_only_when_its_type_is_safe(
    live: Live, content_type: str, disposition: str
) -> None:
    page = b"<html><script>alert(document.cookie)</script></html>"
    download = await upload(live, "page.html", content_type, page)
    assert download.status_code == 200
    assert download.content == page
    assert download.headers["Content-Disposition"].split(";")[0] == disposition
    assert_inert(download)


async def test_a_workflow_html_answer_and_our_errors_are_inert(live: Live) -> None:
    await live.register("html_page")
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
        answer = await http.post(
            "/run/html-page/", json={}, headers={"Authorization": f"Bearer {live.key}"}
        )
        refused = await http.post("/run/html-page/", json={})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "<script>" in answer.text
    assert_inert(answer)  # the workflow's own "default-src *" does not survive
    assert refused.status_code == 401
    assert_inert(refused)


async def test_metrics_need_the_metrics_key_when_one_is_set(live_factory: LiveFactory) -> None:
    live = await live_factory.start(server={"metrics_key": "m3trics-key"})
    async with httpx.AsyncClient(base_url=live.url) as http:
        anonymous = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
        odd = await http.get("/metrics", headers={b"Authorization": "Bearer été".encode()})
        right = await http.get("/metrics", headers={"Authorization": "Bearer m3trics-key"})
    for refused in (anonymous, wrong, odd):
        assert refused.status_code == 401
        assert "metrics_key" in refused.json()["detail"]
    assert right.status_code == 200
    assert "switchboard_queue_depth" in right.text
