"""``send_email`` is limited per owner (``email.send_email_per_hour``), across nodes."""

from __future__ import annotations

import httpx

from tests.conftest import LiveFactory
from tests.fakes.smtp_sink import SmtpSink
from tests.integration.deliveries import delivery_rows
from tests.integration.email_helpers import start_email

MAIL = {"to": "carol@sender.test", "subject": "Report", "body": "Numbers attached."}


async def test_an_owner_past_its_hourly_mails_gets_429_and_others_do_not(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink, send_email_per_hour=2)
    other = await live.key_for("other-team")
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:

        async def send(key: str) -> httpx.Response:
            return await http.post("/run/send_email", json=MAIL, headers={"Authorization": key})

        first, second, third = [await send(live.key) for _ in range(3)]
        elsewhere = await send(other)
    assert (first.status_code, second.status_code) == (200, 200)
    assert third.status_code == 429, third.text
    assert "2 mails in the last hour" in third.json()["detail"]
    assert 3500 <= third.json()["retry_after"] <= 3600
    assert elsewhere.status_code == 200, elsewhere.text
    assert len(await delivery_rows(live)) == 3

    # A second node on the same database counts the same mails.
    node = await start_email(live_factory, sink, send_email_per_hour=2)
    async with httpx.AsyncClient(base_url=node.url, timeout=60) as http:
        again = await http.post("/run/send_email", json=MAIL, headers={"Authorization": live.key})
    assert again.status_code == 429
