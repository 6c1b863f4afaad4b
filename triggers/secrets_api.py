"""Secrets over HTTP (issue 14): ``/api/v1/secrets`` and the built-in ``manage_user_secrets``.

Both act for the calling key's owner. ``manage_user_secrets`` (CodeWords' form: ``operation`` =
``add`` | ``get`` | ``list`` | ``delete``) is answered within the request and never becomes a
stored run: a run's inputs and response are kept in the database in plain text, and these carry
values. Who may do what:

- a full owner key (``cwk-``): everything, for its owner; one-time keys: nothing;
- a run key (``CODEWORDS_API_KEY`` inside a run): ``get`` only names its workflow declares in
  ``[tool.env-checker] env_vars`` (the value that workflow's runs get), ``list`` only those names;
  with the ``secrets`` grant (``[tool.switchboard] grants``) also ``add``/``delete`` and every name.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.errors import BadRequest, Forbidden, NotFound
from core.json_input import parse_json
from core.models import Grant
from core.ports import SecretsManager
from core.secret_records import SecretInfo, check_name
from triggers.auth import Authenticator, Principal

MANAGE_USER_SECRETS = "manage_user_secrets"
OPERATIONS = ("add", "get", "list", "delete")


class SecretRoutes:
    """Thin handlers: authenticate, check the caller may, hand to the store, answer JSON."""

    def __init__(self, store: SecretsManager, auth: Authenticator) -> None:
        self._store = store
        self._auth = auth

    def route_table(self) -> list[web.RouteDef]:
        """The secrets API's routes, bound to this object. The ``/run`` paths win over the
        runtime API's ``/run/{service_id}``: aiohttp matches a plain path before a variable one."""
        return [
            web.get("/api/v1/secrets", self.index, allow_head=False),
            web.get("/api/v1/secrets/audit", self.audit, allow_head=False),
            web.put("/api/v1/secrets/{name}", self.put),
            web.delete("/api/v1/secrets/{name}", self.delete),
            web.post(f"/run/{MANAGE_USER_SECRETS}", self.manage),
            web.post(f"/run/{MANAGE_USER_SECRETS}/", self.manage),
            web.post(f"/run_async/{MANAGE_USER_SECRETS}", self.not_async),
            web.post(f"/run_async/{MANAGE_USER_SECRETS}/", self.not_async),
        ]

    async def _principal(self, request: web.Request) -> Principal:
        principal = await self._auth.authenticate(request.headers.get("Authorization"))
        self._auth.refuse_one_time(principal, "secrets")
        return principal

    # ---- REST ---------------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.Response:
        principal = await self._principal(request)
        return web.json_response(await self._listing(principal))

    async def put(self, request: web.Request) -> web.Response:
        principal = await self._principal(request)
        principal.require(Grant.SECRETS, "set secrets")
        body = await _object(request)
        unknown = sorted(set(body) - {"value", "workflow"})
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r}: send {{'value': …, 'workflow': …}}")
        if "value" not in body:
            raise BadRequest("the body needs 'value' (the secret, a string)")
        info = await self._store.put(
            principal.owner_id,
            check_name(request.match_info["name"]),
            body["value"],
            workflow_id=_workflow(body.get("workflow")),
            actor=principal.caller_id,
        )
        return web.json_response(info.to_api())

    async def delete(self, request: web.Request) -> web.Response:
        principal = await self._principal(request)
        principal.require(Grant.SECRETS, "delete secrets")
        name = check_name(request.match_info["name"])
        workflow = _workflow(request.query.get("workflow"))
        await self._store.remove(
            principal.owner_id, name, workflow_id=workflow, actor=principal.caller_id
        )
        return web.json_response({"name": name, "workflow": workflow, "deleted": True})

    async def audit(self, request: web.Request) -> web.Response:
        """The owner's own trail (the operator reads every owner's with the CLI)."""
        principal = await self._principal(request)
        principal.require(Grant.SECRETS, "read the secrets audit trail")
        events = await self._store.audit(principal.owner_id, limit=_limit(request))
        return web.json_response({"events": [event.to_api() for event in events]})

    # ---- manage_user_secrets ------------------------------------------------------------

    async def manage(self, request: web.Request) -> web.Response:
        principal = await self._principal(request)
        body = await _object(request)
        operation = body.get("operation")
        if operation not in OPERATIONS:
            raise BadRequest(
                f"{MANAGE_USER_SECRETS}: 'operation' must be one of {', '.join(OPERATIONS)}"
            )
        if operation == "list":
            return web.json_response(await self._listing(principal))
        name = check_name(_field(body, "name", "secret_name"))
        if operation == "get":
            return web.json_response(await self._get(principal, name, body))
        if operation == "add":
            principal.require(Grant.SECRETS, "add secrets")
            info = await self._store.put(
                principal.owner_id,
                name,
                _field(body, "value", "secret_value"),
                workflow_id=_workflow(body.get("workflow")),
                actor=principal.caller_id,
            )
            return web.json_response({"status": "added", **info.to_api()})
        principal.require(Grant.SECRETS, "delete secrets")
        workflow = _workflow(body.get("workflow"))
        await self._store.remove(
            principal.owner_id, name, workflow_id=workflow, actor=principal.caller_id
        )
        return web.json_response({"status": "deleted", "name": name, "workflow": workflow})

    async def not_async(self, request: web.Request) -> web.Response:
        raise BadRequest(
            f"{MANAGE_USER_SECRETS} answers at once and is never stored as a run (its inputs "
            f"and answers are secrets): call POST /run/{MANAGE_USER_SECRETS}"
        )

    async def _get(self, principal: Principal, name: str, body: dict[str, Any]) -> dict[str, Any]:
        workflow = _workflow(body.get("workflow"))
        if principal.acting_run_id is not None:
            service_id, declared = await self._store.declared_by_run(
                principal.acting_run_id, principal.owner_id
            )
            if name not in declared:
                raise Forbidden(
                    f"a run key can get only the secrets its workflow declares: {service_id} "
                    f"does not list {name} in its [tool.env-checker] env_vars"
                )
            workflow = service_id  # the value this workflow's runs get
        value = await self._store.get(principal.owner_id, name, workflow_id=workflow)
        if value is None:
            raise NotFound("secret", name)
        return {"name": name, "value": value}

    async def _listing(self, principal: Principal) -> dict[str, Any]:
        infos: list[SecretInfo] = await self._store.list_secrets(principal.owner_id)
        if principal.acting_run_id is not None and not principal.rights.allows(Grant.SECRETS):
            _, declared = await self._store.declared_by_run(
                principal.acting_run_id, principal.owner_id
            )
            infos = [info for info in infos if info.name in declared]
        return {"secrets": [info.to_api() for info in infos]}


def _field(body: dict[str, Any], name: str, alias: str) -> Any:
    """``name``, or CodeWords' ``secret_<name>`` spelling (``client.manage_secrets``)."""
    value = body.get(name, body.get(alias))
    if value is None:
        raise BadRequest(f"{MANAGE_USER_SECRETS}: {body.get('operation')} needs {name!r}")
    return value


def _workflow(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest("'workflow' must be a workflow id (a string)")
    return value


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise BadRequest("'limit' must be a whole number from 1 to 1000")
    return int(text)


async def _object(request: web.Request) -> dict[str, Any]:
    body = parse_json(await request.read() or b"{}")  # its errors never quote the input
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body
