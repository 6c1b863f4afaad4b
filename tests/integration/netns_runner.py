"""The server's side of ``test_sandbox_network.py``, in a network namespace of its own.

slirp4netns connects out from the network namespace of the process that runs the sandbox, so that
process must be in the test's namespace: this script is it. Started by ``unshare --net``, it gives
the new namespace loopback and a bridge without ports holding the target addresses (no route out:
nothing can leave it, and it ends with this process), listens on each address, runs the hostile
workflow's ``connect`` attack against each with the real :class:`SandboxRunner`, and prints one
JSON object: per address, the run's status and error and how many connections the listener saw.

    unshare --net -- python tests/integration/netns_runner.py < spec.json
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from core.models import WorkflowLimits  # noqa: E402 - after the path fix
from dispatch.environments import python_of  # noqa: E402
from dispatch.registry import Workflow  # noqa: E402
from dispatch.sandbox.sandbox_runner import SandboxRunner  # noqa: E402
from dispatch.sandbox.zygote_pool import ZygotePool  # noqa: E402
from tests.integration.sandbox_helpers import (  # noqa: E402
    host_sandbox_or_problem,
    sandbox_settings_for,
)
from tests.runs import WORKFLOWS, Logs, invocation  # noqa: E402


def isolate(addresses: list[str]) -> None:
    """Loopback up, and the addresses on a port-less bridge; fail if there is any route out."""
    commands = [["link", "set", "lo", "up"], ["link", "add", "sb0", "type", "bridge"]]
    commands += [["addr", "add", address, "dev", "sb0"] for address in addresses]
    commands.append(["link", "set", "sb0", "up"])
    for command in commands:
        subprocess.run(["ip", *command], check=True)
    routes = subprocess.run(
        ["ip", "route", "show", "default"],
        check=True,
        capture_output=True,
        text=True,
    )
    if routes.stdout or Path("/proc/net/dev").read_text().count(":") != 2:
        raise SystemExit("the test's network namespace is not isolated")


async def reach(spec: dict[str, Any]) -> dict[str, dict[str, object]]:
    isolate(spec["addresses"])
    targets = [address.partition("/")[0] for address in spec["addresses"]]
    seen = dict.fromkeys(targets, 0)
    servers: list[asyncio.Server] = []
    for address in targets:

        async def answer(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str = address
        ) -> None:
            seen[address] += 1
            writer.write(b"reached")
            await writer.drain()
            writer.close()

        servers.append(await asyncio.start_server(answer, address, 0))
    found = host_sandbox_or_problem()
    if isinstance(found, str):
        raise SystemExit(f"no sandbox: {found}")
    runs_dir, cgroups = found
    allow = tuple(ipaddress.ip_network(a) for a in spec["allow"])
    settings = replace(sandbox_settings_for(runs_dir, cgroups), network_allow=allow)
    zygotes = ZygotePool(settings, Path(f"{runs_dir}-z")) if spec["zygote"] else None
    runner = SandboxRunner(settings, base_env=spec["base_env"], zygotes=zygotes)
    hostile = WORKFLOWS / "hostile.py"
    internet = WorkflowLimits.model_validate({"network": "internet"})
    workflow = Workflow(hostile.stem, 1, hostile, python_of(Path(spec["env"])))
    workflow = replace(workflow, limits=internet)
    results: dict[str, dict[str, object]] = {}
    try:
        for server, address in zip(servers, targets, strict=True):
            port = server.sockets[0].getsockname()[1]
            body = {"attack": "connect", "host": address, "port": port}
            logs = Logs()
            outcome = await runner.run(
                invocation(body, run_id=f"req_net{uuid.uuid4().hex[:12]}", timeout=30),
                workflow,
                logs,
            )
            results[address] = {
                "status": outcome.status.value,
                "error": outcome.error,
                "response": json.loads(outcome.response_body or b"null"),
                "reached": seen[address],
                "logs": logs.text(),
            }
    finally:
        await runner.close()
        if zygotes is not None:
            await zygotes.close()
        cgroups.release()
        runs_dir.rmdir()
        for server in servers:
            server.close()
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(reach(json.load(sys.stdin)))))
