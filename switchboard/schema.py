"""Every package's tables on the one ``MetaData``: what Alembic's ``check`` compares.

Each package owns its tables (``core.tables`` keeps what several share); importing this module
registers them all. Add a package's table module here when it gets one.
"""

from __future__ import annotations

import dispatch.inbox_tables  # noqa: F401  (registers its tables)
import scheduler.tables  # noqa: F401  (registers its tables)
import triggers.email.tables
import triggers.slack.tables
import triggers.whatsapp.tables  # noqa: F401  (registers its tables)
from core.tables import metadata

__all__ = ["metadata"]
