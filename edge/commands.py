"""Command payloads on ``.../cmd``: validated before anything acts on them, answered with a response.

A command is a JSON object whose ``"command"`` picks one of a closed set of shapes
(a pydantic discriminated union, unknown keys forbidden, no type coercion). The size is
checked before parsing, so an oversized payload costs nothing. ``parse_command`` raises
``CommandRejected`` with one readable message; the caller turns it into an error response
and changes nothing.

Request examples::

    {"command": "pause"}
    {"command": "resume"}
    {"command": "reload-config", "path": "/etc/line-inspector/station.yaml"}
    {"command": "reload-config", "config": {"station": {...}, "model": {...}, ...}}
    {"command": "snapshot", "label": "operator-check"}

Response (on the request's MQTT v5 response topic, correlation data echoed)::

    {"schema": "line-inspector/command-response", "schema_version": "1.0",
     "ok": true, "command": "snapshot", "error": null, "result": {...}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

RESPONSE_SCHEMA_ID = "line-inspector/command-response"
RESPONSE_SCHEMA_VERSION = "1.0"
# A station config is a few KiB; anything near this bound is a mistake or an attack.
MAX_COMMAND_BYTES = 64 * 1024
COMMAND_NAMES: tuple[str, ...] = ("pause", "resume", "reload-config", "snapshot")


class CommandRejected(Exception):
    """A command that must not run: malformed, unknown, invalid, or refused by the service."""

    def __init__(self, message: str, command: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.command = command


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


Command = Annotated[
    PauseCommand | ResumeCommand | ReloadConfigCommand | SnapshotCommand, Field(discriminator="command")
]
_COMMAND = TypeAdapter(Command)


def _reject_constant(name: str) -> float:
    # NaN / Infinity are not JSON; Python's parser accepts them unless told otherwise.
    raise ValueError(f"{name} is not valid JSON")


def parse_command(payload: bytes | bytearray | str, *, max_bytes: int = MAX_COMMAND_BYTES) -> Command:
    """Validate one command payload; raises ``CommandRejected`` naming the problem."""
    raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    if len(raw) > max_bytes:
        raise CommandRejected(f"payload of {len(raw)} bytes exceeds the {max_bytes}-byte limit")
    if not raw.strip():
        raise CommandRejected('empty payload; send a JSON object such as {"command": "pause"}')
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CommandRejected(f"payload is not UTF-8 text (byte {error.start})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise CommandRejected(f"payload is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise CommandRejected(f"payload must be a JSON object, got {_json_type(data)}")
    name = data.get("command")
    if name is None:
        raise CommandRejected(f"missing key 'command'; one of {', '.join(COMMAND_NAMES)}")
    if not isinstance(name, str):
        raise CommandRejected(f"'command' must be a string, got {_json_type(name)}")
    if name not in COMMAND_NAMES:
        raise CommandRejected(f"unknown command {name[:64]!r}; one of {', '.join(COMMAND_NAMES)}", None)
    try:
        return _COMMAND.validate_python(data)
    except ValidationError as error:
        raise CommandRejected(_describe(error), name) from None


def check_accepted(command: Command, accepted: Collection[str]) -> None:
    """Refuse a valid command this station does not take over MQTT (``edge.mqtt_commands``)."""
    if command.command not in accepted:
        allowed = ", ".join(name for name in COMMAND_NAMES if name in accepted) or "none"
        raise CommandRejected(
            f"command {command.command!r} is not accepted over MQTT by this station (edge.mqtt_commands: {allowed})",
            command.command,
        )


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        # Drop the union tag pydantic puts first in the location: the user wrote no such key.
        loc = [str(part) for part in item["loc"][1:]]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return "invalid command: " + "; ".join(problems)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def response_payload(
    command: str | None, *, ok: bool, error: str | None = None, result: dict[str, Any] | None = None
) -> bytes:
    """The JSON response body; ``command`` is None when the request named no known command."""
    body = {
        "schema": RESPONSE_SCHEMA_ID,
        "schema_version": RESPONSE_SCHEMA_VERSION,
        "ok": ok,
        "command": command,
        "error": error,
        "result": result or {},
    }
    return json.dumps(body, separators=(",", ":"), default=str).encode("utf-8")
