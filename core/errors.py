"""The error tree. One base; each branch carries the HTTP status the edge maps it to.

Messages are built from typed fields so that the same failure always reads the same way, and so
that no caller has to remember to name the id it is talking about.
"""

from __future__ import annotations


class SwitchboardError(Exception):
    """Something went wrong inside Switchboard."""

    status = 500

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or (self.__doc__ or "").strip()
        super().__init__(self.detail)


class BadRequest(SwitchboardError, ValueError):
    """The request is malformed."""

    status = 400


class Unauthorized(SwitchboardError, PermissionError):
    """Missing, unknown or revoked API key."""

    status = 401


class Forbidden(SwitchboardError, PermissionError):
    """The signature of this URI is invalid or has expired."""

    status = 403


class NotFound(SwitchboardError, LookupError):
    """Nothing with that name exists here."""

    status = 404

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name!r} not found")


class Conflict(SwitchboardError):
    """The request conflicts with the current state."""

    status = 409


class ResultNotReady(SwitchboardError):
    """The run has not finished yet."""

    status = 408

    def __init__(self, run_id: str, waited: float) -> None:
        self.run_id = run_id
        super().__init__(
            f"request {run_id} has not finished after {waited:g} s; poll /result/{run_id} again"
        )


class PayloadTooLarge(SwitchboardError):
    """The body is larger than allowed."""

    status = 413

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"{what} is larger than the limit of {limit} bytes")


class SyncTimeout(SwitchboardError, TimeoutError):
    """A synchronous call waited too long."""

    status = 504

    def __init__(self, run_id: str, waited: float) -> None:
        self.run_id = run_id
        super().__init__(
            f"request {run_id} did not finish within {waited:g} s; it is still running: "
            f"read its result with GET /result/{run_id} (or switch to /run_async)"
        )


class WorkflowError(SwitchboardError):
    """A workflow could not be registered or started."""

    status = 400


class EnvironmentNotBuilt(WorkflowError):
    """The workflow's environment is not built on this node; re-register the workflow."""

    status = 503

    def __init__(self, service_id: str) -> None:
        self.service_id = service_id
        super().__init__(f"environment for workflow {service_id!r} is not built; re-register it")


class SecretsUnreadable(SwitchboardError):
    """secrets cannot be decrypted: the master key is missing or wrong"""

    status = 503


class SecretNotSet(WorkflowError):
    """A run's workflow declares a variable that has neither a secret nor a default."""

    status = 400

    def __init__(self, name: str, owner_id: str, service_id: str) -> None:
        self.name = name
        self.owner_id = owner_id
        self.service_id = service_id
        super().__init__(
            f"secret {name} is not set for owner {owner_id} (declared by workflow {service_id})"
        )


class ReplayNotProcessed(SwitchboardError):
    """A replayed inbox event made no run: its processing failed or has not finished."""

    status = 502

    def __init__(self, event_id: str, original_id: str, why: str) -> None:
        self.event_id = event_id
        self.original_id = original_id
        super().__init__(f"replay {event_id} of inbox event {original_id} made no run: {why}")
