"""WhatsApp's 24-hour customer service window (PROTOCOLS §2.4).

Free-form messages may only be sent within 24 hours of the user's last message to that sender.
The last message is the newest run its chat made: the run row is written in the same transaction
that marks the message's inbox event processed, so the window never depends on a second write
that could be lost, and costs the ack path nothing. A Twilio retry of the same message adds no
run and does not move the window. (The run is created when the message is processed, a moment
after it arrived; later only while the trigger is suspended, which errs on the open side.)
"""

from __future__ import annotations

from datetime import datetime

from core.models import Source
from core.ports import ChatActivity
from triggers.whatsapp.parse import chat_key


async def last_inbound_at(chats: ChatActivity, our_number: str, user: str) -> datetime | None:
    """When ``user`` last wrote to ``our_number``, as far as this service knows."""
    return await chats.last_run_at(chat_key(our_number, user), Source.WHATSAPP)
