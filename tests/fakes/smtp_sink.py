"""A relay for tests: an aiosmtpd server on 127.0.0.1 that keeps every mail it accepts.

It runs on the test's own event loop (like Switchboard's intake). ``stop()`` and ``start()``
again on the same port simulate a relay that goes down and comes back; ``answer`` makes it refuse
the next mails with a given SMTP reply (``"451 4.3.0 busy"``, ``"550 5.1.1 no such user"``), and
``rcpt_answers`` refuses single recipients (``{"dave@x.test": "450 4.2.1 mailbox busy"}``) while
taking the mail for the others.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from aiosmtpd.smtp import SMTP, Envelope, Session


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class SmtpSink:
    port: int = field(default_factory=_free_port)
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    answer: str | None = None
    """When set, every DATA is answered with this instead of being kept."""
    rcpt_answers: dict[str, str] = field(default_factory=dict)
    """RCPT TO answers for single addresses, instead of accepting them."""
    attempts: int = 0
    _server: asyncio.Server | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?starttls=off"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="sink.test", enable_SMTPUTF8=True, loop=loop),
            host="127.0.0.1",
            port=self.port,
        )

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
