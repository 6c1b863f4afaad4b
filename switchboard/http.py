"""HTTP plumbing shared by every route: the error middleware and the health endpoint."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from core.errors import SwitchboardError
from core.ports import Metrics

logger = logging.getLogger(__name__)


class BodyTimeout(SwitchboardError):
    """The request body did not arrive in time."""

    status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the request body did not arrive within {seconds:g} s (server.body_timeout)"
        )


def body_deadline_middleware(seconds: float) -> Middleware:
    """A request body must arrive in full within ``seconds`` (a slow-loris defence): past it,
    the body's reader fails with :class:`BodyTimeout` (answered 408) whatever reads it."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.content.is_eof():
            return await handler(request)
        timer = asyncio.get_running_loop().call_later(seconds, _expire, request, seconds)
        try:
            return await handler(request)
        finally:
            timer.cancel()

    return middleware


def _expire(request: web.Request, seconds: float) -> None:
    if not request.content.is_eof():
        request.content.set_exception(BodyTimeout(seconds))


def error_middleware(metrics: Metrics) -> Middleware:
    """Every error leaves as JSON ``{"detail": …}`` with its status (DESIGN §8), and is counted."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await _as_json_errors(request, handler)
        if response.status >= 400:
            metrics.request_rejected(response.status)
        return response

    return middleware


async def _as_json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if "\x00" in request.path:
        # Path parts are ids and paths the database stores or looks up; PostgreSQL refuses a NUL
        # in text, and a refused row fails the whole intake batch it was committed with.
        return web.json_response({"detail": "the request path holds a NUL (%00)"}, status=400)
    try:
        return await handler(request)
    except BodyTimeout as exc:
        return _unreadable_body(request, exc.detail, exc.status)
    except SwitchboardError as exc:
        return web.json_response({"detail": exc.detail}, status=exc.status)
    except web.RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on a body that is not
        return _unreadable_body(request, f"the request body cannot be read: {exc}", 400)
    except web.HTTPRequestEntityTooLarge as exc:
        limit = request.app._client_max_size
        return web.json_response(
            {"detail": f"request body is larger than the limit of {limit} bytes"}, status=exc.status
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else None
        if exc.status == 404:
            detail = f"no such endpoint: {request.method} {request.path}"
        elif exc.status == 405:
            detail = f"method {request.method} is not allowed on {request.path}"
        return web.json_response({"detail": detail or exc.reason}, status=exc.status)
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response({"detail": "internal error; see the server log"}, status=500)


def _unreadable_body(request: web.Request, detail: str, status: int) -> web.Response:
    """The answer to a request whose body cannot be read to its end: the rest is dropped (else
    aiohttp, draining it after the answer, meets the error again and logs it as unhandled) and
    the connection closed."""
    request.content.feed_eof()
    response = web.json_response({"detail": detail}, status=status)
    response.force_close()
    return response
