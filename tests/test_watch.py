"""`inspector watch` against a real Mosquitto: live verdicts, schema validation, malformed payloads flagged."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from inspector.commands import watch
from inspector.config import MqttConfig, ReconnectConfig, StationConfig
from inspector.errors import InspectorError
from inspector.mqtt import MqttConnectError, MqttSink, Topics
from inspector.payloads.verdict import Defect, FrameVerdict, ModelRef, SourceRef, StationRef

from mosquitto import Mosquitto, free_port

STATION = StationConfig(site="plant", area="assembly", line="line-1", station="st-1", camera="cam0")
OTHER = StationConfig(site="plant", area="assembly", line="line-2", station="st-9", camera="cam0")

# `inspector watch ...` exactly as the CLI runs it (parser from register(), InspectorError -> exit 2),
# without depending on every other subcommand being importable.
_WATCH_MAIN = """
import argparse, sys
from inspector.commands import watch
from inspector.errors import InspectorError
parser = argparse.ArgumentParser(prog="inspector")
watch.register(parser.add_subparsers())
args = parser.parse_args(["watch", *sys.argv[1:]])
try:
    sys.exit(args.func(args))
except InspectorError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
"""


def make_verdict(i: int, verdict: str = "OK", station: StationConfig = STATION) -> FrameVerdict:
    defects = [Defect(class_name="dent", confidence=0.88, bbox=(0, 0, 32, 32), tiles=[0])] if verdict == "NG" else []
    return FrameVerdict(
        message_id=f"w{i:04d}",
        station=StationRef(**station.model_dump()),
        source=SourceRef(id="cam0", frame_index=i, captured_at=datetime.now(UTC), part_id=f"P{i}"),
        verdict=verdict,  # type: ignore[arg-type]
        confidence=0.88,
        defects=defects,
        model=ModelRef(id="tiny-random", backend="torch", precision="float32", random_weights=True),
    )


class Watch:
    """`inspector watch ARGS` in a subprocess; ready once it has printed that it is watching.

    Both streams are read as they come (the child is unbuffered), so a test waits on what the
    watcher has actually printed, never on a guessed sleep.
    """

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WATCH_MAIN, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={"COLUMNS": "200", **_env(), "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        self._printed = threading.Condition()  # notified on every line of either stream
        self._ended = 0  # streams read to their end (the process is gone once both are)
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stderr, self.stderr), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stdout, self.stdout), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        self.wait_for(lambda: any(line.startswith(("watching ", "error:")) for line in self.stderr), "subscribed")
        assert any(line.startswith("watching ") for line in self.stderr), self.stderr

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            with self._printed:
                lines.append(line.rstrip("\n"))
                self._printed.notify_all()
        with self._printed:
            self._ended += 1
            self._printed.notify_all()  # end of stream: let a waiter see that the process is gone

    def wait_for(self, condition, what: str, timeout_s: float = 30) -> None:
        """Wait until ``condition()`` holds for what the watcher printed; fail naming ``what`` otherwise."""
        with self._printed:
            if not self._printed.wait_for(lambda: condition() or self._ended == 2, timeout_s):
                self.process.kill()
                raise AssertionError(f"watch never {what} within {timeout_s} s: {self.stderr}")
        assert condition(), f"watch exited before it {what}: {self.stderr}"

    def finish(self, timeout_s: float = 60) -> tuple[int, str, str]:
        code = self.process.wait(timeout_s)
        for reader in self._readers:
            reader.join(timeout_s)
        return code, "\n".join(self.stdout) + ("\n" if self.stdout else ""), "\n".join(self.stderr)


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as started:
        yield started


def raw_publish(port: int, items: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    for topic, payload in items:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def sink(port: int, tmp_path: Path, station: StationConfig = STATION, root: str = "inspector") -> MqttSink:
    config = MqttConfig(host="127.0.0.1", port=port, topic_root=root, outbox=tmp_path / f"{uuid.uuid4().hex}.sqlite",
                        reconnect=ReconnectConfig(initial_s=0.1, max_s=0.5))  # fmt: skip
    return MqttSink(config, station, birth={"model": "tiny-random", "backend": "torch", "precision": "float32"})


def test_json_mode_prints_valid_payloads_and_flags_malformed_ones(broker: Mosquitto, tmp_path: Path) -> None:
    # birth + 4 verdicts + 1 reject + offline on close + 2 malformed = 9 (the duplicate is not counted)
    watcher = Watch(broker.url, "--json", "--count", "9", "--timeout", "60")
    with sink(broker.port, tmp_path) as publisher:
        verdicts = [make_verdict(i, "NG" if i == 1 else "OK") for i in range(4)]
        for verdict in verdicts:
            publisher.publish(verdict)
        assert publisher.wait_drained(30)
    topic = Topics.for_station("inspector", STATION).verdict
    raw_publish(broker.port, [
        (topic, verdicts[0].to_json(include_tiles=False).encode()),  # a re-delivery: shown once
        (topic, b'{"schema": "line-inspector/frame-verdict", "verdict": "MAYBE"}'),
        (topic, b"not json at all"),
    ])  # fmt: skip
    code, out, err = watcher.finish()

    assert code == 1, err  # malformed payloads make the exit status 1
    payloads = [json.loads(line) for line in out.splitlines()]
    assert [p["message_id"] for p in payloads if p["schema"] == "line-inspector/frame-verdict"] == [
        v.message_id for v in verdicts
    ]
    assert [p["verdict_message_id"] for p in payloads if p["schema"] == "line-inspector/reject"] == ["w0001"]
    assert [p["state"] for p in payloads if p["schema"] == "line-inspector/status"] == ["online", "offline"]
    assert err.count("MALFORMED") == 2 and "verdict: Input should be 'OK', 'NG' or 'UNCERTAIN'" in err
    assert "Invalid JSON" in err and "1 duplicate" in err


def test_watch_reconnects_with_back_off_when_the_broker_restarts(broker: Mosquitto) -> None:
    watcher = Watch(broker.url, "--json", "--count", "4", "--timeout", "60")
    topic = Topics.for_station("inspector", STATION).verdict
    raw_publish(broker.port, [(topic, make_verdict(i).to_json(include_tiles=False).encode()) for i in range(2)])
    watcher.wait_for(lambda: len(watcher.stdout) >= 2, "printed the first two")  # before the broker dies
    broker.restart()  # SIGKILL, then the same port again
    watcher.wait_for(lambda: any("reconnected" in line for line in watcher.stderr), "reconnected")
    raw_publish(broker.port, [(topic, make_verdict(i).to_json(include_tiles=False).encode()) for i in range(2, 4)])
    code, out, err = watcher.finish()
    assert code == 0, err
    assert [json.loads(line)["message_id"] for line in out.splitlines()] == ["w0000", "w0001", "w0002", "w0003"]
    assert "connection lost; reconnecting" in err


def test_table_from_a_config_file_shows_only_the_chosen_line(broker: Mosquitto, tmp_path: Path) -> None:
    station_file = tmp_path / "station.yaml"
    station_file.write_text(yaml.safe_dump({
        "model": {"path": "models/tiny"},
        "inspection": {"product": "a part", "defects": {"dent": {"description": "a dent"}}},
        "sinks": {"mqtt": {"host": "127.0.0.1", "port": broker.port, "topic_root": "acme/plant"}},
    }))  # fmt: skip
    watcher = Watch("--config", str(station_file), "--line", "line-1", "--count", "3", "--timeout", "60")
    with sink(broker.port, tmp_path, OTHER, root="acme/plant") as elsewhere:  # another line: filtered out
        elsewhere.publish(make_verdict(7, "NG", OTHER))
        assert elsewhere.wait_drained(30)
    with sink(broker.port, tmp_path, root="acme/plant") as publisher:
        publisher.publish(make_verdict(1, "NG"))
        assert publisher.wait_drained(30)
    code, out, err = watcher.finish()

    assert code == 0, err
    assert "line-1/st-1" in out and "line-2" not in out
    assert "status online" in out and "tiny-random torch/float32" in out
    verdict_line = next(line for line in out.splitlines() if " NG " in line)
    assert "#1 P1" in verdict_line and "dent 0.88" in verdict_line and "(random)" in verdict_line
    assert any("REJECT" in line and "dent" in line for line in out.splitlines())


def test_timeout_before_count_is_exit_status_1(broker: Mosquitto) -> None:
    code, _, err = Watch(broker.url, "--count", "1", "--timeout", "0.5").finish()
    assert code == 1 and "0 of 1" in err


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    watch.register(parser.add_subparsers())
    return parser.parse_args(["watch", *argv])


def test_unreachable_broker_and_missing_target_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(MqttConnectError, match="connection refused"):
        watch.run(_args(f"mqtt://127.0.0.1:{free_port()}", "--count", "1"))
    with pytest.raises(InspectorError, match="give a broker URL or --config"):
        watch.run(_args())
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({
        "model": {"path": "m"}, "inspection": {"product": "p", "defects": {"dent": {"description": "d"}}},
    }))  # fmt: skip
    with pytest.raises(InspectorError, match="no sinks.mqtt section"):
        watch.run(_args("--config", str(tmp_path / "s.yaml")))


def test_validation_rejects_extra_fields_and_other_major_versions() -> None:
    good = json.loads(make_verdict(1).to_json(include_tiles=False))
    assert watch.validate_payload("verdict", json.dumps(good).encode())[1] is None
    extra = {**good, "surprise": 1}
    assert "surprise" in (watch.validate_payload("verdict", json.dumps(extra).encode())[1] or "")
    newer = {**good, "schema_version": "2.0"}
    assert "is not 1.x" in (watch.validate_payload("verdict", json.dumps(newer).encode())[1] or "")
    minor = {**good, "schema_version": "1.7"}
    assert watch.validate_payload("verdict", json.dumps(minor).encode())[1] is None
