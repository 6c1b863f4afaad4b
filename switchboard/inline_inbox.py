"""A stand-in :class:`core.inbox.Inbox` until dispatch's durable inbox lands (issue 12).

It processes each event as it is accepted, before the edge answers: the channel's processor runs
and its run requests are submitted through the gateway (their idempotency keys make a retried
event a duplicate). One conversation's events are processed one at a time, in arrival order
(a lock per ordering key, striped). This keeps the old guarantees except one: a message's media
is downloaded before its ack. The composition root swaps this for ``services.inbox`` (dispatch)
with one line; then this module goes.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping

from core.clock import Clock
from core.inbox import AcceptedEvent, ArrivingEvent, EventProcessor, Ignored, StoredEvent
from core.ports import RunGateway

_STRIPES = 64


class InlineInbox:
    def __init__(self, clock: Clock) -> None:
        self._gateway: RunGateway | None = None
        self._clock = clock
        self._processors: Mapping[str, EventProcessor] = {}
        self._locks = [asyncio.Lock() for _ in range(_STRIPES)]
        self._ids = itertools.count(1)

    def serve(self, processors: Mapping[str, EventProcessor], gateway: RunGateway) -> None:
        self._processors, self._gateway = processors, gateway

    async def accept(self, event: ArrivingEvent) -> AcceptedEvent:
        stored = StoredEvent(
            id=f"inline_{next(self._ids)}",
            trigger=event.trigger,
            ordering_key=event.ordering_key,
            body=event.body,
            headers=event.headers,
            received_at=self._clock.now(),
            dedupe_key=event.dedupe_key,
        )
        gateway = self._gateway
        if gateway is None:
            raise RuntimeError("InlineInbox.serve() was not called")
        async with self._locks[hash(event.ordering_key) % _STRIPES]:
            result = await self._processors[event.trigger].process(stored)
            requests = [] if isinstance(result, Ignored) else list(result)
            created = [(await gateway.submit(request)).created for request in requests]
        duplicate = bool(created) and not any(created)
        return AcceptedEvent(stored.id, duplicate=duplicate, held=False)
