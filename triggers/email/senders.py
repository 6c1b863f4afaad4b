"""Who may start a run (PROTOCOLS §3.9): allowlist patterns and an authenticated ``From``.

``From`` proves nothing by itself. With ``require_dmarc`` a route accepts only mail that carries an
``Authentication-Results`` header (RFC 8601) written by the configured ``trusted_authserv_id``
(our border MTA or provider) with ``dmarc=pass``, or ``dkim=pass`` whose signing domain ``header.d``
aligns with the ``From`` domain (relaxed alignment: the same domain or a parent of it). Results
from any other authserv-id are ignored: anyone can add such a header.
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


def authenticated_from(
    results_headers: Iterable[str], from_address: str, trusted_authserv_id: str | None
) -> bool:
    """Whether a trusted verifier recorded a DMARC pass or an aligned DKIM pass for ``From``."""
    if not trusted_authserv_id or "@" not in from_address:
        return False
    from_domain = from_address.rpartition("@")[2].lower()
    for header in results_headers:
        clauses = _COMMENT.sub("", header).split(";")
        authserv = clauses[0].split()
        if not authserv or authserv[0].lower() != trusted_authserv_id.lower():
            continue
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
