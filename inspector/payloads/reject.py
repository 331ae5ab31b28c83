"""The reject message on ``.../reject``: what a PLC needs to divert one NG part, small and flat.

It follows the verdict's rules (inspector/payloads/verdict.py): a ``schema`` id, a
``schema_version`` whose minor bump only adds optional fields, and a ``message_id``
subscribers de-duplicate on. Committed schema: ``inspector/schemas/reject.schema.json``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, Field

from inspector.payloads._schema import published_schema
from inspector.payloads.verdict import FrameVerdict, StationRef, _Payload

REJECT_SCHEMA_ID = "line-inspector/reject"
REJECT_SCHEMA_VERSION = "1.0"


class RejectMessage(_Payload):
    """What a PLC needs to divert one part: small, flat, and useless once ``expires_at`` has passed."""

    schema_id: Literal["line-inspector/reject"] = Field(REJECT_SCHEMA_ID, alias="schema")
    schema_version: str = REJECT_SCHEMA_VERSION
    message_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex, description="unique per reject message; de-duplicate on it"
    )
    verdict_message_id: str = Field(description="message_id of the frame verdict this reject comes from")
    station: StationRef
    part_id: str | None = None
    frame_index: int = Field(ge=0)
    source_id: str
    classes: list[str] = Field(description="defect classes found, most confident first")
    confidence: float = Field(ge=0, le=1)
    captured_at: AwareDatetime
    expires_at: AwareDatetime = Field(
        description="do not act on this reject after this time (MQTT v5 also expires it in the broker)"
    )

    @classmethod
    def from_verdict(cls, verdict: FrameVerdict, *, expiry_s: float, now: datetime | None = None) -> RejectMessage:
        # Expiry counts from when the reject was created, not from when a backlog finally sends it.
        created = now or datetime.now(UTC)
        ordered = sorted(verdict.defects, key=lambda d: d.confidence, reverse=True)
        classes = list(dict.fromkeys(d.class_name for d in ordered))
        return cls(
            verdict_message_id=verdict.message_id,
            station=verdict.station,
            part_id=verdict.source.part_id,
            frame_index=verdict.source.frame_index,
            source_id=verdict.source.id,
            classes=classes,
            confidence=verdict.confidence,
            captured_at=verdict.source.captured_at,
            expires_at=created + timedelta(seconds=expiry_s),
        )

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


def reject_json_schema() -> dict[str, object]:
    """JSON Schema of the reject message, for PLC and dashboard integrators."""
    return published_schema(RejectMessage, "reject", REJECT_SCHEMA_VERSION, "Line inspector reject message")
