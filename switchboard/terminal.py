"""What the CLI prints: plain aligned tables, readable in a terminal and by ``awk``."""

from __future__ import annotations

import sys
from typing import TextIO


def print_table(headers: list[str], rows: list[list[str]], out: TextIO | None = None) -> None:
    """Columns padded to their widest cell; ``(none)`` for no rows."""
    out = out or sys.stdout
    if not rows:
        print("(none)", file=out)
        return
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    for row in [headers, *rows]:
        print(
            "  ".join(
                str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip(),
            file=out,
        )
