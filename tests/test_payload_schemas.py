"""Every wire payload: the committed JSON Schemas (inspector/schemas/) in sync with the models, and
payloads made by the real code paths valid against the COMMITTED files (never against schemas
generated from the same models in the same run).

Delivered payloads are validated where they are captured from a real broker: verdicts,
rejects, birth and Will in test_mqtt_sink.py; heartbeats and command responses of the running
edge service in test_edge_service.py.
"""

from __future__ import annotations

import argparse
import json
import string
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.commands import COMMAND_NAMES, CommandRejected, parse_command, response_payload
from inspector.commands import schema_cmd
from inspector.errors import InspectorError
from inspector.payloads.health import FrameCounts, HealthMessage, Latency, SourceHealth
from inspector.payloads.schemas import COMMITTED_DIR, SCHEMAS, committed, file_name

# Draft 2020-12 is what pydantic emits; the format checker also checks date-times where it can.
_FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(committed(name), format_checker=_FORMATS)


# -- the committed files -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_committed_schema_is_in_sync_with_its_model(name: str) -> None:
    assert committed(name) == SCHEMAS[name](), f"regenerate: inspector schema --all {COMMITTED_DIR}"


def test_every_committed_file_belongs_to_a_payload_and_is_a_valid_schema() -> None:
    assert sorted(p.name for p in COMMITTED_DIR.glob("*.schema.json")) == sorted(map(file_name, SCHEMAS))
    for name in SCHEMAS:
        schema = committed(name)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"].endswith(f"/{name}/" + schema["$id"].rsplit("/", 1)[1])  # type: ignore[union-attr]


def _schema_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="inspector")
    schema_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["schema", *argv])
    return args.func(args)


def test_schema_all_writes_exactly_the_committed_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _schema_cli("--all", str(tmp_path / "out")) == 0
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == sorted(map(file_name, SCHEMAS))  # no temporary files left behind
    for path in written:
        assert path.read_bytes() == (COMMITTED_DIR / path.name).read_bytes(), path.name
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "out" / file_name(n)) for n in SCHEMAS]


def test_schema_prints_one_payload_and_names_the_choices_for_an_unknown_one(capsys: pytest.CaptureFixture) -> None:
    assert _schema_cli() == 0
    assert json.loads(capsys.readouterr().out) == committed("frame-verdict")
    assert _schema_cli("reject") == 0
    assert json.loads(capsys.readouterr().out)["title"] == "Line inspector reject message"
    with pytest.raises(InspectorError, match="no payload named 'verdicts'") as error:
        _schema_cli("verdicts")
    assert "command-response" in (error.value.hint or "")


# -- commands: the schema says exactly what the station accepts ------------------------------

DOCUMENTED_REQUESTS: list[dict[str, Any]] = [
    {"command": "pause"},
    {"command": "resume"},
    {"command": "reload-config", "path": "/etc/line-inspector/station.yaml"},
    {"command": "reload-config", "config": {"station": {"site": "plant"}, "model": {"path": "models/tiny"}}},
    {"command": "snapshot", "label": "operator-check"},
    {"command": "snapshot"},
]


@pytest.mark.parametrize("request_body", DOCUMENTED_REQUESTS, ids=lambda r: r["command"])
def test_documented_requests_are_valid_and_accepted(request_body: dict[str, Any]) -> None:
    validator("command").validate(request_body)
    assert parse_command(json.dumps(request_body)).command == request_body["command"]


# Python's re (which jsonschema uses) lets `$` match before a final newline; ECMA-262 regexes, which
# JSON Schema specifies, and pydantic's do not. Strings here carry no newline so both read alike.
_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "_.-/ é", max_size=70)
_ANY = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.floats(allow_nan=False, allow_infinity=False), _TEXT,
    st.lists(st.integers(), max_size=2), st.dictionaries(_TEXT, st.integers(), max_size=2),
)  # fmt: skip
_GOOD = {
    "path": st.text(min_size=1, max_size=20).filter(lambda s: "\n" not in s),
    "config": st.dictionaries(_TEXT, _ANY, max_size=3),
    "label": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,66}", fullmatch=True),
}


_OWN_KEYS = {"reload-config": ("path", "config"), "snapshot": ("label",)}


@st.composite
def command_requests(draw: st.DrawFn) -> object:
    """Mostly well-formed requests of every command, each key now and then replaced by anything."""
    roll = draw(st.integers(0, 19))
    if roll == 0:
        return draw(_ANY)  # not even an object
    if roll > 3:
        name = draw(st.sampled_from(COMMAND_NAMES))
    else:
        name = draw(st.one_of(st.sampled_from(["self-destruct", ""]), _ANY))
    body: dict[str, object] = {} if roll == 1 else {"command": name}
    own = _OWN_KEYS.get(name, ()) if isinstance(name, str) else ()
    for key in ("path", "config", "label", "extra"):
        pick = draw(st.integers(0, 9))
        if key in own and pick < 6:
            body[key] = draw(_GOOD[key])
        elif pick == 0:
            body[key] = draw(_ANY)
    return body


@settings(max_examples=400, deadline=None)
@given(body=command_requests())
def test_command_schema_accepts_exactly_what_the_station_accepts(body: object) -> None:
    by_schema = validator("command").is_valid(body)
    try:
        parse_command(json.dumps(body))
        by_station = True
    except CommandRejected:
        by_station = False
    assert by_schema == by_station, body


# -- responses and heartbeats from the code that makes them ----------------------------------


def test_responses_made_by_the_edge_service_code_are_valid() -> None:
    check = validator("command-response")
    ok = json.loads(response_payload("snapshot", ok=True, result={"image": Path("/snaps/a.png"), "n": 1}))
    refused = json.loads(response_payload(None, ok=False, error="unknown command 'x'"))
    for body in (ok, refused):
        check.validate(body)
    assert ok["result"]["image"] == "/snaps/a.png" and refused["command"] is None
    bad = dict(ok, ok="yes")
    assert not check.is_valid(bad)


def test_a_heartbeat_serialised_for_the_wire_is_valid() -> None:
    beat = HealthMessage(
        at=datetime.now(UTC), state="degraded", reason="paused by command", paused=True, uptime_s=12.5, fps=0.0,
        latency=Latency(p50_ms=None, p95_ms=None),
        frames=FrameCounts(captured=10, inspected=8, errors=1, dropped=2, published=8),
        queues={"frames": 0, "verdicts": 0}, outbox={"outbox_messages": 3, "dropped": {}},
        source=SourceHealth(id="rtsp://cam/1", live=True, healthy=False, reconnects=2),
    )  # fmt: skip
    body = json.loads(beat.to_json())
    validator("health").validate(body)
    body["state"] = "sleeping"
    assert not validator("health").is_valid(body)
