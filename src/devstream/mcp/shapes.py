"""The shapes of the MCP tools' parameters and results, as their JSON schemas show them.

Every field is described, and pydantic's per-field titles (the field's name again) are
left out: every client pays for the tool list in tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import pydantic_core
from mcp.types import CallToolResult, TextContent
from pydantic import ConfigDict, Field, Strict, with_config
from typing_extensions import Required, TypedDict  # pydantic needs these on Python < 3.12

from devstream.vocabulary import CONTENT_TYPES


def about(
    description: str, *, enum: Sequence[str] = (), ge: int | None = None, le: int | None = None
) -> Any:
    """A described field, with pydantic's bounds (ge, le) and the values it takes. Strict, as
    the schema says: an integer is never `true`, `"1"` or `1.0` (pydantic's lax mode would
    make each of them 1, and a malformed call would act on task 1)."""
    extra: dict[str, Any] | None = {"enum": list(enum)} if enum else None
    return Field(description=description, json_schema_extra=extra, ge=ge, le=le, strict=True)


def _untitled(schema: dict[str, Any]) -> None:
    """Drop the titles pydantic gives every field: the field's name again, tokens for nothing."""
    for field in schema.get("properties", {}).values():
        field.pop("title", None)


untitled = with_config(ConfigDict(json_schema_extra=_untitled))
# What a caller passes: a field it misspells is refused, not dropped.
untitled_input = with_config(ConfigDict(json_schema_extra=_untitled, extra="forbid"))


def closed_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's input schema (a copy) as its server checks it: no property but those named,
    and without the titles of its properties."""
    closed = {**schema, "additionalProperties": False}
    closed["properties"] = {name: dict(prop) for name, prop in schema["properties"].items()}
    _untitled(closed)
    return closed


Whole = Annotated[int, Strict()]  # an item of a list: a field's strictness stops at the list
TaskId = Annotated[int, about("Task id.", ge=1)]
PlanId = Annotated[int, about("Plan id.", ge=1)]
OptionalPlan = Annotated[int | None, about("Only this plan's.", ge=1)]
Limit = Annotated[int, about("At most this many.", ge=1, le=100)]
Budget = Annotated[int, about("Tokens of memory context to inject.", ge=1)]
ContentType = Annotated[str, about("Kind of memory.", enum=CONTENT_TYPES)]
Priority = Annotated[int, about("1-10; 10 is the most important.", ge=1, le=10)]
Document = dict[str, Any]
Documents = list[Document]


@untitled_input
class TaskSpec(TypedDict, total=False):
    title: Required[Annotated[str, about("Task title.")]]
    description: Annotated[str, about("What to do.")]
    priority: Priority
    estimated_minutes: Annotated[int, about("1-10 minutes.", ge=1, le=10)]
    depends_on: Annotated[list[Whole], about("Positions (from 1) of outline tasks it waits for.")]


@untitled_input
class PhaseSpec(TypedDict):
    name: Annotated[str, about("Phase name.")]
    tasks: Annotated[list[TaskSpec], about("Its tasks.")]


@untitled
class Tasks(TypedDict):
    tasks: Documents


@untitled
class Started(TypedDict):
    task: Document | None
    context: Document | None
    injection_id: int | None


@untitled
class Finished(TypedDict):
    task: Document
    memories: Documents
    warnings: list[str]


@untitled
class Found(TypedDict):
    query: str
    degraded: bool
    reason: str | None
    hits: Documents


@untitled
class Stored(TypedDict):
    memory: Document
    created: bool
    warning: str | None


@untitled
class Plans(TypedDict):
    plans: Documents


@untitled
class Progress(TypedDict):
    plan: Document
    done: int
    total: int
    percent: float
    phases: Documents
    tasks: Documents


@untitled
class OneTask(TypedDict):
    task: Document


@untitled
class Deleted(TypedDict):
    deleted: int


@untitled
class Outlined(TypedDict):
    plan: Document
    phases: Documents
    tasks: Documents


def result(text: str, document: Document) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=pydantic_core.to_jsonable_python(document),
    )
