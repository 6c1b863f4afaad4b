"""An in-memory :class:`~core.ports.SecretValues`: for unit tests, local runs and test servers."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from core.errors import SecretsUnreadable

_OWNER_WIDE = ""


class InMemorySecretValues:
    """Secrets in a dict, keyed by owner, workflow (``""``: owner-wide) and name."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str, str], str] = {}
        self.unreadable = False
        """Set to make every read raise :class:`SecretsUnreadable` (a lost master key)."""

    def set(self, owner_id: str, name: str, value: str, *, workflow_id: str | None = None) -> None:
        self._values[owner_id, workflow_id or _OWNER_WIDE, name] = value

    def unset(self, owner_id: str, name: str, *, workflow_id: str | None = None) -> None:
        self._values.pop((owner_id, workflow_id or _OWNER_WIDE, name), None)

    async def values_for_run(
        self, owner_id: str, workflow_id: str, names: Collection[str]
    ) -> Mapping[str, str]:
        if self.unreadable:
            raise SecretsUnreadable()
        found = {}
        for name in names:
            for scope in (workflow_id, _OWNER_WIDE):
                value = self._values.get((owner_id, scope, name))
                if value is not None:
                    found[name] = value
                    break
        return found
