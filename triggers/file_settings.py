"""The ``[files]`` section: the file store behind ``/file`` and signed URIs."""

from __future__ import annotations

from pydantic import Field

from core.sections import Section


class FilesSettings(Section):
    max_size: int = Field(default=100 * 1024 * 1024, ge=1)
    upload_ttl: int = Field(default=3600, ge=1, description="seconds an upload URI stays valid")
    download_ttl: int = Field(
        default=7 * 24 * 3600, ge=1, description="seconds a download URI stays valid"
    )
