"""A throwaway PostgreSQL server for tests: ``initdb`` into a temp dir, serve, delete.

Standard library only, so it works before anything else does. Usage::

    with ThrowawayPostgres() as pg:
        pg.create_database("switchboard")
        engine = create_async_engine(pg.url("switchboard"))

Binaries are looked up in ``$SWITCHBOARD_PG_BIN``, then ``/usr/lib/postgresql/15/bin`` (Debian),
then ``pg_config --bindir``. PostgreSQL refuses to run as root, so under root the server runs as
the system user ``sbtest`` (created on first use).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresUnavailableError", "ThrowawayPostgres", "find_pg_bindir"]

DEBIAN_PG_BINDIR = Path("/usr/lib/postgresql/15/bin")
SERVICE_USER = "sbtest"
SUPERUSER = "postgres"

# Durability buys nothing for a database deleted after the test run; these settings make
# initdb + start take ~1 s and commits cheap.
SPEED_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


class PostgresUnavailableError(RuntimeError):
    """The PostgreSQL binaries are missing or the server did not come up."""


def find_pg_bindir() -> Path:
    """Return the directory holding ``initdb`` and ``postgres``; raise if there is none."""
    candidates: list[Path] = []
    if configured := os.environ.get("SWITCHBOARD_PG_BIN"):
        candidates.append(Path(configured))
    candidates.append(DEBIAN_PG_BINDIR)
    if pg_config := shutil.which("pg_config"):
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            candidates.append(Path(result.stdout.strip()))
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    tried = ", ".join(str(c) for c in candidates)
    raise PostgresUnavailableError(
        f"PostgreSQL server binaries not found (tried {tried}); install postgresql-15 "
        "or set SWITCHBOARD_PG_BIN to the directory holding initdb and postgres"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _base_dir(as_root: bool) -> str | None:
    """Where to make the server's directory: the usual temp dir, unless the service account
    could not reach it (root's TMPDIR is often under /root, mode 0700)."""
    if not as_root:
        return None
    base = Path(tempfile.gettempdir()).resolve()
    for directory in (base, *base.parents):
        if not directory.stat().st_mode & stat.S_IXOTH:
            return "/tmp"  # world-searchable by definition; mkdtemp makes our dir private
    return None


def _service_account() -> pwd.struct_passwd:
    """Return the unprivileged account the server runs as under root, creating it if needed."""
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    # /usr/sbin may be missing from PATH (pyenv shells, CI runners) even when running as root.
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        # Look up again rather than trusting the exit code: a parallel test process may have
        # created the account between our lookup and useradd (which then fails with "exists").
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise PostgresUnavailableError(
            f"could not create user {SERVICE_USER!r}: {result.stderr.strip()}"
        ) from None


class ThrowawayPostgres:
    """A private PostgreSQL server on 127.0.0.1 and a free port, deleted on exit."""

    def __init__(
        self,
        *,
        bindir: Path | None = None,
        start_timeout: float = 30.0,
        host: str = "127.0.0.1",
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """``host``: the address to listen on (bench/chaos.py: a bridge in a namespace);
        ``settings`` override :data:`SPEED_SETTINGS`."""
        self.bindir = bindir if bindir is not None else find_pg_bindir()
        self.start_timeout = start_timeout
        self.host = host
        self._settings = {**SPEED_SETTINGS, **(settings or {})}
        self.port = 0
        self._root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._account: pwd.struct_passwd | None = None

    # -- addresses ---------------------------------------------------------------------------

    def url(self, dbname: str) -> str:
        """SQLAlchemy URL for ``dbname`` through asyncpg."""
        return f"postgresql+asyncpg://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    @property
    def socket_dir(self) -> Path:
        """The directory of the server's Unix socket (a client there takes no TCP port)."""
        assert self._root is not None
        return self._root

    def dsn(self, dbname: str) -> str:
        """libpq-style URL for ``dbname``, as ``asyncpg.connect`` and ``psql`` take it."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    # -- databases ---------------------------------------------------------------------------

    def create_database(self, name: str, template: str | None = None) -> None:
        """Create database ``name``, copied from ``template`` if given (it must be idle)."""
        args = [str(self.bindir / "createdb"), *self._client_args()]
        if template is not None:
            args += ["--template", template]
        self._run([*args, "--", name])

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> ThrowawayPostgres:
        as_root = os.geteuid() == 0
        self._root = Path(tempfile.mkdtemp(prefix="switchboard-pg-", dir=_base_dir(as_root)))
        try:
            if as_root:
                self._account = _service_account()
                os.chown(self._root, self._account.pw_uid, self._account.pw_gid)
            self._initdb()
            self._start()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cleanup()

    def _initdb(self) -> None:
        assert self._root is not None
        self._run(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self._root / "data"),
                "--auth=trust",
                f"--username={SUPERUSER}",
                "--encoding=UTF8",
                # C locale: independent of whatever locales the machine has generated.
                "--locale=C",
                "--no-sync",
            ],
            as_service=True,
        )
        if self.host != "127.0.0.1":
            # initdb trusts loopback only; clients on the listen address's own subnet (the
            # chaos bridge, which leads nowhere else) are trusted too.
            with (self._root / "data" / "pg_hba.conf").open("a") as hba:
                hba.write("host all all samenet trust\n")

    def crash(self) -> None:
        """Immediate shutdown (``pg_ctl -m immediate``): clients lose their connections at once
        and the next start recovers from the WAL."""
        self._stop()

    def start_again(self) -> None:
        """Start the server again after :meth:`crash`, on the same port."""
        self._start(keep_port=True)

    def _start(self, keep_port: bool = False) -> None:
        assert self._root is not None
        log_path = self._root / "postgres.log"
        # Another process can take the free port between our probe and postgres binding it;
        # a fresh port on the next attempt makes that race harmless.
        attempts = 3
        for attempt in range(1, attempts + 1):
            if not keep_port:
                self.port = _free_port()
            settings = {
                **self._settings,
                "listen_addresses": self.host,
                "port": str(self.port),
                "unix_socket_directories": str(self._root),
            }
            args = [str(self.bindir / "postgres"), "-D", str(self._root / "data")]
            for key, value in settings.items():
                args += ["-c", f"{key}={value}"]
            with log_path.open("ab") as log:
                self._process = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._root,
                    env=self._service_env(),
                    user=self._service_uid(),
                    group=self._service_gid(),
                    extra_groups=self._service_extra_groups(),
                )
            if self._wait_until_ready():
                return
            self._stop()
            log_tail = log_path.read_text(errors="replace")[-2000:]
            if "could not bind" in log_tail and attempt < attempts:
                continue
            raise PostgresUnavailableError(
                f"PostgreSQL did not accept connections within {self.start_timeout:.0f} s; "
                f"server log:\n{log_tail}"
            )

    def _wait_until_ready(self) -> bool:
        """Poll ``pg_isready`` until the server accepts connections, exits, or time runs out."""
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        isready = [str(self.bindir / "pg_isready"), *self._client_args(), "--dbname=postgres"]
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            probe = subprocess.run(isready, capture_output=True, check=False)
            if probe.returncode == 0:
                return True
            time.sleep(0.05)
        return False

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # SIGQUIT is PostgreSQL's "immediate shutdown" (pg_ctl -m immediate): the data is
        # thrown away next, so there is nothing to checkpoint.
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _cleanup(self) -> None:
        try:
            self._stop()
        finally:
            root, self._root = self._root, None
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)

    # -- processes ---------------------------------------------------------------------------

    def _client_args(self) -> list[str]:
        return [f"--host={self.host}", f"--port={self.port}", f"--username={SUPERUSER}"]

    # initdb and postgres refuse to run as root. Under root, subprocess switches to the service
    # account itself (as setpriv would), so the Popen is postgres and signals reach it directly,
    # with no runuser in between. Each helper returns None ("unchanged") when not root.

    def _service_uid(self) -> int | None:
        return None if self._account is None else self._account.pw_uid

    def _service_gid(self) -> int | None:
        return None if self._account is None else self._account.pw_gid

    def _service_extra_groups(self) -> list[int] | None:
        return None if self._account is None else []

    def _service_env(self) -> dict[str, str] | None:
        if self._account is None or self._root is None:
            return None
        return {**os.environ, "HOME": str(self._root), "USER": SERVICE_USER}

    def _run(self, args: list[str], *, as_service: bool = False) -> None:
        result = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            cwd=self._root,
            env=self._service_env() if as_service else None,
            user=self._service_uid() if as_service else None,
            group=self._service_gid() if as_service else None,
            extra_groups=self._service_extra_groups() if as_service else None,
        )
        if result.returncode != 0:
            raise PostgresUnavailableError(
                f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.strip()}"
            )
