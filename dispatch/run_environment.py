"""A run's declared variables (issue 14): resolved once, before any runner starts anything.

Every runner (process, bubblewrap fresh or zygote child, warm) gets them the same way: in
``Invocation.env``, under the runtime's own variables, which always win.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from core.errors import SecretNotSet
from core.models import DeclaredVariable
from core.ports import SecretValues


@dataclass(frozen=True, slots=True)
class DeclaredValues:
    """What a run's header declares, resolved: the variables to set and which are secrets."""

    env: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    """The values that came from a secret (defaults are not secret): to redact from logs."""


async def resolve_declared_env(
    values: SecretValues,
    *,
    owner_id: str,
    service_id: str,
    declared: Sequence[DeclaredVariable],
) -> DeclaredValues:
    """The owner's (or the workflow's) secret for each declared name, else the header's default.

    Raises :class:`SecretNotSet` for the first declared name with neither, and lets
    ``SecretsUnreadable`` through: either fails the run before its sandbox starts.
    """
    wanted = [variable for variable in declared if not variable.from_runtime]
    if not wanted:
        return DeclaredValues()
    found = await values.values_for_run(owner_id, service_id, [v.name for v in wanted])
    env: dict[str, str] = {}
    secrets: list[str] = []
    for variable in wanted:
        value = found.get(variable.name)
        if value is not None:
            env[variable.name] = value
            secrets.append(value)
        elif variable.default is not None:
            env[variable.name] = variable.default
        else:
            raise SecretNotSet(variable.name, owner_id, service_id)
    return DeclaredValues(env=env, secrets=tuple(secrets))


async def unset_declarations(
    values: SecretValues,
    *,
    owner_id: str,
    service_id: str,
    declared: Sequence[DeclaredVariable],
) -> list[str]:
    """Declared names a run of ``owner_id`` would fail on today (no secret, no default)."""
    required = [v.name for v in declared if not v.from_runtime and v.default is None]
    if not required:
        return []
    found: Mapping[str, str] = await values.values_for_run(owner_id, service_id, required)
    return [name for name in required if name not in found]
