"""The retained station status on ``.../status``: the birth message on connect, the MQTT Will when it dies.

Committed schema: ``inspector/schemas/status.schema.json``.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import AwareDatetime, Field

from inspector.payloads._schema import published_schema
from inspector.payloads.verdict import StationRef, _Payload
from inspector.version import __version__

STATUS_SCHEMA_ID = "line-inspector/status"
STATUS_SCHEMA_VERSION = "1.0"

StationState = Literal["online", "degraded", "offline"]


class StatusMessage(_Payload):
    """The retained station status: a birth message on connect, the Will (offline) on an unclean death."""

    schema_id: Literal["line-inspector/status"] = Field(STATUS_SCHEMA_ID, alias="schema")
    schema_version: str = STATUS_SCHEMA_VERSION
    message_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    state: StationState
    reason: str | None = Field(None, description="why the state changed, e.g. 'connection lost (MQTT Will)'")
    at: AwareDatetime = Field(description="when this status was issued (for the Will: when it was registered)")
    station: StationRef
    client_id: str
    software: str = f"line-inspector {__version__}"
    model: str | None = None
    backend: str | None = None
    precision: str | None = None
    details: dict[str, Any] = Field(default_factory=dict, description="anything else the publisher reports")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


def status_json_schema() -> dict[str, object]:
    """JSON Schema of the retained status message."""
    return published_schema(StatusMessage, "status", STATUS_SCHEMA_VERSION, "Line inspector station status")
