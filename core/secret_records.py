"""What the secret store says about secrets without their values (issue 14): listings, audit
events, and the rules a name and a value obey, checked the same on every surface."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from core.clock import isoformat
from core.errors import BadRequest
from core.models import RUNTIME_VARIABLES

MAX_VALUE_BYTES = 64 * 1024
MAX_NAME_LENGTH = 128
VARIABLE_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
"""A secret's name, and a name a workflow header may declare: an upper-case environment name."""
RESERVED_PREFIX = "SWITCHBOARD_"


def check_name(name: Any) -> str:
    """``name`` if it can be an environment variable a secret fills, else ``BadRequest`` why."""
    if not isinstance(name, str) or not name:
        raise BadRequest("a secret needs a name (an environment variable name, like API_TOKEN)")
    if len(name) > MAX_NAME_LENGTH:
        raise BadRequest(f"secret name is longer than {MAX_NAME_LENGTH} characters")
    if not VARIABLE_NAME.match(name):
        raise BadRequest(
            f"invalid secret name {name!r}: use upper-case letters A-Z, digits and '_', "
            "not starting with a digit (an environment variable name, like API_TOKEN)"
        )
    if name in RUNTIME_VARIABLES or name.startswith(RESERVED_PREFIX):
        raise BadRequest(
            f"{name} is set by the runtime itself for every run (or is Switchboard's own); "
            "a secret of that name would never reach a workflow"
        )
    return name


def check_value(value: Any) -> str:
    """``value`` if it fits in an environment variable and the size limit, else why not."""
    if not isinstance(value, str):
        raise BadRequest("a secret value must be a string")
    if not value:
        raise BadRequest("a secret value cannot be empty; unset the secret to remove it")
    if "\0" in value:
        raise BadRequest("a secret value cannot hold a NUL character (environment variables can't)")
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise BadRequest(f"a secret value is larger than the limit of {MAX_VALUE_BYTES} bytes")
    return value


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """One stored value, as listings show it: never the value."""

    owner_id: str
    name: str
    workflow_id: str | None
    """``None``: owner-wide; else the one workflow whose runs get it (it wins there)."""
    created_at: datetime
    updated_at: datetime
    updated_by: str

    @property
    def scope(self) -> str:
        return f"workflow {self.workflow_id}" if self.workflow_id else "owner"

    def to_api(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "workflow": self.workflow_id,
            "scope": "workflow" if self.workflow_id else "owner",
            "created_at": isoformat(self.created_at),
            "updated_at": isoformat(self.updated_at),
            "updated_by": self.updated_by,
        }


SecretAction = Literal["set", "delete", "rotate-key"]


@dataclass(frozen=True, slots=True)
class SecretEvent:
    """One line of the audit trail: who changed which name, when (never the value)."""

    at: datetime
    action: SecretAction
    actor: str
    """a key id (``key_…``), a run id (a run key), ``cli``"""
    owner_id: str | None
    name: str | None
    workflow_id: str | None
    detail: str = ""

    def to_api(self) -> dict[str, Any]:
        return {
            "at": isoformat(self.at),
            "action": self.action,
            "actor": self.actor,
            "owner": self.owner_id,
            "name": self.name,
            "workflow": self.workflow_id,
            "detail": self.detail,
        }
