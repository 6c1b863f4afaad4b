"""Who may start a run (PROTOCOLS §3.9): allowlist patterns and an authenticated ``From``.

``From`` proves nothing by itself. With ``require_dmarc`` a route accepts only mail that carries an
``Authentication-Results`` header (RFC 8601) written by the configured ``trusted_authserv_id``
(our border MTA or provider) with ``dmarc=pass``, or ``dkim=pass`` whose signing domain ``header.d``
aligns with the ``From`` domain (relaxed alignment: the same domain or a parent of it). Results
from any other authserv-id are ignored: anyone can add such a header.

Anyone can also write a header *with* our authserv-id. RFC 8601 §5 makes the border MTA delete
those from incoming mail, so which headers count depends on who handed us the mail (the intake
decides): on our own SMTP port only a client in ``trusted_relays`` (the MTA that checked the
mail and removed forgeries), and then only :func:`topmost_results` — the block its verifier
prepended; through a provider's authenticated webhook, the provider's headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import fnmatchcase

_COMMENT = re.compile(r"\([^()]*\)")
_RESULT = re.compile(r"^\s*([a-z0-9_-]+)\s*=\s*([a-z]+)\b(.*)$", re.IGNORECASE | re.DOTALL)
_PROPERTY = re.compile(r"([a-z0-9_-]+\.[a-z0-9_-]+)\s*=\s*(\S+)", re.IGNORECASE)


def sender_allowed(address: str, patterns: Iterable[str]) -> bool:
    patterns = list(patterns)
    if not patterns:
        return True
    return any(fnmatchcase(address.lower(), pattern.lower()) for pattern in patterns)


def authserv_id_of(header: str) -> str:
    """The authserv-id an ``Authentication-Results`` value starts with (lower case)."""
    words = _COMMENT.sub("", header).split(";")[0].split()
    return words[0].lower() if words else ""


def topmost_results(
    fields: Iterable[tuple[str, str]], trusted_authserv_id: str | None
) -> list[str]:
    """The ``Authentication-Results`` values our border MTA added: the first run of such fields
    with our authserv-id, top down (a verifier prepends its block; a forgery sits below it)."""
    if not trusted_authserv_id:
        return []
    wanted = trusted_authserv_id.lower()
    found: list[str] = []
    for name, value in fields:
        if name.lower() == "authentication-results" and authserv_id_of(str(value)) == wanted:
            found.append(str(value))
        elif found:
            break
    return found


def authenticated_from(
    results_headers: Iterable[str], from_address: str, trusted_authserv_id: str | None
) -> bool:
    """Whether a trusted verifier recorded a DMARC pass or an aligned DKIM pass for ``From``."""
    if not trusted_authserv_id or "@" not in from_address:
        return False
    from_domain = from_address.rpartition("@")[2].lower()
    for header in results_headers:
        if authserv_id_of(header) != trusted_authserv_id.lower():
            continue
        clauses = _COMMENT.sub("", header).split(";")
        for clause in clauses[1:]:
            matched = _RESULT.match(clause)
            if matched is None or matched.group(2).lower() != "pass":
                continue
            method = matched.group(1).lower()
            properties = {k.lower(): v.lower() for k, v in _PROPERTY.findall(matched.group(3))}
            if method == "dmarc" and properties.get("header.from", from_domain) == from_domain:
                return True
            if method == "dkim":
                signer = properties.get("header.d") or properties.get("header.i", "").lstrip("@")
                signer = signer.rpartition("@")[2]
                if signer and (from_domain == signer or from_domain.endswith("." + signer)):
                    return True
    return False
