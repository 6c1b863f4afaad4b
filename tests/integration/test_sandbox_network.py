"""``network = "internet"`` keeps private, link-local and reserved networks out of reach.

Where nothing can leave the machine: the sandbox's server side runs in a network namespace of its
own (``netns_runner.py``, started with ``unshare --net``; slirp4netns connects from the server's
namespace) with only loopback and a bridge without ports holding a private (10.99.0.1) and a
link-local (169.254.99.1) address, no route out, and a listener on each address. A run that
reaches a listener got through; the filter must refuse it unless the operator's allow-list names
the network.

Skipped only where the host cannot make sandboxes at all; CI's machine can.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from dispatch.sandbox.bwrap import probe_sandbox
from dispatch.sandbox.netfilter import filter_network
from tests.runs import BuiltEnvironment

RUNNER = Path(__file__).with_name("netns_runner.py")
PRIVATE = "10.99.0.1"
LINK_LOCAL = "169.254.99.1"
SANDBOX_UID = 65534


@pytest.fixture(scope="module")
def host_sandbox() -> None:
    runs_dir = Path("/tmp") / f"sb-probe-{uuid.uuid4().hex[:8]}"
    problem = probe_sandbox(SANDBOX_UID, runs_dir)
    if runs_dir.exists():
        runs_dir.rmdir()
    if problem is not None:
        pytest.skip(f"no sandbox on this host: {problem}")


async def connect_from_a_run(
    built: BuiltEnvironment, env: dict[str, str], *, zygote: bool, allow: list[str]
) -> dict[str, dict[str, Any]]:
    spec = {
        "addresses": [f"{PRIVATE}/24", f"{LINK_LOCAL}/16"],
        "allow": allow,
        "zygote": zygote,
        "env": str(built.env),
        "base_env": env,
    }
    runner = await asyncio.create_subprocess_exec(
        "unshare", "--net", "--", sys.executable, str(RUNNER),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(180):
        stdout, stderr = await runner.communicate(json.dumps(spec).encode())
    assert runner.returncode == 0, stderr.decode()
    results: dict[str, dict[str, Any]] = json.loads(stdout)
    return results


@pytest.mark.parametrize("zygote", [False, True], ids=["fresh", "zygote"])
async def test_private_and_link_local_hosts_are_refused(
    host_sandbox: None,
    built_environment: BuiltEnvironment,
    base_env: dict[str, str],
    zygote: bool,
) -> None:
    results = await connect_from_a_run(built_environment, base_env, zygote=zygote, allow=[])

    for address in (PRIVATE, LINK_LOCAL):
        result = results[address]
        assert result["reached"] == 0, result
        assert result["status"] == "failed", result
        assert "Network is unreachable" in result["error"], result
    nft = await asyncio.create_subprocess_exec(
        "nft", "list", "tables", stdout=asyncio.subprocess.PIPE
    )
    tables, _ = await nft.communicate()
    assert nft.returncode == 0
    assert b"switchboard" not in tables  # the table went into the runs' namespaces only


@pytest.mark.parametrize("zygote", [False, True], ids=["fresh", "zygote"])
async def test_the_operators_allow_list_opens_one_network(
    host_sandbox: None,
    built_environment: BuiltEnvironment,
    base_env: dict[str, str],
    zygote: bool,
) -> None:
    results = await connect_from_a_run(
        built_environment, base_env, zygote=zygote, allow=["10.99.0.0/24"]
    )

    # The listener really is reachable from a run: what the filter refuses above is no accident
    # of the test's namespace.
    assert results[PRIVATE]["reached"] == 1, results[PRIVATE]
    assert results[PRIVATE]["response"] == {"escaped": "reached"}, results[PRIVATE]
    assert results[LINK_LOCAL]["reached"] == 0, results[LINK_LOCAL]
    assert "Network is unreachable" in results[LINK_LOCAL]["error"], results[LINK_LOCAL]


async def test_the_filter_is_never_loaded_into_the_servers_own_network() -> None:
    problem = await filter_network(os.getpid(), ())

    assert problem == "cannot filter the sandbox's network: it is the server's own network"
