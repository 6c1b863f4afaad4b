"""The runtime API relay: a run reaches the server's API on its own Unix socket, relayed to the
server's TCP listener (README "Sandbox": ``CODEWORDS_RUNTIME_URI`` works unchanged inside)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


async def relay_runtime_api(socket_path: Path, address: tuple[str, int]) -> asyncio.Server:
    """Listen on ``socket_path`` (mode 0666: the sandbox user connects) and relay to ``address``."""

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*address)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            _pipe(reader, upstream_writer), _pipe(upstream_reader, writer), return_exceptions=True
        )

    server = await asyncio.start_unix_server(relay, path=str(socket_path))
    os.chmod(socket_path, 0o666)  # noqa: S103 - one run's own socket
    return server


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    finally:
        if reader.at_eof():
            writer.close()
