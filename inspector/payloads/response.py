"""The answer to a command, on the request's MQTT v5 response topic with its correlation data echoed.

    {"schema": "line-inspector/command-response", "schema_version": "1.0",
     "ok": true, "command": "snapshot", "error": null, "result": {...}}

Committed schema: ``inspector/schemas/command-response.schema.json``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from inspector.payloads._schema import published_schema
from inspector.payloads.verdict import _Payload

RESPONSE_SCHEMA_ID = "line-inspector/command-response"
RESPONSE_SCHEMA_VERSION = "1.0"


class CommandResponse(_Payload):
    """Whether the command ran, and what it did or why not."""

    schema_id: Literal["line-inspector/command-response"] = Field(RESPONSE_SCHEMA_ID, alias="schema")
    schema_version: str = RESPONSE_SCHEMA_VERSION
    ok: bool
    command: str | None = Field(description="the command answered; null when the request named no known command")
    error: str | None = Field(None, description="why it was refused or failed; never echoes values it read")
    result: dict[str, Any] = Field(default_factory=dict, description="what the command did (command-specific)")

    def to_bytes(self) -> bytes:
        # json.dumps with default=str: a result may carry paths or datetimes from the service.
        body = self.model_dump(by_alias=True)
        return json.dumps(body, separators=(",", ":"), default=str).encode("utf-8")


def response_json_schema() -> dict[str, object]:
    """JSON Schema of a command response."""
    return published_schema(
        CommandResponse, "command-response", RESPONSE_SCHEMA_VERSION, "Line inspector command response"
    )
