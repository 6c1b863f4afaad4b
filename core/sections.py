"""The base of every settings section (DESIGN §7): strict and frozen.

Each package owns its section (``dispatch.settings``, ``triggers.slack.settings``, …); the
composition root (``switchboard.settings``) assembles the tree from them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A settings section: unknown keys are refused, values never change after start."""

    model_config = ConfigDict(extra="forbid", frozen=True)
