"""Which deliveries the outbox keeps in order (dispatch.outbox.target_key)."""

from __future__ import annotations

from dispatch.outbox import target_key


def test_one_chat_is_one_order_whatever_the_thread() -> None:
    first = target_key("slack", {"address": "C1", "thread_id": "1.1"})
    second = target_key("slack", {"address": "C1", "thread_id": "2.2"})
    assert first == second == "slack:C1"
    assert target_key("whatsapp", {"address": "whatsapp:+1555"}) == "whatsapp:whatsapp:+1555"


def test_email_is_ordered_per_thread_not_per_mailbox() -> None:
    thread_a = target_key("email", {"address": "a@example.com", "thread_id": "<a@x>"})
    thread_b = target_key("email", {"address": "a@example.com", "thread_id": "<b@x>"})
    again_a = target_key("email", {"address": "a@example.com", "thread_id": "<a@x>"})

    assert thread_a != thread_b, "a deferred mail in one thread must not hold back another"
    assert thread_a == again_a
    assert target_key("email", {"address": "a@example.com"}) == "email:a@example.com"
