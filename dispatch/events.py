"""In-process wake-ups: who is waiting for which run to change.

Waiters on this node are woken at once; a run changed by another node is noticed by the waiter's
own periodic re-check (``poll_interval``), so this is an optimisation, never the only signal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from core.models import RunRecord


class RunEvents:
    """Per-run change notifications (state changes and new log lines)."""

    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Future[RunRecord | None]]] = defaultdict(set)
        self.work_available = asyncio.Event()

    def notify(self, run_id: str, record: RunRecord | None = None) -> None:
        """``run_id`` changed; ``record``: as it now stands, when the notifier knows (its end)."""
        for future in self._waiters.pop(run_id, ()):
            if not future.done():
                future.set_result(record)

    def watched(self, run_id: str) -> bool:
        """Whether anything on this node waits for ``run_id`` to change."""
        return bool(self._waiters.get(run_id))

    def subscribe(self, run_id: str) -> asyncio.Future[RunRecord | None]:
        """A future resolved by the next change of ``run_id``.

        Subscribe *before* reading the state you wait to see change: a change that lands between
        the read and the subscription would otherwise be missed until the next poll.
        """
        future: asyncio.Future[RunRecord | None] = asyncio.get_running_loop().create_future()
        self._waiters[run_id].add(future)
        return future

    def unsubscribe(self, run_id: str, change: asyncio.Future[RunRecord | None]) -> None:
        change.cancel()
        waiters = self._waiters.get(run_id)
        if waiters is not None:
            waiters.discard(change)
            if not waiters:
                del self._waiters[run_id]

    async def wait(
        self, run_id: str, change: asyncio.Future[RunRecord | None], timeout: float
    ) -> RunRecord | None:
        """Return when ``change`` (from :meth:`subscribe`) resolves or after ``timeout`` seconds;
        the record the notifier passed, if any."""
        # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that
        # arrives as the awaited future completes, and the cancelled task then waits on forever.
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    return await asyncio.shield(change)
            return None
        finally:
            self.unsubscribe(run_id, change)
