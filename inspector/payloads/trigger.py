"""The trigger message a line controller publishes on ``{root}/{site}/{area}/{line}/{station}/trigger``.

One message per part that arrives in front of the camera. Only ``part_id`` is required::

    {"part_id": "P-000123"}
    {"schema": "line-inspector/trigger", "schema_version": "1.1",
     "part_id": "P-000123", "sequence": 123, "at": "2026-12-01T18:00:00.000Z", "frames": 3, "recipe": "red-brick"}

- ``sequence``: the controller's counter, increasing per part. A trigger whose sequence is
  not above the highest one already served is out of order: that part has passed the camera,
  so it gets an UNCERTAIN verdict saying so, never a picture of another part.
- ``at``: when the controller fired. A trigger delivered later than the station's
  ``source.trigger_timeout_s`` after ``at`` (a backlog in the broker) is answered UNCERTAIN.
- ``frames``: judge this many frames for this part (default ``source.trigger_frames``); the
  worst verdict wins.
- ``recipe``: judge this part with that product recipe (default: the station's selected one);
  an id the station does not know gets the part an UNCERTAIN verdict naming the known ones.

The committed JSON Schema is ``inspector/schemas/trigger.schema.json`` (a test keeps it in sync).
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from inspector.payloads._schema import published_schema

# Recipe ids (inspector/config.py `recipes`) travel in triggers and commands: letters, digits, _ . : -
RECIPE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"

TRIGGER_SCHEMA_ID = "line-inspector/trigger"
TRIGGER_SCHEMA_VERSION = "1.1"  # 1.1: optional `recipe`
# A part id becomes part of file names and log lines: printable, no path separators.
PART_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:#-]{0,127}$"
MAX_TRIGGER_BYTES = 4096


class TriggerRejected(ValueError):
    """A trigger payload that cannot be read; the message names the field and the rule, not the value."""


class TriggerMessage(BaseModel):
    # strict: a PLC that sends part_id 123 (a number) learns it at once instead of getting "123" silently.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    schema_id: Literal["line-inspector/trigger"] | None = Field(None, alias="schema")
    schema_version: str | None = Field(None, pattern=r"^1\.\d+$", description="1.x: this layout")
    part_id: str = Field(pattern=PART_ID_PATTERN, description="the part in front of the camera; carried by the verdict")
    sequence: int | None = Field(None, ge=0, description="the controller's per-part counter (out-of-order detection)")
    at: AwareDatetime | None = Field(None, description="when the controller fired (staleness detection)")
    frames: int | None = Field(None, ge=1, le=16, description="frames to judge for this part; the worst verdict wins")
    recipe: str | None = Field(
        None, pattern=RECIPE_ID_PATTERN, description="product recipe for this part (since 1.1); default: the selected"
    )


def parse_trigger(payload: bytes | str) -> TriggerMessage:
    """Validate one trigger payload; ``TriggerRejected`` names what is wrong (never echoing the payload)."""
    raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    if len(raw) > MAX_TRIGGER_BYTES:
        raise TriggerRejected(f"payload of {len(raw)} bytes exceeds the {MAX_TRIGGER_BYTES}-byte limit")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise TriggerRejected('payload is not a JSON object; send {"part_id": "..."}') from None
    if not isinstance(data, dict):
        raise TriggerRejected('payload must be a JSON object such as {"part_id": "P-1"}')
    try:
        return TriggerMessage.model_validate_json(raw)  # JSON mode: ISO times are times, numbers stay numbers
    except ValidationError as error:
        problems = []
        for item in error.errors():
            field = ".".join(str(part) for part in item["loc"]) or "(top level)"
            rule = "unknown key" if item["type"] == "extra_forbidden" else item["msg"].removeprefix("Value error, ")
            problems.append(f"{field}: {rule}")
        raise TriggerRejected("invalid trigger: " + "; ".join(problems)) from None


def trigger_json_schema() -> dict[str, object]:
    """JSON Schema of the trigger message, for line-controller integrators."""
    return published_schema(
        TriggerMessage, "trigger", TRIGGER_SCHEMA_VERSION, "Line inspector trigger message", mode="validation"
    )
