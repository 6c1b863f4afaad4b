"""WhatsApp for the end-to-end tests: a config file aimed at the fake Twilio API, signed webhooks,
and what the inbox and the runs look like through the ``switchboard`` command.

The fake (tests/fakes/twilio_api.py) runs in the test's event loop and records every reply, so
"one reply" is a count of what Twilio was sent, not of what the server believes it sent.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import httpx
from twilio.request_validator import RequestValidator

from tests.e2e.harness import ServerProcess, Service
from tests.fakes.twilio_api import AUTH_TOKEN, FakeTwilioApi, whatsapp_message_form

USER = "whatsapp:+15005550006"
_sids = itertools.count(1)


def write_config(service: Service, twilio: FakeTwilioApi, *, lease_seconds: float = 60) -> Path:
    """A TOML file turning the WhatsApp channel on (the built-in ``echo`` answers each message)
    and shortening the inbox's lease and poll so a dead node's event is taken over quickly."""
    section = twilio.whatsapp_section(workflow="echo", media_timeout=60)
    lines = ["[whatsapp]"]
    lines += [f"{name} = {json.dumps(value)}" for name, value in section.items()]
    lines += ["", "[inbox]", f"lease_seconds = {lease_seconds}", "poll_interval = 0.2", ""]
    path = service.tmp / "switchboard.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    path.chmod(0o600)  # it holds the Twilio auth token
    return path


def message(body: str, **extra: str) -> dict[str, str]:
    """A Twilio WhatsApp webhook's form fields (PROTOCOLS §2.1) with a fresh MessageSid."""
    return whatsapp_message_form(body, sid=f"SM{next(_sids):032d}", user=USER, **extra)


async def post_signed(server: ServerProcess, params: dict[str, str]) -> httpx.Response:
    """POST /twilio/whatsapp signed the way Twilio signs it."""
    url = f"{server.url}/twilio/whatsapp"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(url, data=params, headers={"X-Twilio-Signature": signature})


async def inbox_events(service: Service, config: Path) -> list[dict[str, Any]]:
    """``switchboard inbox list --json``: the stored events, newest first."""
    listed = await service.cli("inbox", "list", "--json", "--config", str(config))
    events: list[dict[str, Any]] = json.loads(listed.stdout)["events"]
    return events


async def whatsapp_runs(service: Service, config: Path) -> list[list[str]]:
    """The rows of ``switchboard runs list`` whose source is whatsapp (id first)."""
    listed = await service.cli("runs", "list", "--limit", "100", "--config", str(config))
    rows = [line.split() for line in listed.stdout.splitlines()]
    return [cells for cells in rows if len(cells) > 3 and cells[3] == "whatsapp"]
