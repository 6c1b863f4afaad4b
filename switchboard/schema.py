"""Every package's tables on the one ``MetaData``: what Alembic's ``check`` compares.

Each package owns its tables (``core.tables`` keeps what several share); importing this module
registers them all. Add a package's table module here when it gets one.
"""

from __future__ import annotations

import console.tables  # noqa: F401  (each import registers its package's tables)
import triggers.auth_tables
import triggers.email.tables
import triggers.file_tables
import triggers.slack.tables
import triggers.whatsapp.tables  # noqa: F401  (each import registers its package's tables)
from core.tables import metadata

__all__ = ["metadata"]
