"""What the secrets tests share: the bytes a database keeps, as someone who copied it reads them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.pgserver import find_pg_bindir

SQLITE_FILES = ("", "-wal", "-journal")


async def database_bytes(database_url: str) -> bytes:
    """Everything the database holds: the SQLite file and its WAL as they are on disk, or a
    PostgreSQL ``pg_dump`` of the whole database (schema and every row, as text)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        found = [Path(url.database + suffix) for suffix in SQLITE_FILES]
        return b"".join(path.read_bytes() for path in found if path.exists())
    process = await asyncio.create_subprocess_exec(
        str(find_pg_bindir() / "pg_dump"),
        f"--host={url.host}",
        f"--port={url.port}",
        f"--username={url.username}",
        "--no-password",
        str(url.database),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert b"COPY public.secrets" in out, "the dump does not hold the secrets table"
    return out
