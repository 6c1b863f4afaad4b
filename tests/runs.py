"""What the runner tests share: a log sink to wait on, invocations, workflows of the built
environment (the fixtures that build it are in ``tests/integration/conftest.py``).

One environment serves every test workflow (they share one PEP 723 header). Set
``SWITCHBOARD_TEST_CACHE`` to a directory to keep it (and uv's cache) between sessions.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.models import Invocation
from dispatch.environments import EnvironmentBuilder, python_of
from dispatch.registry import Workflow

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "tests" / "workflows"
HELLO = REPO / "examples" / "hello.py"

# What uv needs from the test machine's environment to reach the package index.
PASSED_ENV = (
    "PATH", "HOME", "LANG", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_NATIVE_TLS",
)  # fmt: skip
SECRET = "cwk-test-secret-never-in-argv"


@dataclass
class Logs:
    """An ``on_log`` sink that lets a test wait for a line."""

    lines: list[tuple[str, str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, stream: str, line: str) -> None:
        self.lines.append((stream, line))
        self.changed.set()

    def text(self, stream: str | None = None) -> str:
        return "\n".join(line for s, line in self.lines if stream is None or s == stream)

    async def wait_for(self, pattern: str) -> re.Match[str]:
        async with asyncio.timeout(30):
            while (match := re.search(pattern, self.text())) is None:
                self.changed.clear()
                await self.changed.wait()
        return match


@dataclass(frozen=True)
class BuiltEnvironment:
    builder: EnvironmentBuilder
    lock: str
    env: Path


def workflow(built: BuiltEnvironment, source: Path) -> Workflow:
    return Workflow(source.stem, 1, source, python_of(built.env))


def invocation(
    body: object, *, run_id: str = "req_0123456789abcdef01234567", timeout: float = 60
) -> Invocation:
    return Invocation(
        run_id=run_id,
        owner_id="owner-1",
        service_id="test",
        workflow_version=1,
        path="",
        method="POST",
        body=json.dumps(body).encode(),
        headers={
            "X-Request-Id": run_id,
            "X-Correlation-Id": "corr-1",
            "Codewords-Caller-Id": "caller-1",
        },
        env={
            "PORT": "8000",
            "LOGLEVEL": "INFO",
            "CODEWORDS_API_KEY": SECRET,
            "CODEWORDS_RUNTIME_URI": "http://127.0.0.1:9/",
            "RUNTIME_URI": "http://127.0.0.1:9/",
            "CODEWORDS_SERVICE_ROOT": str(WORKFLOWS),
        },
        timeout=timeout,
    )
