"""Which workflow a recipient address runs: ``[[email.routes]]`` first (exact address, then the
address without its plus tag), then ``[email] workflow`` for any other address of ours."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from triggers.email.settings import EmailRoute, EmailSettings


@dataclass(frozen=True, slots=True)
class RouteMatch:
    recipient: str
    workflow: str
    tag: str | None
    allow_senders: tuple[str, ...] = ()
    require_dmarc: bool = False
    inputs: dict[str, Any] = field(default_factory=dict)


def split_tag(address: str) -> tuple[str, str | None]:
    """``bot+sales@example.com`` → (``bot@example.com``, ``sales``)."""
    local, at, domain = address.strip().lower().rpartition("@")
    if not at:
        return address.strip().lower(), None
    base, plus, tag = local.partition("+")
    return f"{base}@{domain}", (tag if plus else None)


class Router:
    def __init__(self, settings: EmailSettings) -> None:
        self._default = settings.workflow
        self._domains = frozenset(settings.domains)
        self._addresses = frozenset(split_tag(a)[0] for a in settings.addresses)
        self._routes: dict[str, EmailRoute] = {route.address: route for route in settings.routes}
        self._route_bases = frozenset(split_tag(route.address)[0] for route in settings.routes)
        sender = parseaddr(settings.from_address or "")[1]
        self._own = self._addresses | self._route_bases | {split_tag(sender)[0]} - {""}

    def is_ours(self, address: str) -> bool:
        """Any address we receive for (``domains``, ``addresses``, routes)."""
        base, _ = split_tag(address)
        domain = base.rpartition("@")[2]
        return domain in self._domains or base in self._addresses or base in self._route_bases

    def is_own_address(self, address: str) -> bool:
        """An address Switchboard itself writes from: ``addresses``, route addresses and
        ``from_address`` (any plus tag). Not every address at ``domains``: those are colleagues,
        whose mail must run (a loop needs one of *our* mailboxes on both ends)."""
        return split_tag(address)[0] in self._own

    def route(self, address: str) -> RouteMatch | None:
        """The workflow mail to ``address`` runs, or ``None``: not ours (never relay)."""
        clean = address.strip().strip("<>").lower()
        base, tag = split_tag(clean)
        route = self._routes.get(clean) or self._routes.get(base)
        if route is not None:
            return RouteMatch(
                recipient=clean,
                workflow=route.workflow,
                tag=tag,
                allow_senders=route.allow_senders,
                require_dmarc=route.require_dmarc,
                inputs=dict(route.inputs),
            )
        if self._default and self.is_ours(clean):
            return RouteMatch(recipient=clean, workflow=self._default, tag=tag)
        return None
