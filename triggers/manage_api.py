"""``/api/v1/workflows`` and ``/api/v1/keys``: deploy workflows, hand out and revoke keys.

Any key reads the workflows (they serve every owner); deploying and removing one needs an admin
key. Keys: an admin key lists and makes keys for any owner, a member key only its owner's
member keys. A new key's secret is in the answer to its creation and nowhere else.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from core.clock import ApiTime
from core.errors import BadRequest, Forbidden, NotFound
from core.operations import operation
from core.workflow_catalog import WorkflowAdmin, WorkflowDetail, WorkflowList, WorkflowVersionView
from triggers.auth import Authenticator, KeyInfo, KeyRole, KeyStore, Principal
from triggers.runs_api import model_body

MAX_WORKFLOW_BYTES = 1024 * 1024


class KeyView(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    owner: str
    name: str
    prefix: str = Field(description="the first characters, to recognise it")
    role: KeyRole
    one_time: bool
    created_at: ApiTime
    revoked_at: ApiTime | None
    used_at: ApiTime | None

    @classmethod
    def of(cls, info: KeyInfo) -> KeyView:
        return cls(
            id=info.id,
            owner=info.owner_id,
            name=info.name,
            prefix=info.prefix,
            role=info.role,
            one_time=info.one_time,
            created_at=info.created_at,
            revoked_at=info.revoked_at,
            used_at=info.used_at,
        )


class KeyList(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    keys: list[KeyView]


class NewKey(BaseModel):
    """``POST /api/v1/keys``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: KeyRole = KeyRole.MEMBER
    owner: str | None = Field(default=None, max_length=64, description="default: the caller's")
    one_time: bool = False
    name: str = Field(default="", max_length=200)


class CreatedKey(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key: KeyView
    secret: str = Field(description="the key itself: shown this once, stored only as a hash")


class RevokedKey(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    revoked: str


class RemovedWorkflow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    removed: str


class ManagementRoutes:
    """The handlers; :meth:`route_table` registers them as bound methods."""

    def __init__(self, workflows: WorkflowAdmin, keys: KeyStore, auth: Authenticator) -> None:
        self._workflows = workflows
        self._keys = keys
        self._auth = auth

    def route_table(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/workflows", self.list_workflows, allow_head=False),
            web.get("/api/v1/workflows/{workflow_id}", self.show_workflow, allow_head=False),
            web.put("/api/v1/workflows/{workflow_id}", self.deploy_workflow),
            web.delete("/api/v1/workflows/{workflow_id}", self.remove_workflow),
            web.get("/api/v1/keys", self.list_keys, allow_head=False),
            web.post("/api/v1/keys", self.create_key),
            web.delete("/api/v1/keys/{key_id}", self.revoke_key),
        ]

    async def _caller(self, request: web.Request) -> Principal:
        principal = await self._auth.authenticate(request.headers.get("Authorization"))
        self._auth.refuse_one_time(principal, "the management API")
        return principal

    @operation(summary="List workflows", answers={200: WorkflowList}, tags=("workflows",))
    async def list_workflows(self, request: web.Request) -> web.Response:
        await self._caller(request)
        return _answer(WorkflowList(workflows=await self._workflows.workflows()))

    @operation(
        summary="One workflow: its versions, lock hashes, dependencies, limits, declared env",
        answers={200: WorkflowDetail},
        tags=("workflows",),
    )
    async def show_workflow(self, request: web.Request) -> web.Response:
        await self._caller(request)
        return _answer(await self._workflows.workflow(request.match_info["workflow_id"]))

    @operation(
        summary="Deploy a new version: the PEP 723 file as the body (admin)",
        body_media="text/x-python",
        body_required=True,
        answers={201: WorkflowVersionView},
        tags=("workflows",),
    )
    async def deploy_workflow(self, request: web.Request) -> web.Response:
        principal = await self._caller(request)
        principal.require_admin("deploying a workflow")
        raw = await request.read()
        if len(raw) > MAX_WORKFLOW_BYTES:
            raise BadRequest(f"the workflow file is larger than {MAX_WORKFLOW_BYTES} bytes")
        try:
            source = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest("the workflow file is not UTF-8") from exc
        version = await self._workflows.deploy(request.match_info["workflow_id"], source)
        return _answer(version, status=201)

    @operation(
        summary="Remove a workflow (admin)", answers={200: RemovedWorkflow}, tags=("workflows",)
    )
    async def remove_workflow(self, request: web.Request) -> web.Response:
        principal = await self._caller(request)
        principal.require_admin("removing a workflow")
        workflow_id = request.match_info["workflow_id"]
        await self._workflows.remove(workflow_id)
        return _answer(RemovedWorkflow(removed=workflow_id))

    @operation(summary="List API keys, never secrets", answers={200: KeyList}, tags=("keys",))
    async def list_keys(self, request: web.Request) -> web.Response:
        principal = await self._caller(request)
        owner = None if principal.is_admin else principal.owner_id
        return _answer(KeyList(keys=[KeyView.of(info) for info in await self._keys.list(owner)]))

    @operation(
        summary="Create a key; its secret is in this answer only",
        body=NewKey,
        answers={201: CreatedKey},
        tags=("keys",),
    )
    async def create_key(self, request: web.Request) -> web.Response:
        principal = await self._caller(request)
        body = await model_body(request, NewKey)
        owner = body.owner or principal.owner_id
        if not principal.is_admin and (owner != principal.owner_id or body.role is KeyRole.ADMIN):
            raise Forbidden("creating an admin key, or a key of another owner, needs an admin key")
        secret, info = await self._keys.create(
            owner_id=owner, name=body.name, one_time=body.one_time, role=body.role
        )
        return _answer(CreatedKey(key=KeyView.of(info), secret=secret), status=201)

    @operation(summary="Revoke a key", answers={200: RevokedKey}, tags=("keys",))
    async def revoke_key(self, request: web.Request) -> web.Response:
        principal = await self._caller(request)
        key_id = request.match_info["key_id"]
        if not principal.is_admin:
            mine = {info.id for info in await self._keys.list(principal.owner_id)}
            if key_id not in mine:
                raise NotFound("API key", key_id)
        return _answer(RevokedKey(revoked=await self._keys.revoke(key_id)))


def _answer(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(text=model.model_dump_json(), status=status)
