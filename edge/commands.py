"""Command payloads on ``.../cmd``: validated before anything acts on them, answered with a response.

A command is a JSON object whose ``"command"`` picks one of a closed set of shapes
(inspector/payloads/command.py: a pydantic discriminated union, unknown keys forbidden, no
type coercion; the response is inspector/payloads/response.py). The size is
checked before parsing, so an oversized payload costs nothing. ``parse_command`` raises
``CommandRejected`` with one readable message; the caller turns it into an error response
and changes nothing.

Request examples::

    {"command": "pause"}
    {"command": "resume"}
    {"command": "reload-config", "path": "/etc/line-inspector/station.yaml"}
    {"command": "reload-config", "config": {"station": {...}, "model": {...}, ...}}
    {"command": "snapshot", "label": "operator-check"}
    {"command": "select-recipe", "recipe": "red-brick"}

Response (on the request's MQTT v5 response topic, correlation data echoed)::

    {"schema": "line-inspector/command-response", "schema_version": "1.0",
     "ok": true, "command": "snapshot", "error": null, "result": {...}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Any

from pydantic import ValidationError

# The request and response payloads live with every other wire message, in inspector/payloads/.
from inspector.payloads.command import (  # noqa: F401 - re-exported for edge modules
    COMMAND_ADAPTER,
    COMMAND_NAMES,
    PauseCommand,
    ReloadConfigCommand,
    ResumeCommand,
    SelectRecipeCommand,
    SnapshotCommand,
)
from inspector.payloads.command import CommandPayload as Command
from inspector.payloads.response import RESPONSE_SCHEMA_ID, RESPONSE_SCHEMA_VERSION, CommandResponse  # noqa: F401

# A station config is a few KiB; anything near this bound is a mistake or an attack.
MAX_COMMAND_BYTES = 64 * 1024


class CommandRejected(Exception):
    """A command that must not run: malformed, unknown, invalid, or refused by the service."""

    def __init__(self, message: str, command: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.command = command


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
        return COMMAND_ADAPTER.validate_python(data)
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
    return CommandResponse(ok=ok, command=command, error=error, result=result or {}).to_bytes()
