"""Verdict payloads: the stable, versioned JSON that JSONL files and MQTT subscribers get.

Compatibility rule for ``SCHEMA_VERSION``: a minor bump only adds optional fields; a
major bump renames, removes or retypes one. ``inspector schema`` prints the JSON Schema;
``inspector/schemas/frame-verdict.schema.json`` is the committed copy a test keeps in sync.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from inspector.payloads._schema import published_schema

SCHEMA_ID = "line-inspector/frame-verdict"
SCHEMA_VERSION = "1.2"  # 1.1: optional `evidence`, `model.demo_model`; 1.2: optional `recipe`

Verdict = Literal["OK", "NG", "UNCERTAIN"]
BBox = tuple[int, int, int, int]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class StationRef(_Payload):
    site: str
    area: str
    line: str
    station: str
    camera: str


class SourceRef(_Payload):
    id: str = Field(description="source identifier (file path, camera index or URL without credentials)")
    frame_index: int = Field(ge=0, description="frame number within the source; increases monotonically")
    captured_at: AwareDatetime = Field(description="capture time, UTC")
    part_id: str | None = None


class ModelRef(_Payload):
    id: str = Field(description="checkpoint directory name or hub id")
    backend: Literal["torch", "onnxruntime", "tensorrt"]
    precision: str = Field(description="float32, bfloat16, float16, fp8 ...")
    random_weights: bool = Field(
        description="true for the tiny random test model: its verdicts carry no meaning about the parts"
    )
    demo_model: bool = Field(
        False,
        description="true for a DEMO model (`inspector train` on a tiny random model and synthetic footage): "
        "it was trained, but on toy data at toy size, never a real checkpoint (since 1.1)",
    )


class Defect(_Payload):
    class_name: str = Field(alias="class", description="defect class from the station's taxonomy")
    confidence: float = Field(ge=0, le=1)
    bbox: BBox = Field(description="[x0, y0, x1, y1) in frame pixels")
    tiles: list[int] = Field(description="indices of the tiles merged into this defect")
    explanation: str | None = None


class TileVerdict(_Payload):
    """One tile's answer: a probability per class (they sum to 1) and an optional explanation."""

    index: int = Field(ge=0)
    bbox: BBox
    is_global: bool = Field(False, description="the whole frame downscaled to one tile")
    probabilities: dict[str, float]
    explanation: str | None = None

    @property
    def top_class(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)


class Timings(_Payload):
    preprocess_ms: float = 0.0
    vision_ms: float = 0.0
    prefill_ms: float = 0.0
    explain_ms: float = 0.0
    total_ms: float = 0.0


class FrameVerdict(_Payload):
    """The verdict for one frame: OK, NG or UNCERTAIN, with the defects found."""

    schema_id: Literal["line-inspector/frame-verdict"] = Field(SCHEMA_ID, alias="schema")
    schema_version: str = SCHEMA_VERSION
    message_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex, description="unique per verdict; subscribers de-duplicate on it"
    )
    station: StationRef
    source: SourceRef
    verdict: Verdict
    confidence: float = Field(ge=0, le=1, description="probability behind the verdict")
    defects: list[Defect] = Field(default_factory=list)
    model: ModelRef
    recipe: str | None = Field(
        None, description="id of the product recipe the frame was judged with (station config `recipes`; since 1.2)"
    )
    timings: Timings = Timings()
    error: str | None = Field(None, description="set when the frame could not be judged (verdict UNCERTAIN)")
    evidence: str | None = Field(
        None, description="path, on the edge box, of the JPEG with the defects drawn (NG and UNCERTAIN verdicts)"
    )
    tiles: list[TileVerdict] | None = Field(None, description="per-tile probabilities (JSONL only, omitted on MQTT)")

    def to_json(self, *, include_tiles: bool = True) -> str:
        exclude = None if include_tiles else {"tiles"}
        return self.model_dump_json(by_alias=True, exclude=exclude)

    @property
    def captured_at(self) -> datetime:
        return self.source.captured_at


def json_schema() -> dict[str, object]:
    """The JSON Schema dashboards validate against (by alias, as serialised)."""
    return published_schema(FrameVerdict, "frame-verdict", SCHEMA_VERSION, "Line inspector frame verdict")
