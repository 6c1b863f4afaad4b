"""What a route handler says about itself for the OpenAPI document (``GET /openapi.json``).

A handler is decorated with :func:`operation`; the document is built from the served route table
(``triggers/openapi.py``) and these models, so it cannot drift from the routes. A route without
one is still listed, with its path parameters and a generic JSON answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

Handler = TypeVar("Handler", bound=Callable[..., Any])
OPERATION_ATTRIBUTE = "__switchboard_operation__"


@dataclass(frozen=True, slots=True)
class Operation:
    summary: str
    query: type[BaseModel] | None = None
    """Its fields are the query parameters (list fields may repeat)."""
    body: type[BaseModel] | None = None
    body_media: str = "application/json"
    """``text/x-python`` for a workflow file, ``application/octet-stream`` for raw bytes."""
    body_required: bool = False
    answers: Mapping[int, type[BaseModel] | None] = field(default_factory=dict)
    """Status -> model of the JSON answer (``None``: any JSON, or ``answer_media``)."""
    answer_media: str = "application/json"
    tags: tuple[str, ...] = ()
    auth: bool = True
    """Whether it needs an API key (``Authorization: Bearer cwk-…``)."""


def operation(
    summary: str,
    *,
    query: type[BaseModel] | None = None,
    body: type[BaseModel] | None = None,
    body_media: str = "application/json",
    body_required: bool = False,
    answers: Mapping[int, type[BaseModel] | None] | None = None,
    answer_media: str = "application/json",
    tags: tuple[str, ...] = (),
    auth: bool = True,
) -> Callable[[Handler], Handler]:
    """Attach an :class:`Operation` to a handler (a function or a method)."""
    described = Operation(
        summary=summary,
        query=query,
        body=body,
        body_media=body_media,
        body_required=body_required,
        answers=dict(answers or {200: None}),
        answer_media=answer_media,
        tags=tags,
        auth=auth,
    )

    def attach(handler: Handler) -> Handler:
        setattr(handler, OPERATION_ATTRIBUTE, described)
        return handler

    return attach


def operation_of(handler: Any) -> Operation | None:
    """The :class:`Operation` of a handler or of the function behind a bound method."""
    found = getattr(getattr(handler, "__func__", handler), OPERATION_ATTRIBUTE, None)
    return found if isinstance(found, Operation) else None
