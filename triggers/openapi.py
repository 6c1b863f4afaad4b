"""``GET /openapi.json``: the OpenAPI 3.1 document, generated from the served route table.

Every route the server serves is in it (the runtime API, the management API, schedules, the
channels' public routes); a handler decorated with ``core.operations.operation`` adds its
summary, its query and body models and its answers, whose JSON Schemas pydantic writes
(``models_json_schema``). The document is checked against the OpenAPI model of
``openapi-pydantic`` when it is built, once per server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from openapi_pydantic.v3.v3_1 import OpenAPI
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from core.operations import Operation, operation_of

PATH_PARAMETER = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
Refs = dict[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]]
METHODS = ("get", "post", "put", "patch", "delete")


def served_routes(app: web.Application) -> Iterator[tuple[str, str, Any]]:
    """(method, path template, handler) of every route of ``app`` and its sub-apps."""
    for resource in app.router.resources():
        sub_app = getattr(resource, "_app", None)  # a channel's edge (PrefixedSubAppResource)
        if isinstance(sub_app, web.Application):
            yield from served_routes(sub_app)
            continue
        path = resource.canonical
        for route in resource:
            method = route.method.lower()
            if method in METHODS:
                yield method, path, route.handler


def openapi_document(app: web.Application, *, title: str, version: str) -> dict[str, Any]:
    """The document for ``app`` as it serves now (call it after startup: routes are final)."""
    operations: list[tuple[str, str, Operation | None]] = []
    for method, path, handler in served_routes(app):
        operations.append((method, path, operation_of(handler)))
    models: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for _, _, described in operations:
        if described is None:
            continue
        for model in (described.query, described.body):
            if model is not None:
                models[(model, "validation")] = None
        for answer in described.answers.values():
            if answer is not None:
                models[(answer, "serialization")] = None
    found, definitions = models_json_schema(
        list(models), ref_template="#/components/schemas/{model}"
    )
    refs: Refs = {
        (model, mode): schema
        for (model, mode), schema in found.items()
        if isinstance(model, type) and issubclass(model, BaseModel)
    }
    paths: dict[str, dict[str, Any]] = {}
    for method, path, described in operations:
        template = PATH_PARAMETER.sub(r"{\1}", path)
        entry = _operation(method, path, described, refs)
        paths.setdefault(template, {})[method] = entry
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {**definitions.get("$defs", {}), "Error": ERROR},
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key (cwk-…); the bare key without Bearer works too",
                }
            },
        },
    }
    OpenAPI.model_validate(document)  # a document that is not OpenAPI 3.1 fails here, not later
    return document


def _operation(
    method: str,
    path: str,
    described: Operation | None,
    refs: Refs,
) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in PATH_PARAMETER.findall(path)
    ]
    if described is None:  # served, not described: any answer
        return {
            "operationId": _operation_id(method, path),
            "parameters": parameters,
            "responses": {"default": {"description": "the route's answer", "content": {"*/*": {}}}},
        }
    if described.query is not None:
        schema = described.query.model_json_schema(ref_template="#/components/schemas/{model}")
        required = set(schema.get("required", []))
        for name, field_schema in schema.get("properties", {}).items():
            parameter: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": field_schema,
            }
            if _is_array(field_schema):
                parameter.update(style="form", explode=True)
            parameters.append(parameter)
    entry: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "summary": described.summary,
        "tags": list(described.tags),
        "parameters": parameters,
        "responses": {
            str(status): {
                "description": described.summary if status < 300 else "the error",
                "content": {
                    described.answer_media: {
                        "schema": {} if model is None else refs[(model, "serialization")]
                    }
                },
            }
            for status, model in described.answers.items()
        },
    }
    entry["responses"]["default"] = {
        "description": "an error: its detail says what was refused",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if described.body is not None:
        entry["requestBody"] = {
            "required": described.body_required,
            "content": {"application/json": {"schema": refs[(described.body, "validation")]}},
        }
    elif described.body_media != "application/json":
        entry["requestBody"] = {
            "required": described.body_required,
            "content": {described.body_media: {"schema": {"type": "string"}}},
        }
    if described.auth:
        entry["security"] = [{"apiKey": []}]
    return entry


def _is_array(schema: dict[str, Any]) -> bool:
    if schema.get("type") == "array":
        return True
    return any(option.get("type") == "array" for option in schema.get("anyOf", []))


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", PATH_PARAMETER.sub(r"by_\1", path)).strip("_")
    return f"{method}_{words or 'root'}"


class OpenApiRoute:
    """Serves the document, built at the first request (after startup: routes are final)."""

    def __init__(self, *, title: str, version: str) -> None:
        self._title = title
        self._version = version
        self._document: dict[str, Any] | None = None

    def route_table(self) -> list[web.RouteDef]:
        return [web.get("/openapi.json", self.document, allow_head=False)]

    async def document(self, request: web.Request) -> web.Response:
        if self._document is None:
            self._document = openapi_document(request.app, title=self._title, version=self._version)
        return web.json_response(self._document)
