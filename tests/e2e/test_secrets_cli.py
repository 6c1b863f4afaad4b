"""``switchboard secrets`` against a running server: the value through stdin (never argv), the
listings without values, and a key rotation the running server follows without a restart."""

from __future__ import annotations

import asyncio
import secrets
import stat

import httpx
import pytest

from tests.e2e.harness import Service, bearer
from tests.integration.secret_helpers import database_bytes

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_secrets_commands_and_a_rotation_under_a_running_server(
    service: Service, database_url: str
) -> None:
    value = f"cli-value-{secrets.token_hex(16)}"
    server = await service.start_ready()
    made = await service.cli("keys", "create", "--name", "secrets")
    key = made.last_line

    added = await service.cli("secrets", "set", "API_TOKEN", stdin=value + "\n", check=False)
    assert (added.returncode, added.stdout) == (0, "set API_TOKEN for owner default (owner)\n")
    bad = await service.cli("secrets", "set", "api-token", stdin="v", check=False)
    assert bad.returncode == 1 and "invalid secret name 'api-token'" in bad.stderr
    unknown = await service.cli(
        "secrets", "set", "X_TOKEN", "--workflow", "nope", stdin="v", check=False
    )
    assert unknown.returncode == 1 and "workflow 'nope' not found" in unknown.stderr

    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:

        async def get() -> httpx.Response:
            return await http.post(
                "/run/manage_user_secrets",
                json={"operation": "get", "name": "API_TOKEN"},
                headers=bearer(key),
            )

        assert (await get()).json() == {"name": "API_TOKEN", "value": value}, "stdin, one newline"

        key_file = service.data_dir / "secrets.key"
        old_key = key_file.read_text()
        rotated = await service.cli("secrets", "rotate-key")
        assert "1 of 1 data keys re-encrypted" in rotated.stdout, rotated.describe()
        assert key_file.read_text() != old_key
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert not (service.data_dir / "secrets.key.old").exists()
        after = await get()  # the server started with the old key: it reads the new file
        assert after.json() == {"name": "API_TOKEN", "value": value}, after.text

    listed, audit, workflows = await asyncio.gather(
        service.cli("secrets", "list"),
        service.cli("secrets", "audit"),
        service.cli("workflows", "list"),
    )
    assert "manage_user_secrets  -        built-in" in workflows.stdout, workflows.describe()
    assert listed.stdout.splitlines()[1].split()[:3] == ["API_TOKEN", "default", "owner"]
    assert [line.split()[1:3] for line in audit.stdout.splitlines()[1:]] == [
        ["rotate-key", "cli"],
        ["set", "cli"],
    ]
    unset = await service.cli("secrets", "unset", "API_TOKEN")
    assert unset.stdout == "unset API_TOKEN for owner default (owner)\n"
    again = await service.cli("secrets", "unset", "API_TOKEN", check=False)
    assert again.returncode == 1 and "not found" in again.stderr

    for result in (added, listed, audit, rotated, unset):
        assert value not in result.stdout + result.stderr
    assert value not in server.stdout + server.stderr
    assert value.encode() not in await database_bytes(database_url)
