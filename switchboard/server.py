"""The HTTP server's connections: aiohttp's own errors as JSON, and a deadline on request heads.

aiohttp answers a request it cannot parse (a bad header line, an oversized field) itself, before
any middleware, in ``text/plain``; :class:`JsonErrorConnection` answers those like every other
error (DESIGN §8). A connection gets ``server.header_timeout`` seconds from opening (and from its
previous answer) to deliver a complete request head, else it is closed: aiohttp's keep-alive
timer already measures exactly that span, so it is set to the header timeout. The body has its
own deadline (``server.body_timeout``, :func:`switchboard.http.body_deadline_middleware`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from http import HTTPStatus

from aiohttp import web
from aiohttp.web_request import BaseRequest

from switchboard.settings import ServerSettings

logger = logging.getLogger(__name__)


class JsonErrorConnection(web.RequestHandler):
    """aiohttp's connection handler, answering its own errors as JSON ``{"detail"}``."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # an answer had started: nothing more can be said
            raise ConnectionError("the response was sent already; cannot send the error")
        if status >= 500:
            self.log_exception("error handling a request from %s", request.remote, exc_info=exc)
            detail = "internal error; see the server log"
        else:  # the client's fault: no traceback in our log
            logger.info("malformed HTTP request from %s: %s", request.remote, message)
            said = " ".join((message or HTTPStatus(status).phrase).split())  # one line, no caret
            detail = f"malformed HTTP request: {said}"
        response = web.json_response({"detail": detail}, status=status)
        response.force_close()
        return response


class SwitchboardSite(web.BaseSite):
    """A TCP site whose connections are :class:`JsonErrorConnection` with the header timeout."""

    __slots__ = ("_header_timeout", "_host", "_port", "_sock")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        header_timeout: float,
        backlog: int = 1024,
        sock: socket.socket | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._header_timeout = header_timeout
        self._sock = sock

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:  # pragma: no cover - BaseSite refuses a runner that is not set up
            raise RuntimeError("call runner.setup() before starting a site")
        loop = asyncio.get_running_loop()

        def connection() -> JsonErrorConnection:
            return JsonErrorConnection(
                server,
                loop=loop,
                keepalive_timeout=self._header_timeout,
                # No access log (as before: one line per request costs CPU); aiohttp tests
                # ``if access_log`` and accepts None, its annotation says Logger.
                access_log=None,  # type: ignore[arg-type]
            )

        if self._sock is not None:
            self._server = await loop.create_server(
                connection, sock=self._sock, backlog=self._backlog
            )
            return
        self._server = await loop.create_server(
            connection, self._host, self._port, backlog=self._backlog
        )


async def start_site(
    runner: web.BaseRunner,
    settings: ServerSettings,
    *,
    host: str,
    port: int,
    sock: socket.socket | None = None,
) -> SwitchboardSite:
    """Listen on ``host:port`` for ``runner`` (set up already) with the server's settings, or
    on ``sock``, a socket bound already (so that nobody takes its port in between)."""
    site = SwitchboardSite(runner, host, port, header_timeout=settings.header_timeout, sock=sock)
    await site.start()
    return site
