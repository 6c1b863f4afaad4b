"""MemoryInbox as an InboxAdmin: the operator's answers the REST and CLI surfaces are built on."""

from __future__ import annotations

import pytest

from core.errors import BadRequest, Conflict, NotFound
from core.inbox import (
    ArrivingEvent,
    EventInfo,
    EventStatus,
    Ignored,
    InboxAdmin,
    ProcessingResult,
    StoredEvent,
)
from core.models import RunRequest
from dispatch.inbox_memory import MemoryInbox


class EchoProcessor:
    """One run per event; an event whose body is ``bot`` is ignored."""

    async def process(self, event: StoredEvent) -> ProcessingResult:
        if event.body == b"bot":
            return Ignored("a bot's own message")
        return [RunRequest(owner_id="default", service_id="echo", body=event.body.decode())]


def arriving(body: bytes, *, trigger: str = "slack", key: str | None = None) -> ArrivingEvent:
    return ArrivingEvent(trigger=trigger, ordering_key="C1", body=body, dedupe_key=key)


async def listed(
    inbox: MemoryInbox, *, trigger: str | None = None, limit: int = 10
) -> list[EventInfo]:
    page, _ = await inbox.events(
        trigger=trigger, status=None, limit=limit, cursor=None, include_body=False
    )
    return page


def memory_inbox() -> MemoryInbox:
    return MemoryInbox(
        triggers_configured={"slack", "whatsapp"}, processors={"slack": EchoProcessor()}
    )


async def test_suspend_holds_new_events_and_resume_lets_them_be_processed_in_order() -> None:
    inbox = memory_inbox()
    admin: InboxAdmin = inbox
    suspended = await admin.suspend("slack")
    assert (suspended.state, suspended.backlog) == ("suspended", 0)
    first, second = await inbox.accept(arriving(b"1")), await inbox.accept(arriving(b"2"))
    assert first.held and second.held
    await inbox.process_pending({"slack": EchoProcessor()})
    assert inbox.run_requests() == [], "a suspended trigger's events wait"
    health = await admin.resume("slack")
    assert (health.state, health.counts["pending"], health.backlog) == ("active", 2, 2)
    await inbox.process_pending({"slack": EchoProcessor()})
    assert [request.body for request in inbox.run_requests()] == ["1", "2"]
    (slack, whatsapp) = await admin.triggers()
    assert (slack.name, slack.counts["processed"], slack.backlog) == ("slack", 2, 0)
    assert (whatsapp.name, whatsapp.last_received_at) == ("whatsapp", None)


async def test_discard_marks_only_held_events_and_counts_them() -> None:
    inbox = memory_inbox()
    await inbox.accept(arriving(b"before"))
    await inbox.suspend("slack")
    for body in (b"a", b"b"):
        await inbox.accept(arriving(body))
    assert await inbox.discard("slack") == 2
    assert await inbox.discard("slack") == 0
    statuses = [info.status for info in await listed(inbox, trigger="slack")]
    assert statuses == [EventStatus.DISCARDED, EventStatus.DISCARDED, EventStatus.PENDING]


async def test_events_page_newest_first_with_a_cursor_and_filters() -> None:
    inbox = memory_inbox()
    for number in range(5):
        await inbox.accept(arriving(str(number).encode()))
    await inbox.accept(arriving(b"w", trigger="whatsapp"))
    page, cursor = await inbox.events(
        trigger="slack", status=None, limit=2, cursor=None, include_body=True
    )
    assert [info.body for info in page] == [b"4", b"3"] and cursor is not None
    page, cursor = await inbox.events(
        trigger="slack", status=None, limit=2, cursor=cursor, include_body=False
    )
    assert [info.body for info in page] == [None, None] and cursor is not None
    page, cursor = await inbox.events(
        trigger="slack", status=None, limit=2, cursor=cursor, include_body=False
    )
    assert len(page) == 1 and cursor is None
    held, _ = await inbox.events(
        trigger=None, status=EventStatus.HELD, limit=10, cursor=None, include_body=False
    )
    assert held == []
    with pytest.raises(BadRequest, match="cursor"):
        await inbox.events(trigger=None, status=None, limit=2, cursor="x", include_body=False)
    with pytest.raises(NotFound):
        await listed(inbox, trigger="email:smtp")


async def test_replay_makes_a_new_event_marked_as_a_replay_with_its_own_runs() -> None:
    inbox = memory_inbox()
    accepted = await inbox.accept(arriving(b"hi", key="slack:Ev1"))
    await inbox.process_pending({"slack": EchoProcessor()})
    original = await inbox.event(accepted.id, include_body=False)
    run_ids = await inbox.replay(accepted.id)
    assert len(run_ids) == 1 and run_ids != list(original.run_ids)
    newest = (await listed(inbox, limit=1))[0]
    assert (newest.replay_of, list(newest.run_ids)) == (accepted.id, run_ids)
    ignored = await inbox.accept(arriving(b"bot"))
    assert await inbox.replay(ignored.id) == []
    with pytest.raises(NotFound):
        await inbox.replay("evt_missing")
    await inbox.accept(arriving(b"w", trigger="whatsapp"))
    with pytest.raises(Conflict):
        await inbox.replay((await listed(inbox, trigger="whatsapp", limit=1))[0].id)


async def test_unknown_triggers_are_not_found() -> None:
    inbox = memory_inbox()
    for action in (inbox.suspend, inbox.resume, inbox.discard):
        with pytest.raises(NotFound, match="trigger 'telegram' not found"):
            await action("telegram")
