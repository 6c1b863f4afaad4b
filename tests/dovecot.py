"""A throwaway Dovecot IMAP server for tests and benchmarks (Debian ``dovecot-imapd``).

Its own config file in a temp dir (``base_dir``, ``state_dir``, log, passwd-file, Maildirs), on
127.0.0.1: a plain port (STARTTLS offered, plaintext login allowed) and an IMAPS port, with a
self-signed certificate (``cert``); no system Dovecot is involved. Users are added while
it runs (the passwd-file is re-read when it changes), one per test, so one server serves a whole
session. As root Dovecot drops to ``dovenull``/``dovecot`` and the mail processes to
``nobody``, so the temp dir is world-traversable and each Maildir belongs to that uid.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioimaplib

DOVECOT = Path("/usr/sbin/dovecot")
DOVEADM = Path("/usr/bin/doveadm")
NOBODY = 65534


class DovecotUnavailableError(RuntimeError):
    """Dovecot is not installed (``apt-get install dovecot-imapd``) or did not come up."""


@dataclass(frozen=True, slots=True)
class ImapUser:
    name: str
    password: str
    port: int

    def mailbox(self, **overrides: Any) -> dict[str, Any]:
        """An ``[[email.mailboxes]]`` entry reading this user's INBOX."""
        entry: dict[str, Any] = {
            "name": self.name,
            "host": "127.0.0.1",
            "port": self.port,
            "tls": "none",
            "username": self.name,
            "password": self.password,
            "address": f"{self.name}@example.test",
        }
        entry.update(overrides)
        return entry


class Dovecot:
    def __init__(self) -> None:
        if not DOVECOT.exists():
            raise DovecotUnavailableError(
                "dovecot is not installed (apt-get install dovecot-imapd)"
            )
        self.root = Path(tempfile.mkdtemp(prefix="sb-dovecot-"))
        self.root.chmod(0o755)
        self.port = _free_port()
        self.tls_port = _free_port()
        """Implicit TLS (IMAPS); ``port`` offers STARTTLS too. ``cert`` is the CA to trust."""
        self.cert = self.root / "cert.pem"
        self._uid = NOBODY if os.geteuid() == 0 else os.geteuid()
        self._gid = NOBODY if os.geteuid() == 0 else os.getegid()
        self._process: subprocess.Popen[bytes] | None = None
        (self.root / "mail").mkdir(mode=0o755)
        self._users = self.root / "users"
        self._users.write_text("")
        self._users.chmod(0o644)
        _self_signed(self.cert, self.root / "key.pem")
        self.config = self.root / "dovecot.conf"
        self.config.write_text(self._config())

    def _config(self) -> str:
        root = self.root
        internal, login = ("dovecot", "dovenull") if os.geteuid() == 0 else (_me(), _me())
        user = f"default_internal_user = {internal}\ndefault_login_user = {login}\n"
        return f"""\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = sb-{root.name}
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
first_valid_uid = 1
mail_max_userip_connections = 100
{user}mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self._users}
}}
userdb {{
  driver = passwd-file
  args = {self._users}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imap_no_idle {{
    address = 127.0.0.2
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
  }}
}}
# A third address without IDLE (RFC 2177 is optional): the readers' polling path.
local 127.0.0.2 {{
  protocol imap {{
    imap_capability = IMAP4rev1 LITERAL+ SASL-IR UIDPLUS MOVE
  }}
}}
service anvil {{
  chroot =
}}
"""

    def start(self) -> None:
        self._process = subprocess.Popen(
            [str(DOVECOT), "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # stop() ends its imap processes too, as a reboot would
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise DovecotUnavailableError(f"dovecot exited: {self.log()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    if conn.recv(64).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        raise DovecotUnavailableError("dovecot did not answer within 15 s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        # The master alone leaves logged-in imap processes serving: end the whole group.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        # Its children (imap, auth, login) leave with the master; wait until the pid file goes.
        pid_file = self.root / "run" / "master.pid"
        deadline = time.monotonic() + 10
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def add_user(self, password: str = "imap-secret") -> ImapUser:  # noqa: S107 - a test login
        """A new user with an empty Maildir (unique name: tests may share the server)."""
        name = f"u{uuid.uuid4().hex[:10]}"
        home = self.root / "mail" / name
        home.mkdir(mode=0o700)
        os.chown(home, self._uid, self._gid)
        with self._users.open("a") as users:
            users.write(f"{name}:{{PLAIN}}{password}:{self._uid}:{self._gid}::{home}\n")
        self._wait_until_known(name, password)
        return ImapUser(name=name, password=password, port=self.port)

    def _wait_until_known(self, name: str, password: str) -> None:
        """Dovecot's auth process looks at the passwd-file at most once per second (its
        ``passwd_file_sync`` skips a check in the second of the last one), so a login in the
        second a user was added can be refused as unknown. Wait until a login would pass."""
        deadline = time.monotonic() + 10
        while True:
            check = subprocess.run(
                [str(DOVEADM), "-c", str(self.config), "auth", "test", name, password],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if check.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Dovecot did not learn user {name}: {check.stdout}")
            time.sleep(0.05)  # polling a condition, bounded by the deadline above

    def doveadm(self, *args: str) -> str:
        result = subprocess.run(
            [str(DOVEADM), "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return result.stdout

    def connections(self, user: ImapUser) -> int:
        """IMAP connections the server has open for ``user`` (``doveadm who``)."""
        count = 0
        for line in self.doveadm("who", "-1").splitlines():
            words = line.split()
            if words and words[0] == user.name:
                count += 1
        return count

    def set_uid_validity(self, user: ImapUser, value: int, folder: str = "INBOX") -> None:
        self.doveadm("mailbox", "update", "-u", user.name, "--uid-validity", str(value), folder)

    @asynccontextmanager
    async def client(self, user: ImapUser) -> AsyncIterator[ImapAppender]:
        imap = aioimaplib.IMAP4(host="127.0.0.1", port=self.port, timeout=30)
        await imap.wait_hello_from_server()
        response = await imap.login(user.name, user.password)
        if response.result != "OK":
            raise DovecotUnavailableError(f"login as {user.name} failed: {response}")
        try:
            yield ImapAppender(imap)
        finally:
            await imap.logout()


class ImapAppender:
    """A test's own IMAP connection: put mail in with ``APPEND``, look at flags."""

    def __init__(self, imap: Any) -> None:
        self.imap = imap

    async def append(self, raw: bytes, folder: str = "INBOX", flags: str | None = None) -> None:
        response = await self.imap.append(raw, mailbox=folder, flags=flags)
        if response.result != "OK":
            raise AssertionError(f"APPEND failed: {response}")

    async def flags(self, folder: str = "INBOX") -> list[str]:
        """The FETCH (FLAGS) line of every message in ``folder``, in sequence order."""
        response = await self.imap.select(folder)
        if response.result != "OK" or await self.count(folder) == 0:
            return []
        fetched = await self.imap.fetch("1:*", "(FLAGS)")
        return [bytes(line).decode() for line in fetched.lines if b"FETCH" in bytes(line)]

    async def unsee_all(self, folder: str = "INBOX") -> None:
        """Clear ``\\Seen`` on every message (as a rebuilt mailbox would)."""
        await self.imap.select(folder)
        response = await self.imap.store("1:*", "-FLAGS", "(\\Seen)")
        if response.result != "OK":
            raise AssertionError(f"STORE failed: {response}")

    async def count(self, folder: str = "INBOX") -> int:
        response = await self.imap.status(folder, "(MESSAGES)")
        for line in response.lines:
            text = bytes(line).decode()
            if "MESSAGES" in text:
                return int(text.rsplit("MESSAGES", 1)[1].strip(" )"))
        return 0


def _self_signed(cert: Path, key: Path) -> None:
    """A certificate for 127.0.0.1 (``openssl``, which scripts/setup dev installs)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise DovecotUnavailableError("openssl is needed for the test server's certificate")
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
            "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    cert.chmod(0o644)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _me() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name
