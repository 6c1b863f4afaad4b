"""First start: an admin key and the example workflows, so that `switchboard serve` is the demo."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import switchboard
from switchboard.services import Services
from triggers.auth import DEFAULT_OWNER, KeyRole

logger = logging.getLogger(__name__)
ADMIN_KEY_FILE = "admin.key"


def examples_dir(configured: Path | None) -> Path | None:
    if configured is not None:
        return configured
    bundled = Path(switchboard.__file__).resolve().parent.parent / "examples"
    return bundled if bundled.is_dir() else None


async def ensure_admin_key(services: Services) -> str | None:
    """Create the admin key once (saved with mode 0600): role ``admin``, the operator's key (the
    migration to roles recognises it by owner ``default`` and name ``admin``); returns it only
    when just created."""
    path = services.settings.server.data_dir / ADMIN_KEY_FILE
    if path.exists() or await services.keys.list():
        return None
    key, _ = await services.keys.create(owner_id=DEFAULT_OWNER, name="admin", role=KeyRole.ADMIN)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return key


async def register_examples(services: Services) -> list[str]:
    """Register each ``examples/*.py`` whose source differs from its registered version."""
    directory = examples_dir(services.settings.runtime.examples_dir)
    if directory is None:
        return []
    registered = []
    for path in sorted(directory.glob("*.py")):
        service_id = path.stem.replace("_", "-")
        if not await services.registry.needs_update(service_id, path.read_text(encoding="utf-8")):
            # Runs never build environments: make sure this node has the example's (a fresh
            # env dir or uv cache, a second node), or the demo's runs would fail.
            await services.registry.build(service_id)
            continue
        logger.info("registering example workflow %s from %s", service_id, path)
        info = await services.registry.add(path, service_id)
        for warning in await services.unset_secret_warnings(info, DEFAULT_OWNER):
            logger.warning("%s", warning)
        registered.append(f"{info.service_id} v{info.version}")
    return registered
