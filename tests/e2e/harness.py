"""End-to-end harness: ``switchboard serve`` and CLI commands as real processes on real sockets.

A :class:`Service` is a data dir and a database; it starts servers as subprocesses (output in files
next to the data dir) and runs ``switchboard`` commands with the same settings. The fixtures in
``conftest.py`` stop every server at teardown and attach the tails of their output to failures.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import httpx

from tests.conftest import ROOT, free_port

T = TypeVar("T")

POLL_SECONDS = 0.05
READY_SECONDS = 60.0
STOP_SECONDS = 20.0
CLI_SECONDS = 90.0
TAIL_LINES = 60


def switchboard_command() -> list[str]:
    """The console script next to this interpreter, else ``python -m switchboard.cli``."""
    script = Path(sys.executable).with_name("switchboard")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "switchboard.cli"]


@overload
async def wait_until(
    predicate: Callable[[], Awaitable[T | None]], timeout: float, what: str
) -> T: ...
@overload
async def wait_until(predicate: Callable[[], T | None], timeout: float, what: str) -> T: ...
async def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; return that.

    Fails the test naming ``what`` (and the last value seen) when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        last = value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what} (last: {last!r})"
            )
        await asyncio.sleep(POLL_SECONDS)  # a poll interval, not synchronisation


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    if not path.exists():
        return "(no output file)"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:]) or "(empty)"


@dataclass(frozen=True)
class CliResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def last_line(self) -> str:
        lines = self.stdout.strip().splitlines()
        assert lines, f"`switchboard {' '.join(self.args)}` printed nothing on stdout"
        return lines[-1].strip()

    def describe(self) -> str:
        return (
            f"`switchboard {' '.join(self.args)}` exited {self.returncode}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr[-4000:]}"
        )


class ServerProcess:
    """One ``switchboard serve`` process, with its output in files."""

    def __init__(
        self,
        name: str,
        env: Mapping[str, str],
        port: int,
        log_dir: Path,
        args: Sequence[str] = (),
        *,
        host: str = "127.0.0.1",
        wrapper: Sequence[str] = (),
    ) -> None:
        """``args`` go after ``serve`` (bench/ passes ``--role web``); ``wrapper`` goes before
        the command (bench/chaos.py: ``nsenter --net=…`` into the node's namespace, where the
        server listens on ``host``)."""
        self.name = name
        self.port = port
        self.url = f"http://{host}:{port}"
        self.stdout_path = log_dir / f"{name}.stdout"
        self.stderr_path = log_dir / f"{name}.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.popen = subprocess.Popen(
                [*wrapper, *switchboard_command(), "serve", *args],
                env=dict(env),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def tails(self) -> str:
        return (
            f"== {self.name} (pid {self.pid}, exit {self.popen.returncode}) stdout:\n"
            f"{tail(self.stdout_path)}\n== {self.name} stderr:\n{tail(self.stderr_path)}"
        )

    def signal(self, signum: signal.Signals) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    async def wait_exit(self, timeout: float) -> int:
        """The exit code, waiting at most ``timeout`` seconds for the process to end."""

        def exited() -> tuple[int] | None:
            code = self.popen.poll()
            return None if code is None else (code,)

        return (await wait_until(exited, timeout, f"{self.name} (pid {self.pid}) to exit"))[0]

    async def health(self) -> httpx.Response | None:
        """GET /healthz; None while nothing listens yet. Fails at once if the process died."""
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}\n{self.tails()}")
        try:
            async with httpx.AsyncClient(timeout=5) as http:
                return await http.get(f"{self.url}/healthz")
        except httpx.TransportError:
            return None

    async def wait_ready(self, timeout: float = READY_SECONDS) -> dict[str, Any]:
        async def ready() -> dict[str, Any] | None:
            response = await self.health()
            if response is None or response.status_code != 200:
                return None
            body: dict[str, Any] = response.json()
            return body

        return await wait_until(ready, timeout, f"{self.name} GET /healthz to answer 200")

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL: used at teardown, whatever state the process is in."""
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=STOP_SECONDS)


class Service:
    """A data dir and database, and the server processes and CLI commands that use them."""

    def __init__(
        self, tmp_path: Path, settings: Mapping[str, str], servers: list[ServerProcess]
    ) -> None:
        self.tmp = tmp_path
        self.data_dir = tmp_path / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["SWITCHBOARD_SERVER__DATA_DIR"] = str(self.data_dir)
        env.update(settings)
        self.env = env
        self._servers = servers
        self._count = 0

    @property
    def server(self) -> ServerProcess:
        assert self._servers, "no server was started"
        return self._servers[-1]

    def start(self, *args: str, **settings: str) -> ServerProcess:
        """Start ``switchboard serve <args>`` on a free port; ``settings`` are extra
        SWITCHBOARD_* vars."""
        self._count += 1
        port = free_port()
        env = {**self.env, "SWITCHBOARD_SERVER__PORT": str(port), **settings}
        process = ServerProcess(f"server-{self._count}", env, port, self.tmp, args)
        self._servers.append(process)
        return process

    async def start_ready(self, *args: str, **settings: str) -> ServerProcess:
        process = self.start(*args, **settings)
        await process.wait_ready()
        return process

    async def cli(
        self,
        *args: str,
        check: bool = True,
        timeout: float = CLI_SECONDS,
        stdin: str | None = None,
    ) -> CliResult:
        """Run ``switchboard <args>`` with this service's settings and ``stdin`` (default: none);
        ``check`` wants exit code 0."""
        process = await asyncio.create_subprocess_exec(
            *switchboard_command(),
            *args,
            env=self.env,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(timeout):
                out, err = await process.communicate(None if stdin is None else stdin.encode())
        except TimeoutError:
            process.kill()
            await process.wait()
            command = " ".join(args)
            raise AssertionError(f"`switchboard {command}` ran longer than {timeout:g} s") from None
        assert process.returncode is not None
        result = CliResult(args, process.returncode, out.decode(), err.decode())
        if check:
            assert result.returncode == 0, result.describe()
        return result


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def line_count(path: Path) -> int:
    """Lines in a marker file a workflow appends to (0 while it does not exist)."""
    if not path.exists():
        return 0
    return len(path.read_text(encoding="utf-8").splitlines())


async def await_result(url: str, key: str, run_id: str, timeout: float) -> dict[str, Any]:
    """Long-poll ``GET /result/<id>`` (answered 408 while the run is unfinished) until it ends."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=timeout + 10) as http:
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"request {run_id} did not finish within {timeout:g} s"
            response = await http.get(
                f"/result/{run_id}",
                params={"timeout": f"{min(remaining, 30):.1f}"},
                headers=bearer(key),
            )
            if response.status_code != 408:
                assert response.status_code == 200, response.text
                record: dict[str, Any] = response.json()
                return record
