"""A relay for tests: an aiosmtpd server on 127.0.0.1 that keeps every mail it accepts.

It runs on the test's own event loop (like Switchboard's intake). ``stop()`` and ``start()``
again on the same port simulate a relay that goes down and comes back; ``answer`` makes it refuse
the next mails with a given SMTP reply (``"451 4.3.0 busy"``, ``"550 5.1.1 no such user"``), and
``rcpt_answers`` refuses single recipients (``{"dave@x.test": "450 4.2.1 mailbox busy"}``) while
taking the mail for the others. With ``tls`` it offers STARTTLS (or, with ``implicit_tls``,
speaks TLS from the first byte, like port 465), and with ``login`` it requires AUTH; ``sessions``
records, per kept mail, whether it came over TLS and which login was used.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import ssl
import warnings
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class SmtpSink:
    port: int = field(default_factory=_free_port)
    host: str = "127.0.0.1"
    """Where to listen (bench/chaos.py: a bridge address; pass a ``port`` free there)."""
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    answer: str | None = None
    """When set, every DATA is answered with this instead of being kept."""
    rcpt_answers: dict[str, str] = field(default_factory=dict)
    """RCPT TO answers for single addresses, instead of accepting them."""
    attempts: int = 0
    tls: tuple[Path, Path] | None = None
    """(certificate, key) PEM files: STARTTLS, or implicit TLS with ``implicit_tls``."""
    implicit_tls: bool = False
    login: tuple[str, str] | None = None
    """(user, password) the sink requires with AUTH."""
    sessions: list[tuple[bool, str | None]] = field(default_factory=list)
    """Per kept mail: (over TLS, the AUTH login or None)."""
    _server: asyncio.Server | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}?starttls=off"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
        starttls = None if self.implicit_tls else context

        def protocol() -> SMTP:
            with warnings.catch_warnings():
                # aiosmtpd warns that AUTH without (STARTTLS) TLS is unsafe; implicit TLS is TLS.
                warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
                return SMTP(
                    self,
                    hostname="sink.test",
                    enable_SMTPUTF8=True,
                    tls_context=starttls,
                    authenticator=self._authenticate if self.login else None,
                    auth_required=self.login is not None,
                    # Implicit TLS is TLS from the start: aiosmtpd only knows about STARTTLS.
                    auth_require_tls=not self.implicit_tls,
                    loop=loop,
                )

        self._server = await loop.create_server(
            protocol,
            host=self.host,
            port=self.port,
            ssl=context if self.implicit_tls else None,
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.login is not None
        user, password = (part.encode() for part in self.login)
        if isinstance(data, LoginPassword) and hmac.compare_digest(
            data.login + b"\0" + data.password, user + b"\0" + password
        ):
            return AuthResult(success=True, auth_data=data)
        return AuthResult(success=False, handled=False)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self.rcpt_answers.get(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        async with self._changed:
            self.attempts += 1
            self._changed.notify_all()
            if self.answer is not None:
                return self.answer
            raw = envelope.original_content or b""
            message = BytesParser(policy=policy.default).parsebytes(raw)
            assert isinstance(message, EmailMessage)
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from or "", list(envelope.rcpt_tos)))
            over_tls = server.transport is not None and bool(
                server.transport.get_extra_info("ssl_object")
            )
            auth = session.auth_data
            login = auth.login.decode() if isinstance(auth, LoginPassword) else None
            self.sessions.append((over_tls, login))
            self._changed.notify_all()
        return "250 2.0.0 kept"

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[EmailMessage]:
        """The first ``count`` mails, once that many arrived."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.messages) >= count)
        return self.messages[:count]

    async def wait_for_attempts(self, count: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.attempts >= count)
