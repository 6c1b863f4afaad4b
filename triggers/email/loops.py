"""No mail loops (RFC 3834, PROTOCOLS §3.8): which mail may run a workflow, and which may be
answered.

Two outcomes besides "run and reply":

* **drop** (accept with 250, start nothing): bounces and answers to our own mail — the null
  sender ``<>``, ``MAILER-DAEMON``/``postmaster``, delivery reports (``multipart/report``),
  ``Auto-Submitted: auto-replied`` and ``X-Autoreply``/``X-Autorespond``, and mail whose ``From``
  is one of our own addresses (two bots answering each other): ``addresses``, route addresses
  and ``from_address`` — not everyone at ``domains``, who are people we answer.
* **silent** (run the workflow, send no reply): mail a workflow may still want to read but that
  must not be answered automatically — any other ``Auto-Submitted`` value than ``no``
  (``auto-generated`` alerts), ``List-*`` headers, ``Precedence: bulk|list|junk``, ``noreply``-style
  senders, ``X-Auto-Response-Suppress: All|AutoReply|OOF``, and a sender who already got
  ``auto_replies_per_hour`` replies in the last hour.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from triggers.email.headers import MailHead


class Disposition(StrEnum):
    RUN = "run"
    SILENT = "silent"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Verdict:
    disposition: Disposition
    reason: str = ""


_DAEMONS = frozenset({"mailer-daemon", "postmaster"})
_NO_REPLY = re.compile(r"^(no-?reply|do-?not-?reply|bounces?|.*-request|owner-.*)([+.-].*)?$")


def loop_verdict(
    parsed: MailHead, envelope_from: str | None, is_own: Callable[[str], bool]
) -> Verdict:
    """Whether this mail runs its workflow, runs it without a reply, or is dropped."""
    sender = (envelope_from or "").strip().strip("<>").lower()
    if envelope_from is not None and not sender:
        return Verdict(Disposition.DROP, "null sender (a bounce or delivery report)")
    for address in (sender, parsed.from_address):
        if address and address.partition("@")[0] in _DAEMONS:
            return Verdict(Disposition.DROP, f"sent by {address} (a mail system)")
    if parsed.message.get_content_type() == "multipart/report":
        return Verdict(Disposition.DROP, "a delivery or read report")
    if parsed.from_address and is_own(parsed.from_address):
        return Verdict(Disposition.DROP, "sent from one of our own addresses")
    auto = (parsed.header("Auto-Submitted") or "no").split(";")[0].strip().lower()
    if auto == "auto-replied" or parsed.header("X-Autoreply") or parsed.header("X-Autorespond"):
        return Verdict(Disposition.DROP, "an automatic reply")
    if auto != "no":
        return Verdict(Disposition.SILENT, f"Auto-Submitted: {auto}")
    names = {name.lower() for name in parsed.message}
    if any(name.startswith("list-") for name in names):
        return Verdict(Disposition.SILENT, "mailing-list mail (List-* headers)")
    precedence = (parsed.header("Precedence") or "").strip().lower()
    if precedence in {"bulk", "list", "junk"}:
        return Verdict(Disposition.SILENT, f"Precedence: {precedence}")
    for address in (sender, parsed.from_address):
        if address and _NO_REPLY.match(address.partition("@")[0]):
            return Verdict(Disposition.SILENT, f"{address} takes no replies")
    suppress = {
        value.strip().lower()
        for value in (parsed.header("X-Auto-Response-Suppress") or "").split(",")
    }
    if suppress & {"all", "autoreply", "oof"}:
        return Verdict(Disposition.SILENT, "X-Auto-Response-Suppress")
    return Verdict(Disposition.RUN)
