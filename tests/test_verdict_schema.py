"""The verdict payload: real payloads valid against the committed JSON Schema (in sync: test_payload_schemas.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest
from pydantic import ValidationError

from inspector.payloads.schemas import committed
from inspector.payloads.verdict import SCHEMA_VERSION, Defect, FrameVerdict, ModelRef, SourceRef, StationRef

COMMITTED = committed("frame-verdict")


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


def test_payload_validates_against_schema() -> None:
    payload = json.loads(_verdict().to_json())
    jsonschema.validate(payload, COMMITTED)
    assert payload["schema"] == "line-inspector/frame-verdict"
    assert payload["schema_version"] == SCHEMA_VERSION
    assert payload["defects"][0]["class"] == "scratch"


def test_mqtt_form_omits_tiles_and_still_validates() -> None:
    payload = json.loads(_verdict().to_json(include_tiles=False))
    assert "tiles" not in payload
    jsonschema.validate(payload, COMMITTED)


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
        jsonschema.validate(payload, COMMITTED)


def test_message_ids_unique() -> None:
    assert _verdict().message_id != _verdict().message_id
