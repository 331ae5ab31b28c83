"""Command requests on ``.../cmd`` (MQTT v5 request/response): a closed set of shapes.

A command is a JSON object whose ``"command"`` picks one shape (a pydantic discriminated
union; unknown keys forbidden; strict, so ``"true"`` is no bool and ``5`` no path). Validation
and dispatch live in the edge service (edge/commands.py, edge/control.py); this module says
only what a request looks like. Committed schema: ``inspector/schemas/command.schema.json``.

    {"command": "pause"}
    {"command": "resume"}
    {"command": "reload-config", "path": "/etc/line-inspector/station.yaml"}
    {"command": "reload-config", "config": {"station": {...}, "model": {...}, ...}}
    {"command": "snapshot", "label": "operator-check"}
    {"command": "select-recipe", "recipe": "red-brick"}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from inspector.payloads.trigger import RECIPE_ID_PATTERN

COMMAND_SCHEMA_VERSION = "1.1"  # 1.1: select-recipe
COMMAND_NAMES: tuple[str, ...] = ("pause", "resume", "reload-config", "snapshot", "select-recipe")


class _Command(BaseModel):
    # strict: "true" is not a bool and 5 is not a path; a typo'd key is an error, not ignored.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PauseCommand(_Command):
    """Stop inspecting (frames of live sources are dropped and counted) until ``resume``."""

    command: Literal["pause"]


class ResumeCommand(_Command):
    command: Literal["resume"]


class ReloadConfigCommand(_Command):
    """Replace the station config between frames; exactly one of ``path`` or ``config``."""

    command: Literal["reload-config"]
    path: str | None = Field(None, min_length=1, max_length=4096, description="YAML file on the edge box")
    config: dict[str, Any] | None = Field(None, description="the whole station config, inline")

    @model_validator(mode="after")
    def _exactly_one(self) -> ReloadConfigCommand:
        if (self.path is None) == (self.config is None):
            raise ValueError("give exactly one of 'path' (a YAML file on the edge box) or 'config' (inline object)")
        return self


class SnapshotCommand(_Command):
    """Save the current frame (PNG) and its verdict (JSON) to the snapshot directory."""

    command: Literal["snapshot"]
    label: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="added to the file names")


class SelectRecipeCommand(_Command):
    """Judge the parts triggered from now on with another product recipe (station config ``recipes``)."""

    command: Literal["select-recipe"]
    recipe: str = Field(pattern=RECIPE_ID_PATTERN, description="a recipe id of the station config")


CommandPayload = Annotated[
    PauseCommand | ResumeCommand | ReloadConfigCommand | SnapshotCommand | SelectRecipeCommand,
    Field(discriminator="command"),
]
COMMAND_ADAPTER: TypeAdapter[CommandPayload] = TypeAdapter(CommandPayload)


def command_json_schema() -> dict[str, object]:
    """JSON Schema of a command request.

    "Exactly one of path or config" is expressed with ``oneOf``: pydantic cannot derive it
    from the validator, and a schema that accepted both would let integrators send requests
    the station refuses.
    """
    schema = COMMAND_ADAPTER.json_schema(mode="validation")
    reload = schema["$defs"]["ReloadConfigCommand"]  # type: ignore[index]
    reload["oneOf"] = [
        {"required": ["path"], "properties": {"path": {"type": "string"}}},
        {"required": ["config"], "properties": {"config": {"type": "object"}}},
    ]
    schema["$id"] = f"https://line-inspector.invalid/schemas/command/{COMMAND_SCHEMA_VERSION}"
    schema["title"] = "Line inspector command request"
    return schema
