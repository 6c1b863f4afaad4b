"""Messages with media: their runs are held until the media is stored, then released.

Twilio waits at most 15 s for its answer and retries a message it got no answer for
(PROTOCOLS §2.3), and a chat's messages must run in the order they arrived. So a message with
``NumMedia > 0`` is persisted first, as a *held* run (provisioned, with its ``MessageSid``
idempotency key and its chat's serial key: a retry is a duplicate, and the chat's later messages
queue behind it), Twilio is answered at once, and the media is downloaded here, in the
background. The run is then filled in with its attachments and queued. A download that fails
does not cost the message: the run goes with ``event.media_errors`` saying what is missing.

Each download is a task this object owns; :meth:`aclose` (at shutdown) cancels and awaits them.
Nothing is lost by that, nor by a crash: the held run is in the database, and every start
re-downloads the media of the held WhatsApp runs it finds (and, every ``3 * media_timeout`` s,
of those held longer than that, which another node that died had been fetching). Two nodes may
then fetch the same message; the run is filled in once (the other fill is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from core.clock import Clock
from core.db import Database
from core.errors import Conflict
from core.models import ReplyTarget, RunRequest, RunStatus, Source
from core.ports import RunGateway
from core.tables import runs
from triggers.whatsapp.media import MediaFetcher
from triggers.whatsapp.parse import media_items

logger = logging.getLogger(__name__)

IDEMPOTENCY_PREFIX = "whatsapp:"


class HeldMessages:
    """Downloads the media of held WhatsApp runs and releases them (owns those tasks)."""

    def __init__(
        self,
        gateway: RunGateway,
        media: MediaFetcher,
        database: Database,
        clock: Clock,
        *,
        sweep_interval: float,
    ) -> None:
        self._gateway = gateway
        self._media = media
        self._db = database
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._fetching: dict[str, asyncio.Task[None]] = {}
        self._closing = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Re-download what an earlier process left held, then keep sweeping for orphans."""
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="whatsapp-held-sweep")

    async def aclose(self) -> None:
        """Stop: cancel the downloads in flight (their runs stay held for the next start)."""
        self._closing.set()
        tasks = list(self._fetching.values())
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sweeper = None

    @property
    def in_flight(self) -> int:
        return len(self._fetching)

    def release_later(self, run_id: str, request: RunRequest) -> None:
        """Fetch the media of held run ``run_id`` (submitted as ``request``), then release it."""
        if self._closing.is_set() or run_id in self._fetching:
            return
        task = asyncio.create_task(self._release(run_id, request), name=f"whatsapp-media:{run_id}")
        self._fetching[run_id] = task
        task.add_done_callback(lambda _: self._fetching.pop(run_id, None))

    async def _release(self, run_id: str, request: RunRequest) -> None:
        try:
            await self._attach_and_queue(run_id, request)
        except Exception:
            # The run stays held: the next sweep (or start) fetches its media again.
            logger.exception("run %s: releasing it with its media failed", run_id)

    async def _attach_and_queue(self, run_id: str, request: RunRequest) -> None:
        inputs: dict[str, Any] = json.loads(request.body or "{}")
        event = inputs.get("event")
        params = event if isinstance(event, dict) else {}
        downloads = await self._media.fetch_all(
            media_items({k: v for k, v in params.items() if isinstance(v, str)})
        )
        inputs["attachments"] = [file.model_dump() for file in downloads.attachments]
        if downloads.errors:
            params["media_errors"] = downloads.errors
            logger.warning(
                "run %s: WhatsApp media missing, the run goes without it: %s",
                run_id,
                "; ".join(downloads.errors),
            )
        filled = request.model_copy(
            update={
                "body": json.dumps(inputs, ensure_ascii=False),
                "held": False,
                "provisioned_run_id": run_id,
                "idempotency_key": None,
            }
        )
        try:
            await self._gateway.submit(filled)
        except Conflict:
            logger.info("run %s: its media was attached elsewhere already", run_id)
            return
        attached = len(inputs["attachments"])
        logger.info("run %s: %d media file(s) attached, run queued", run_id, attached)

    async def _sweep_loop(self) -> None:
        cutoff = self._clock.now()  # at start: everything held before now is an orphan
        while True:
            try:
                await self._release_held(before=cutoff)
            except Exception:
                logger.exception("looking for held WhatsApp runs failed; trying again later")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sweep_interval):
                    await self._closing.wait()
            if self._closing.is_set():
                return
            cutoff = self._clock.now() - timedelta(seconds=self._sweep_interval)

    async def _release_held(self, *, before: datetime) -> None:
        async with self._db.read() as conn:
            rows = (
                await conn.execute(
                    select(runs)
                    .where(
                        runs.c.status == RunStatus.PROVISIONED,
                        runs.c.source == Source.WHATSAPP.value,
                        runs.c.idempotency_key.startswith(IDEMPOTENCY_PREFIX),
                        runs.c.created_at < before,
                    )
                    .order_by(runs.c.created_at)
                    .limit(100)
                )
            ).mappings()
            held = [dict(row) for row in rows]
        for row in held:
            if row["id"] in self._fetching:
                continue
            logger.info("run %s: held with its media not attached; fetching it again", row["id"])
            self.release_later(row["id"], _request_of(row))


def _request_of(row: dict[str, Any]) -> RunRequest:
    """The run request a held row was submitted as (what filling it in needs)."""
    return RunRequest(
        owner_id=row["owner_id"],
        service_id=row["service_id"],
        path=row["path"],
        body=row["request_body"],
        source=Source.WHATSAPP,
        reply_target=None
        if row["reply_target"] is None
        else ReplyTarget.model_validate(row["reply_target"]),
        correlation_id=row["correlation_id"],
        serial_key=row["serial_key"],
        context=row["context"] or {},
    )
