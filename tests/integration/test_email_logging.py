"""At DEBUG the server's log shows what happened, not what people wrote."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from switchboard.logging import configure_logging
from tests.conftest import LiveFactory
from tests.fakes.smtp_sink import SmtpSink
from tests.integration.email_helpers import mail, run_of, smtp_send, start_email

QUIETED = ("aiosqlite", "sqlalchemy", "mail.log")


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def debug_log() -> Iterator[Recorder]:
    """The process's logging as ``switchboard serve`` sets it up at DEBUG, recorded."""
    root = logging.getLogger()
    saved = root.level, root.handlers[:], {n: logging.getLogger(n).level for n in QUIETED}
    configure_logging("DEBUG", "text")
    recorder = Recorder()
    root.addHandler(recorder)
    try:
        yield recorder
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)


async def test_at_debug_no_mail_body_reaches_the_log(
    live_factory: LiveFactory, sink: SmtpSink, debug_log: Recorder
) -> None:
    live = await start_email(live_factory, sink)
    question = mail("Private", "my account number is 80-0714-2231")
    await smtp_send(live, question)
    await run_of(live, question)
    assert any(r.levelno == logging.DEBUG for r in debug_log.records)  # DEBUG was on
    lines = [r.getMessage() for r in debug_log.records]
    assert not [line for line in lines if "80-0714-2231" in line]
