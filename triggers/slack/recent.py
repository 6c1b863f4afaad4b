"""Messages this process accepted lately, so Slack's twins and retries of one message skip
the work before the commit (``users.info``, copying files) instead of redoing it only to find
the run already there. The unique idempotency key in the database stays the real guard: this
is a per-process shortcut, bounded and expiring (PROTOCOLS §1.3: retries come within ~5 min).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

TTL_SECONDS = 3600.0
CAPACITY = 20_000
TWIN_WAIT = 2.5
"""Seconds a twin waits for the delivery of its message in flight before doing the work itself
(the first may be stuck; the database key still keeps it to one run)."""


class RecentMessages:
    """Keys (message keys and event ids) of messages that became runs in this process."""

    def __init__(self, *, ttl: float = TTL_SECONDS, capacity: int = CAPACITY) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._accepted: OrderedDict[str, float] = OrderedDict()
        self._in_flight: dict[str, asyncio.Event] = {}

    def accepted(self, *keys: str | None) -> bool:
        """Whether any of ``keys`` was remembered in the last ``ttl`` seconds."""
        now = time.monotonic()
        for key in keys:
            if key is None:
                continue
            expires = self._accepted.get(key)
            if expires is None:
                continue
            if expires > now:
                return True
            del self._accepted[key]
        return False

    def remember(self, *keys: str | None) -> None:
        expires = time.monotonic() + self._ttl
        for key in keys:
            if key is not None:
                self._accepted[key] = expires
                self._accepted.move_to_end(key)
        while len(self._accepted) > self._capacity:
            self._accepted.popitem(last=False)

    @contextlib.asynccontextmanager
    async def one_at_a_time(self, key: str) -> AsyncIterator[None]:
        """One delivery of a message at a time: the ``app_mention`` and ``message`` twins
        arrive together, and the second should find the first's run, not race it."""
        busy = self._in_flight.get(key)
        if busy is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TWIN_WAIT):
                    await busy.wait()
        done = asyncio.Event()
        self._in_flight[key] = done
        try:
            yield
        finally:
            if self._in_flight.get(key) is done:
                del self._in_flight[key]
            done.set()
