"""The heartbeat on ``.../health`` (QoS 0, not retained), also the body of the edge service's ``/healthz``.

Committed schema: ``inspector/schemas/health.schema.json``. edge/health.py derives the state
and the figures; this module only says what the message looks like.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from inspector.payloads._schema import published_schema
from inspector.payloads.status import StationState

HEALTH_SCHEMA_ID = "line-inspector/health"
HEALTH_SCHEMA_VERSION = "1.1"  # 1.1: frames.failed/spilled/lost/failing_streak, sink_failures


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FrameCounts(_Message):
    captured: int = Field(description="frames taken from the source")
    inspected: int = Field(description="frames given a verdict (including error verdicts)")
    errors: int = Field(description="frames whose inspection failed (UNCERTAIN with an error)")
    dropped: int = Field(description="frames never inspected: stale live frames, queue overflow, pause")
    published: int = Field(description="verdicts every sink took")
    failed: int = Field(0, description="verdicts some sink refused after its retries (kept in the spill file)")
    spilled: int = Field(0, description="failed verdicts kept in edge.spill_file")
    lost: int = Field(0, description="verdicts neither delivered nor kept (spill file failed, publisher gone)")
    failing_streak: int = Field(
        0, description="verdicts in a row that failed: inspection errors or refused by a sink (edge.degraded_after)"
    )


class Latency(_Message):
    p50_ms: float | None
    p95_ms: float | None


class SourceHealth(_Message):
    id: str | None
    live: bool
    healthy: bool
    reconnects: int


class HealthMessage(_Message):
    """The heartbeat on ``.../health`` (QoS 0, not retained) and the body of ``/healthz``."""

    schema_id: Literal["line-inspector/health"] = Field(HEALTH_SCHEMA_ID, alias="schema")
    schema_version: str = HEALTH_SCHEMA_VERSION
    message_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    at: AwareDatetime
    state: StationState
    reason: str | None = None
    paused: bool
    uptime_s: float
    fps: float = Field(description="frames inspected per second since the previous heartbeat")
    latency: Latency
    frames: FrameCounts
    queues: dict[str, int] = Field(description="current depth of each bounded queue")
    outbox: dict[str, Any] = Field(default_factory=dict, description="MQTT outbox depth and drop counters")
    source: SourceHealth
    gpu: dict[str, Any] | None = Field(None, description="GPU memory in bytes where the model runs on a GPU")
    rss_bytes: int | None = Field(None, description="resident memory of the service process")
    sink_failures: dict[str, int] = Field(default_factory=dict, description="calls that raised, per sink type")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


def health_json_schema() -> dict[str, object]:
    """JSON Schema of the heartbeat."""
    return published_schema(HealthMessage, "health", HEALTH_SCHEMA_VERSION, "Line inspector station heartbeat")
