"""HTTP plumbing shared by every route: the error middleware and the health endpoint."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from core.errors import SwitchboardError
from core.ports import Metrics

logger = logging.getLogger(__name__)


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
    try:
        return await handler(request)
    except SwitchboardError as exc:
        return web.json_response({"detail": exc.detail}, status=exc.status)
    except web.RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on a body that is not
        # The rest of the body is unreadable too: end it here (else aiohttp, draining it after
        # the answer, meets the error again and logs it as unhandled) and close the connection.
        request.content.feed_eof()
        response = web.json_response(
            {"detail": f"the request body cannot be read: {exc}"}, status=400
        )
        response.force_close()
        return response
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
