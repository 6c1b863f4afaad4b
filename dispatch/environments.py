"""Build one virtual environment per lock, so that running a workflow never calls ``uv``.

Registration locks a workflow's dependencies (``uv pip compile``) and builds the environment for
that lock once (``uv venv`` + ``uv pip sync --offline``, after the locked wheels are fetched into
uv's cache); every later run only starts the environment's interpreter, and a run whose
environment is missing fails (:meth:`EnvironmentBuilder.built`) instead of building it.
Environments are keyed by a hash of the lock and the interpreter, so workflows with the same
dependencies share one, and a build is complete only once its ``.complete`` marker exists: a
crash mid-build leaves a directory that the next build removes. Builders in several processes (or
several nodes on a shared disk) serialise on an ``flock`` per environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from uv import find_uv_bin

from core.errors import WorkflowError
from dispatch.pep723 import PythonVersion, ScriptMetadata, format_python_version

logger = logging.getLogger(__name__)

LAUNCHER_REQUIREMENTS = ("uvicorn", "fastapi")
"""What ``dispatch/sandbox/inside/launcher.py`` imports in every environment, added when a
workflow omits them."""

COMPLETE_MARKER = ".complete"
LOCK_FILE_NAME = "switchboard-lock.txt"
_STDERR_TAIL_LINES = 20
_NAME_RE = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")
_PROBE = "import platform, sys; print(platform.python_implementation(), *sys.version_info[:3])"


@dataclass(frozen=True, slots=True)
class Interpreter:
    """The Python that environments are built from."""

    implementation: str
    version: PythonVersion

    @property
    def tag(self) -> str:
        """``cpython-3.11``: what a built environment depends on besides its lock."""
        return f"{self.implementation.lower()}-{self.version[0]}.{self.version[1]}"


def python_of(env: Path) -> Path:
    """The interpreter of a built environment."""
    return env / "bin" / "python"


def normalize_project_name(requirement: str) -> str | None:
    """The PEP 503 normalised project name a requirement names, or None if it names none."""
    match = _NAME_RE.match(requirement)
    if match is None:
        return None
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


class EnvironmentBuilder:
    """Locks workflow dependencies and builds (once) the environment of each lock."""

    def __init__(
        self,
        *,
        env_dir: Path,
        uv_cache_dir: Path,
        python: Path,
        base_env: Mapping[str, str],
        uv_bin: Path | None = None,
    ) -> None:
        self._env_dir = env_dir
        self._python = python
        self._uv_bin = uv_bin or Path(find_uv_bin())
        self._env = {**base_env, "UV_CACHE_DIR": str(uv_cache_dir)}
        self._interpreter: Interpreter | None = None

    async def interpreter(self) -> Interpreter:
        """Ask the configured interpreter what it is (once per builder)."""
        if self._interpreter is None:
            await asyncio.to_thread(self._env_dir.mkdir, parents=True, exist_ok=True)
            stdout = await self._run(
                str(self._python), "-c", _PROBE, action=f"probing the interpreter {self._python}"
            )
            self._interpreter = _parse_probe(stdout, self._python)
        return self._interpreter

    async def lock(self, metadata: ScriptMetadata) -> str:
        """Resolve ``metadata``'s dependencies (plus the launcher's) into pinned requirements."""
        interpreter = await self.interpreter()
        if not metadata.allows_python(interpreter.version):
            raise WorkflowError(
                f"the workflow requires Python {metadata.requires_python}, but the runtime's "
                f"interpreter is {format_python_version(interpreter.version)}"
            )
        requirements = list(metadata.dependencies)
        named = {normalize_project_name(r) for r in requirements}
        requirements += [r for r in LAUNCHER_REQUIREMENTS if r not in named]
        return await self._run(
            str(self._uv_bin),
            "pip",
            "compile",
            "-",
            "--python",
            str(self._python),
            "--no-header",
            "--quiet",
            stdin="".join(f"{r}\n" for r in requirements),
            action="locking the workflow's dependencies",
        )

    def lock_hash(self, lock: str) -> str:
        """sha256 of the lock and the interpreter's implementation and ``major.minor``.

        Needs the interpreter probed: :meth:`lock` and :meth:`ensure` do it; if neither ran yet, it
        is probed here, synchronously, once.
        """
        interpreter = self._interpreter or self._probe_blocking()
        digest = hashlib.sha256()
        digest.update(lock.encode("utf-8"))
        digest.update(b"\0")
        digest.update(interpreter.tag.encode("ascii"))
        return digest.hexdigest()

    async def ensure(self, lock: str) -> Path:
        """The built environment for ``lock``, building it first if no complete one exists."""
        await self.interpreter()
        key = self.lock_hash(lock)[:20]
        env = self._env_dir / key
        if await asyncio.to_thread(_is_complete, env):
            return env
        async with _exclusive_lock(self._env_dir / f"{key}.lock"):
            if await asyncio.to_thread(_is_complete, env):  # built while we waited for the lock
                return env
            await asyncio.to_thread(_remove_half_built, env)
            await self._build(env, lock)
        return env

    async def _build(self, env: Path, lock: str) -> None:
        logger.info("building environment %s", env)
        await self._run(
            str(self._uv_bin),
            "venv",
            "--quiet",
            "--python",
            str(self._python),
            str(env),
            action=f"creating the environment {env.name}",
        )
        lock_file = env / LOCK_FILE_NAME
        await asyncio.to_thread(lock_file.write_text, lock, encoding="utf-8")
        await self._fetch(env, lock_file)
        await self._run(
            str(self._uv_bin),
            "pip",
            "sync",
            "--offline",
            "--quiet",
            "--python",
            str(python_of(env)),
            "--compile-bytecode",
            str(lock_file),
            action=f"installing the environment {env.name}",
        )
        # Last: the marker is what makes the environment usable.
        await asyncio.to_thread((env / COMPLETE_MARKER).write_text, "", encoding="utf-8")
        logger.info("environment %s is ready", env)

    async def _fetch(self, env: Path, lock_file: Path) -> None:
        """Put every locked distribution in uv's cache, so that the sync that builds the
        environment runs ``--offline``: from the lock and the cache alone, never resolving or
        downloading anything itself. ``uv pip compile`` fetches metadata only, and uv has no
        download command, so the lock is installed into a scratch target (hardlinks from the
        cache) that is removed at once."""
        scratch = env.with_name(f"{env.name}.fetch")
        await asyncio.to_thread(shutil.rmtree, scratch, True)
        try:
            await self._run(
                str(self._uv_bin),
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--python",
                str(python_of(env)),
                "--target",
                str(scratch),
                "-r",
                str(lock_file),
                action=f"downloading the locked dependencies of {env.name}",
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    async def built(self, lock: str) -> Path | None:
        """The complete environment of ``lock`` on this node, or None. Never builds and never
        calls uv (the run path asks this; only registration builds, through :meth:`ensure`)."""
        await self.interpreter()
        env = self._env_dir / self.lock_hash(lock)[:20]
        return env if await asyncio.to_thread(_is_complete, env) else None

    async def _run(self, *argv: str, action: str, stdin: str | None = None) -> str:
        """Run one command to completion; its stdout, or a WorkflowError with its stderr tail."""
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env,
            cwd=self._env_dir,  # created by interpreter(), which every path runs first
        )
        try:
            stdout, stderr = await process.communicate(
                stdin.encode("utf-8") if stdin is not None else None
            )
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            tail = "\n".join(
                stderr.decode("utf-8", "replace").rstrip().splitlines()[-_STDERR_TAIL_LINES:]
            )
            raise WorkflowError(f"{action} failed (exit code {process.returncode}):\n{tail}")
        return stdout.decode("utf-8", "replace")

    def _probe_blocking(self) -> Interpreter:
        completed = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [str(self._python), "-c", _PROBE],
            capture_output=True,
            text=True,
            env=self._env,
            check=False,
        )
        if completed.returncode != 0:
            raise WorkflowError(
                f"probing the interpreter {self._python} failed: {completed.stderr.strip()}"
            )
        self._interpreter = _parse_probe(completed.stdout, self._python)
        return self._interpreter


def _is_complete(env: Path) -> bool:
    return (env / COMPLETE_MARKER).exists()


def _remove_half_built(env: Path) -> None:
    if env.exists():
        logger.warning("removing the half-built environment %s", env)
        shutil.rmtree(env)


def _parse_probe(stdout: str, python: Path) -> Interpreter:
    try:
        implementation, major, minor, micro = stdout.split()
        return Interpreter(implementation, (int(major), int(minor), int(micro)))
    except ValueError as exc:
        raise WorkflowError(f"{python} did not say what Python it is: {stdout!r}") from exc


@contextlib.asynccontextmanager
async def _exclusive_lock(path: Path) -> AsyncIterator[None]:
    """Hold an exclusive ``flock`` on ``path``; the blocking wait runs in a worker thread.

    A thread blocked in ``flock`` cannot be interrupted, so a waiter that is cancelled leaves the
    descriptor to be closed (releasing the lock it will then hold) when that thread returns.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    acquired = asyncio.get_running_loop().run_in_executor(None, fcntl.flock, fd, fcntl.LOCK_EX)
    try:
        await asyncio.shield(acquired)
    except BaseException:
        acquired.add_done_callback(lambda _: os.close(fd))
        raise
    try:
        yield
    finally:
        os.close(fd)
