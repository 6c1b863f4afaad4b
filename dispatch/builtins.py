"""Built-in services: workflows that run inside the server process, addressed like any other."""

from __future__ import annotations

from core.models import Invocation, Outcome
from core.ports import BuiltinService, LogSink


async def echo(invocation: Invocation, on_log: LogSink) -> Outcome:
    """Answer with the inputs, unchanged (a JSON body, or ``null`` when there was none)."""
    on_log("stdout", f"echo: {len(invocation.body)} bytes")
    return Outcome.from_response(200, invocation.body or b"null", "application/json")


def builtin_services() -> dict[str, BuiltinService]:
    return {"echo": echo}
