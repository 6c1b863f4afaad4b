"""Headers on every response we serve: nothing we send is run by a browser as our page.

Workflows answer ``/run`` with what they like (HTML too) and uploads keep the uploader's content
type, all on our origin. ``nosniff`` stops a browser from guessing a type we did not send; the
CSP's ``sandbox`` renders any HTML in a unique origin with scripts, forms and plugins off, and
``default-src 'none'`` lets it load nothing.
"""

from __future__ import annotations

from aiohttp import web

CONTENT_SECURITY_POLICY = "default-src 'none'; sandbox; frame-ancestors 'none'"


async def set_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` hook: overrides whatever a workflow's answer said."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
