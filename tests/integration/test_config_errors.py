"""A configuration error names the setting and the problem, never the value given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))
BAD_SECRETS = """
[email]
relay_password = 12345
sendgrid_token = 987654
relay_url = "smtp://relay:hunter2@mail.test:hunter2"
"""


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["keys", "list"]])
def test_a_bad_secret_is_named_but_never_printed(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "switchboard.toml"
    config.write_text(BAD_SECRETS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env["SWITCHBOARD_SERVER__DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [SWITCHBOARD, "--config", str(config), *command],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    for secret in ("12345", "987654", "hunter2"):
        assert secret not in output
    for field in ("email.relay_password", "email.sendgrid_token", "email.relay_url"):
        assert field in output
