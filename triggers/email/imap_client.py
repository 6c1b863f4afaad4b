"""A thin typed layer over ``aioimaplib`` for reading one folder (PROTOCOLS §3b, RFC 3501).

It converts aioimaplib's untyped responses into what :mod:`triggers.email.imap` needs: the
folder's UIDVALIDITY, the UIDs after a given one, a message's raw bytes (``BODY.PEEK[]``: no
side effect), flag or move, and an IDLE wait that returns on the server's push, on the time
limit or when the connection drops. STARTTLS (RFC 3501 §6.2.1), which aioimaplib lacks, is
done here with ``loop.start_tls`` on the library's transport.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import aioimaplib

from triggers.email.mailbox_settings import MailboxSettings

COMMAND_TIMEOUT = 60.0
"""Seconds one command may take (a 25 MiB fetch over a slow link included)."""


class ImapError(Exception):
    """The server refused a command, or the connection is unusable: reconnect."""


class LoginRefused(ImapError):
    """Wrong username or password (or the account is locked)."""


@dataclass(frozen=True, slots=True)
class Folder:
    uid_validity: int
    exists: int


_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_EXISTS = re.compile(rb"^(\d+) EXISTS")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_SEARCH = re.compile(rb"^(?:SEARCH)?\s*([\d ]+)$")
"""A SEARCH result line; aioimaplib strips ``* SEARCH`` from the untagged response."""


class ImapSession:
    """One logged-in connection with ``folder`` selected."""

    def __init__(self, client: Any, settings: MailboxSettings, lost: asyncio.Event) -> None:
        self._client = client
        self._settings = settings
        self.lost = lost
        """Set when the server closes the connection (or the network drops it)."""

    @classmethod
    async def open(cls, settings: MailboxSettings, password: str) -> tuple[ImapSession, Folder]:
        lost = asyncio.Event()
        context = _tls_context(settings)
        client = aioimaplib.IMAP4(
            host=settings.host,
            port=settings.port,
            timeout=COMMAND_TIMEOUT,
            conn_lost_cb=lambda exc: lost.set(),
            ssl_context=context if settings.tls == "implicit" else None,
        )
        session = cls(client, settings, lost)
        try:
            await session._call(client.wait_hello_from_server())
            if settings.tls == "starttls":
                await session._start_tls(context)
            response = await session._call(client.login(settings.username, password))
            if response.result != "OK":
                raise LoginRefused(f"login refused: {_text(response)}")
            await session._call(client.protocol.capability())  # servers add more after login
            folder = await session._select()
        except BaseException:
            await session.close()
            raise
        return session, folder

    async def _start_tls(self, context: ssl.SSLContext | None) -> None:
        protocol = self._client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapError("the server offers no STARTTLS (tls = 'starttls')")
        response = await protocol.execute(
            aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        )
        if response.result != "OK":
            raise ImapError(f"STARTTLS refused: {_text(response)}")
        loop = asyncio.get_running_loop()
        protocol.transport = await loop.start_tls(
            protocol.transport,
            protocol,
            context or ssl.create_default_context(),
            server_hostname=self._settings.host,
        )
        await protocol.capability()  # RFC 3501 §6.2.1: forget what was said before TLS

    async def _select(self) -> Folder:
        response = await self._call(self._client.select(_quoted(self._settings.folder)))
        if response.result != "OK":
            raise ImapError(f"SELECT {self._settings.folder} refused: {_text(response)}")
        validity = exists = None
        for line in _lines(response):
            if match := _UIDVALIDITY.search(line):
                validity = int(match.group(1))
            if match := _EXISTS.match(line):
                exists = int(match.group(1))
        if validity is None:
            raise ImapError(f"SELECT {self._settings.folder} gave no UIDVALIDITY")
        return Folder(uid_validity=validity, exists=exists or 0)

    @property
    def can_idle(self) -> bool:
        return bool(self._client.has_capability("IDLE"))

    async def uids_after(self, uid: int, *, unseen_only: bool) -> list[int]:
        """UIDs above ``uid``, ascending (``n:*`` always matches the highest UID: filtered)."""
        criteria = [f"UID {uid + 1}:*"]
        if unseen_only:
            criteria.append("UNSEEN")
        response = await self._call(self._client.uid_search(*criteria, charset=None))
        if response.result != "OK":
            raise ImapError(f"UID SEARCH refused: {_text(response)}")
        found: set[int] = set()
        for line in _lines(response):
            if match := _SEARCH.match(line):
                found.update(int(word) for word in match.group(1).split())
        return sorted(u for u in found if u > uid)

    async def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """``RFC822.SIZE`` of each of ``uids`` still there."""
        response = await self._uid("fetch", _uid_set(uids), "(UID RFC822.SIZE)")
        if response.result != "OK":
            raise ImapError(f"UID FETCH (RFC822.SIZE) refused: {_text(response)}")
        found = {}
        for line in _lines(response):
            if (uid := _UID.search(line)) and (size := _SIZE.search(line)):
                found[int(uid.group(1))] = int(size.group(1))
        return found

    async def fetch(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The raw messages (``BODY.PEEK[]`` sets no ``\\Seen``); one gone meanwhile is absent."""
        response = await self._uid("fetch", _uid_set(uids), "(UID BODY.PEEK[])")
        if response.result != "OK":
            raise ImapError(f"UID FETCH refused: {_text(response)}")
        found: dict[int, bytes] = {}
        uid: int | None = None  # named on the line that opens the literal ...
        body: bytes | None = None  # ... or after it, on the line that closes the FETCH
        for line in response.lines:
            if isinstance(line, bytearray):
                if uid is not None:
                    found[uid], uid = bytes(line), None
                else:
                    body = bytes(line)
            elif match := _UID.search(line):
                if body is not None:
                    found[int(match.group(1))], body = body, None
                elif line.rstrip().endswith(b"}"):
                    uid = int(match.group(1))
        return found

    async def done_with(self, uids: Sequence[int]) -> None:
        """Flag ``\\Seen``, or move to ``processed_folder`` (RFC 6851 MOVE, else COPY + delete)."""
        target = self._settings.processed_folder
        uid_set = _uid_set(uids)
        if target is None:
            response = await self._uid("store", uid_set, "+FLAGS.SILENT (\\Seen)")
        elif self._client.has_capability("MOVE"):
            response = await self._uid("move", uid_set, _quoted(target))
        else:
            response = await self._uid("copy", uid_set, _quoted(target))
            if response.result == "OK":
                response = await self._uid("store", uid_set, "+FLAGS.SILENT (\\Deleted)")
            if response.result == "OK" and self._client.has_capability("UIDPLUS"):
                response = await self._uid("expunge", uid_set)
        if response.result != "OK":
            raise ImapError(f"marking UIDs {uid_set} done refused: {_text(response)}")

    async def ensure_folder(self, name: str) -> None:
        """Create ``processed_folder`` if it is missing (``NO [ALREADYEXISTS]`` is fine)."""
        await self._call(self._client.create(_quoted(name)))

    async def idle(self, seconds: float) -> None:
        """Wait in IDLE (RFC 2177) until the server pushes anything, ``seconds`` pass (re-issue
        before the server's 30-minute cut), or the connection drops; then ``DONE``."""
        if self.lost.is_set():
            raise ImapError("the connection was closed")
        idle = await self._client.idle_start(timeout=seconds)
        push = asyncio.ensure_future(self._client.wait_server_push(timeout=seconds + 5))
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({push, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            push.cancel()
            lost.cancel()
        if self.lost.is_set():
            idle.cancel()
            raise ImapError("the connection was closed during IDLE")
        self._client.idle_done()
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await idle
        except TimeoutError as exc:
            raise ImapError("IDLE did not end after DONE") from exc

    async def _uid(self, *args: str) -> Any:
        return await self._call(self._client.uid(*args))

    async def _call(self, command: Awaitable[Any]) -> Any:
        """``command``'s result, or :class:`ImapError` as soon as the connection drops
        (aioimaplib would otherwise wait for the command's timeout)."""
        if self.lost.is_set():
            raise ImapError("the connection was closed")
        task = asyncio.ensure_future(command)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        finally:
            lost.cancel()
        if not task.done():
            task.cancel()
            raise ImapError("the connection was closed")
        return task.result()

    async def noop(self) -> None:
        response = await self._call(self._client.noop())
        if response.result != "OK":
            raise ImapError(f"NOOP refused: {_text(response)}")

    async def close(self) -> None:
        """Log out politely when the connection still stands; never raises."""
        try:
            if not self.lost.is_set() and not self._client.has_pending_idle():
                async with asyncio.timeout(5):
                    await self._client.logout()
        except Exception:  # noqa: S110 - closing a connection that may be gone already
            pass
        transport = self._client.protocol.transport
        if transport is not None:
            transport.close()
        for task in list(self._client.tasks) + list(self._client.protocol.tasks):
            task.cancel()


def _tls_context(settings: MailboxSettings) -> ssl.SSLContext | None:
    if settings.tls == "none":
        return None
    context = ssl.create_default_context(
        cafile=str(settings.ca_file) if settings.ca_file is not None else None
    )
    return context


def _lines(response: Any) -> list[bytes]:
    return [bytes(line) for line in response.lines if isinstance(line, bytes | bytearray)]


def _text(response: Any) -> str:
    words = [line.decode(errors="replace") for line in response.lines if isinstance(line, bytes)]
    return " ".join(words)[:300] or str(response.result)


def _uid_set(uids: Sequence[int]) -> str:
    return ",".join(str(uid) for uid in uids)


def _quoted(name: str) -> str:
    """A folder name as an IMAP quoted string (RFC 3501 §4.3)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
