"""The verdict payload: committed JSON Schema in sync, real payloads valid against it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from inspector.payloads.verdict import SCHEMA_VERSION, Defect, FrameVerdict, ModelRef, SourceRef, StationRef, json_schema

COMMITTED = Path(__file__).resolve().parents[1] / "inspector" / "schemas" / "frame-verdict.schema.json"


def _verdict(**changes) -> FrameVerdict:
    fields = dict(
        station=StationRef(site="s", area="a", line="l", station="st", camera="c"),
        source=SourceRef(id="clip.mp4", frame_index=3, captured_at=datetime(2026, 1, 1, tzinfo=UTC)),
        verdict="NG",
        confidence=0.9,
        defects=[Defect(class_name="scratch", confidence=0.9, bbox=(0, 0, 512, 512), tiles=[0, 1])],
        model=ModelRef(id="tiny", backend="torch", precision="float32", random_weights=True),
    )
    fields.update(changes)
    return FrameVerdict(**fields)


def test_committed_schema_is_in_sync() -> None:
    """Regenerate with: inspector schema > inspector/schemas/frame-verdict.schema.json"""
    assert json.loads(COMMITTED.read_text()) == json_schema()


def test_payload_validates_against_schema() -> None:
    payload = json.loads(_verdict().to_json())
    jsonschema.validate(payload, json_schema())
    assert payload["schema"] == "line-inspector/frame-verdict"
    assert payload["schema_version"] == SCHEMA_VERSION
    assert payload["defects"][0]["class"] == "scratch"


def test_mqtt_form_omits_tiles_and_still_validates() -> None:
    payload = json.loads(_verdict().to_json(include_tiles=False))
    assert "tiles" not in payload
    jsonschema.validate(payload, json_schema())


def test_round_trip() -> None:
    original = _verdict()
    assert FrameVerdict.model_validate_json(original.to_json()) == original


def test_naive_capture_time_rejected() -> None:
    with pytest.raises(ValidationError):
        SourceRef(id="x", frame_index=0, captured_at=datetime(2026, 1, 1))


def test_schema_rejects_unknown_verdict() -> None:
    payload = json.loads(_verdict().to_json())
    payload["verdict"] = "MAYBE"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, json_schema())


def test_message_ids_unique() -> None:
    assert _verdict().message_id != _verdict().message_id
