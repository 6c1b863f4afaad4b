"""The email channel's tables: the Message-IDs it received and sent (threading, reply limits),
and the state of each IMAP mailbox (``email_mailboxes``).

Also the recipients a relay took while it deferred others (``rcp``) and the Mailgun tokens
seen (``tok``): rows whose key is no Message-ID, so threading never matches them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, String, Table

from core.tables import BigId, UTCDateTime, metadata

email_messages = Table(
    "email_messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # The Message-ID (with its angle brackets) of a mail we received or sent: a reply whose
    # In-Reply-To/References names one of these continues that conversation.
    Column("message_id", String(300), nullable=False, unique=True),
    Column("conversation_id", String(300), nullable=False),
    Column("run_id", String(40)),
    # "in" | "out" | "rcp" (a recipient our mail conversation_id was handed over for, kept
    # while the relay defers others; message_id is then "rcpt:<address>:<Message-ID>")
    Column("direction", String(3), nullable=False),
    # The other party: the sender of a mail we received, the recipient of one we sent.
    Column("peer", String(300), nullable=False),
    # Inbound only: whether this mail was answered (auto-replies per sender are rate-limited).
    Column("replied", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_email_messages_peer_created_at", "peer", "created_at"),
)

# One row per [[email.mailboxes]] name: where reading it stands (IMAP, PROTOCOLS §3b) and its
# health as every node reports it (the mailbox is read by one node at a time).
email_mailboxes = Table(
    "email_mailboxes",
    metadata,
    Column("name", String(64), primary_key=True),
    # The mailbox's UIDVALIDITY when last_uid was taken: a different one makes every UID stale.
    Column("uid_validity", BigInteger),
    # The highest UID already written to the inbox (catch-up starts after it).
    Column("last_uid", BigInteger, nullable=False, default=0),
    # The node holding the connection (None: none), since when, and its last sign of life.
    Column("holder", String(200)),
    Column("connected_at", UTCDateTime()),
    Column("seen_at", UTCDateTime()),
    Column("last_message_at", UTCDateTime()),
    Column("last_error", String(1000)),
    Column("last_error_at", UTCDateTime()),
    # The first error since the last good connection (None while connected): failing after
    # the mailbox's failing_after grace.
    Column("failing_since", UTCDateTime()),
)
