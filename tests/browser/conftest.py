"""One demo server and one Chromium for the console's browser tests (the suite's time budget).

Chromium is Debian's (``scripts/setup`` installs it), driven by Playwright's Python package
through ``executable_path``: no ``playwright install`` download. Screenshots of each page go to
``.artifacts/console/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import ROOT, free_port
from tests.e2e.harness import CLI_SECONDS, READY_SECONDS, ServerProcess, switchboard_command

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / ".artifacts" / "console"
LINK = re.compile(r"^Console: (http://\S+/login\?token=\S+)$", re.MULTILINE)


class ConsoleServer:
    """The demo (``switchboard serve``, nothing configured) plus an SMTP intake port."""

    def __init__(self, directory: Path, workflow_cache: Path) -> None:
        self.smtp_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env.update(
            PYTHONUNBUFFERED="1",
            SWITCHBOARD_SERVER__DATA_DIR=str(directory / "data"),
            SWITCHBOARD_SERVER__PORT=str(free_port()),
            SWITCHBOARD_RUNTIME__ENV_DIR=str(workflow_cache / "envs"),
            SWITCHBOARD_RUNTIME__UV_CACHE_DIR=str(workflow_cache / "uv"),
            SWITCHBOARD_RUNTIME__POLL_INTERVAL="0.2",
            SWITCHBOARD_RUNTIME__SANDBOX="process",
            SWITCHBOARD_EMAIL__SMTP_PORT=str(self.smtp_port),
            SWITCHBOARD_EMAIL__DOMAINS='["console.test"]',
            SWITCHBOARD_EMAIL__WORKFLOW="hello",
        )
        port = int(env["SWITCHBOARD_SERVER__PORT"])
        self.process = ServerProcess("console-server", env, port, directory)
        self.url = self.process.url
        deadline = time.monotonic() + READY_SECONDS
        while not self._ready():
            assert time.monotonic() < deadline, f"never ready\n{self.process.tails()}"
            time.sleep(0.1)
        found = LINK.search(self.process.stdout)
        assert found, f"the first start printed no console link\n{self.process.tails()}"
        self.login_link = found.group(1)
        self.admin_key = (directory / "data" / "admin.key").read_text().strip()
        self._env = env
        self.cli("workflows", "add", str(ROOT / "tests/workflows/chatty.py"), "--id", "chatty")

    def cli(self, *args: str) -> str:
        """``switchboard <args>`` on this server's data dir; its stdout."""
        done = subprocess.run(
            [*switchboard_command(), *args],
            env=self._env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=CLI_SECONDS,
        )
        return done.stdout

    def start(self, service: str, inputs: dict[str, object]) -> str:
        """Start a run through the runtime API, as any client would; its id."""
        answer = httpx.post(
            f"{self.url}/run_async/{service}",
            json=inputs,
            headers={"Authorization": f"Bearer {self.admin_key}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        run_id: str = answer.json()["request_id"]
        return run_id

    def _ready(self) -> bool:
        assert self.process.popen.poll() is None, self.process.tails()
        try:
            return httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False


@pytest.fixture(scope="module")
def console_server(
    tmp_path_factory: pytest.TempPathFactory, workflow_cache: Path
) -> Iterator[ConsoleServer]:
    server = ConsoleServer(tmp_path_factory.mktemp("console"), workflow_cache)
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser: Browser, console_server: ConsoleServer) -> Iterator[Page]:
    """One tab for the module's tests, in order: the first signs in, the last signs out."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    yield tab
    context.close()


Screenshot = Callable[[Page, str], Path]


@pytest.fixture(scope="module")
def screenshot() -> Screenshot:
    """Save the page as ``.artifacts/console/<name>.png``, at 1280 px and at phone width."""

    def take(page: Page, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        size = page.viewport_size
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=str(SHOTS / f"{name}-phone.png"), full_page=True)
        if size is not None:
            page.set_viewport_size(size)
        return path

    return take
