"""Command payload validation (edge/commands.py): every malformed request is a clear rejection."""

from __future__ import annotations

import json

import pytest

from edge.commands import (
    MAX_COMMAND_BYTES,
    CommandRejected,
    PauseCommand,
    ReloadConfigCommand,
    SnapshotCommand,
    parse_command,
    response_payload,
)

# (payload, words the error must contain, the command the rejection is attributed to)
MALFORMED: list[tuple[bytes, str, str | None]] = [
    (b"", "empty payload", None),
    (b"   \n", "empty payload", None),
    (b"not json", "not valid JSON", None),
    (b'{"command": "pause"', "not valid JSON", None),
    (b"\xff\xfe\x00", "not UTF-8", None),
    (b'{"command": NaN}', "not valid JSON", None),
    (b"null", "must be a JSON object, got null", None),
    (b"[1, 2]", "must be a JSON object, got an array", None),
    (b'"pause"', "must be a JSON object, got a string", None),
    (b"42", "must be a JSON object, got a number", None),
    (b"{}", "missing key 'command'", None),
    (b'{"command": 5}', "'command' must be a string", None),
    (b'{"command": ["pause"]}', "'command' must be a string", None),
    (b'{"command": "explode"}', "unknown command 'explode'", None),
    (b'{"command": "PAUSE"}', "unknown command 'PAUSE'", None),
    (b'{"command": "pause", "force": true}', "force: unknown key", "pause"),
    (b'{"command": "resume", "now": 1}', "now: unknown key", "resume"),
    (b'{"command": "snapshot", "label": 7}', "label", "snapshot"),
    (b'{"command": "snapshot", "label": "../../etc/passwd"}', "label", "snapshot"),
    (b'{"command": "snapshot", "label": ""}', "label", "snapshot"),
    (b'{"command": "reload-config"}', "exactly one of 'path'", "reload-config"),
    (b'{"command": "reload-config", "path": "a.yaml", "config": {}}', "exactly one of 'path'", "reload-config"),
    (b'{"command": "reload-config", "path": 42}', "path", "reload-config"),
    (b'{"command": "reload-config", "path": ""}', "path", "reload-config"),
    (b'{"command": "reload-config", "config": "tiling: {tile: 512}"}', "config", "reload-config"),
    (b'{"command": "reload-config", "config": [1]}', "config", "reload-config"),
]


@pytest.mark.parametrize(("payload", "words", "command"), MALFORMED, ids=[repr(p[0][:40]) for p in MALFORMED])
def test_malformed_commands_are_rejected_with_a_reason(payload: bytes, words: str, command: str | None) -> None:
    with pytest.raises(CommandRejected) as caught:
        parse_command(payload)
    assert words in caught.value.message
    assert caught.value.command == command


def test_oversized_payload_is_rejected_before_parsing() -> None:
    # Valid JSON, but over the limit: the size alone decides, nothing is parsed.
    payload = json.dumps({"command": "reload-config", "config": {"x": "y" * MAX_COMMAND_BYTES}}).encode()
    with pytest.raises(CommandRejected, match=r"exceeds the 65536-byte limit"):
        parse_command(payload)


def test_valid_commands_parse() -> None:
    assert isinstance(parse_command(b'{"command": "pause"}'), PauseCommand)
    snap = parse_command('{"command": "snapshot", "label": "shift-2.check"}')
    assert isinstance(snap, SnapshotCommand) and snap.label == "shift-2.check"
    reload = parse_command(b'{"command": "reload-config", "path": "configs/demo.yaml"}')
    assert isinstance(reload, ReloadConfigCommand) and reload.path == "configs/demo.yaml" and reload.config is None
    inline = parse_command(b'{"command": "reload-config", "config": {"model": {"path": "m"}}}')
    assert isinstance(inline, ReloadConfigCommand) and inline.config == {"model": {"path": "m"}}


def test_response_payload_shape() -> None:
    body = json.loads(response_payload("pause", ok=False, error="nope"))
    assert body == {
        "schema": "line-inspector/command-response",
        "schema_version": "1.0",
        "ok": False,
        "command": "pause",
        "error": "nope",
        "result": {},
    }
    assert json.loads(response_payload("snapshot", ok=True, result={"image": "a.png"}))["result"] == {"image": "a.png"}
