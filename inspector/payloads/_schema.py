"""The published JSON Schema of a payload model: by alias, with this project's ``$id`` and a title."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

SCHEMA_ID_BASE = "https://line-inspector.invalid/schemas"


def published_schema(
    model: type[BaseModel],
    name: str,
    version: str,
    title: str,
    *,
    mode: Literal["validation", "serialization"] = "serialization",
) -> dict[str, object]:
    """``model``'s JSON Schema as integrators get it: ``$id`` ``.../schemas/<name>/<version>``, ``title``."""
    schema = model.model_json_schema(by_alias=True, mode=mode)
    schema["$id"] = f"{SCHEMA_ID_BASE}/{name}/{version}"
    schema["title"] = title
    return schema
