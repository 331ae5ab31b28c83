"""MqttSink against real Mosquitto brokers: delivery through broker and publisher crashes, errors, TLS, status.

Also run as a script by the crash tests: ``python tests/test_mqtt_sink.py publish --port P --outbox F ...``
is a publisher process they can SIGKILL.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from inspector.config import MqttConfig, MqttTLSConfig, ReconnectConfig, StationConfig
from inspector.errors import ConfigError, InspectorError
from inspector.mqtt import Command, MqttSink
from inspector.mqtt.connection import MqttConnectError, check_connection, resolve_password
from inspector.mqtt.topics import Topics, split_topic, watch_filters
from inspector.mqtt.url import mqtt_config_from_url, redact_url
from inspector.payloads.schemas import committed
from inspector.payloads.verdict import SCHEMA_VERSION, Defect, FrameVerdict, ModelRef, SourceRef, StationRef
from inspector.sinks.base import Sink

from mosquitto import Mosquitto, free_port, make_tls_files, mosquitto_binary

HOST = "127.0.0.1"
STATION = StationConfig(site="plant", area="assembly", line="line-1", station="st-1", camera="cam0")
TOPICS = Topics.for_station("inspector", STATION)
BIRTH = {"model": "tiny-random", "backend": "torch", "precision": "float32"}
_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_verdict(i: int, verdict: str = "OK") -> FrameVerdict:
    """Deterministic: the same i gives the same bytes, so a re-send is recognisable as one."""
    defects = []
    if verdict == "NG":
        defects = [Defect(class_name="scratch", confidence=0.91, bbox=(10, 10, 60, 60), tiles=[3])]
    return FrameVerdict(
        message_id=f"v{i:06d}",
        station=StationRef(**STATION.model_dump()),
        source=SourceRef(id="cam0", frame_index=i, captured_at=_T0 + timedelta(milliseconds=i), part_id=f"P{i}"),
        verdict=verdict,  # type: ignore[arg-type]
        confidence=0.91 if verdict == "NG" else 0.97,
        defects=defects,
        model=ModelRef(id="tiny-random", backend="torch", precision="float32", random_weights=True),
    )


def sink_config(port: int, outbox: Path, **update: object) -> MqttConfig:
    base = MqttConfig(host=HOST, port=port, outbox=outbox, reconnect=ReconnectConfig(initial_s=0.1, max_s=0.5))
    return base.model_copy(update=update) if update else base


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


# -- a subscriber that records everything ----------------------------------------------------


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    properties: dict[str, object]

    def json(self) -> dict:
        return json.loads(self.payload)


class Collector:
    """A paho subscriber (v5 or 3.1.1), optionally with a persistent session, re-subscribing on every connect."""

    def __init__(
        self,
        port: int,
        filters: list[str],
        *,
        client_id: str | None = None,
        persistent: bool = False,
        protocol: str = "5",
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.port, self.filters, self.persistent = port, filters, persistent
        self.v5 = protocol == "5"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"collector-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            **({} if self.v5 else {"clean_session": not persistent}),
        )
        self.client.reconnect_delay_set(0.05, 0.5)
        if username:
            self.client.username_pw_set(username, password)
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if not getattr(reason, "is_failure", False):
            client.subscribe([(f, 1) for f in self.filters])

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        props = message.properties.json() if self.v5 and message.properties else {}
        with self.lock:
            self.messages.append(Received(message.topic, bytes(message.payload), bool(message.retain), props))

    def start(self) -> Collector:
        kwargs: dict[str, object] = {}
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            if self.persistent:
                props.SessionExpiryInterval = 3600
            kwargs = {"clean_start": not self.persistent, "properties": props}
        self.client.connect(HOST, self.port, 10, **kwargs)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber got no SUBACK"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def received(self, leaf: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if m.topic.endswith("/" + leaf)]

    def ids(self, leaf: str = "verdict") -> list[str]:
        return [m.json()["message_id"] for m in self.received(leaf)]


@pytest.fixture
def cleanup() -> Iterator[list]:
    """Things with stop()/close() to release even when the test fails."""
    things: list = []
    yield things
    for thing in reversed(things):
        (thing.close if hasattr(thing, "close") else thing.stop)()


def assert_all_delivered(collector: Collector, expected: list[str], timeout_s: float = 30.0) -> None:
    want = set(expected)
    try:
        wait_until(lambda: want <= set(collector.ids()), timeout_s, "every message id")
    except AssertionError:
        missing = sorted(want - set(collector.ids()))
        raise AssertionError(f"{len(missing)} message id(s) never arrived, e.g. {missing[:10]}") from None
    assert set(collector.ids()) <= want, "a message id nobody published"


def assert_duplicates_are_resends(collector: Collector) -> None:
    by_id: dict[str, set[bytes]] = {}
    for message in collector.received("verdict"):
        by_id.setdefault(message.json()["message_id"], set()).add(message.payload)
    assert all(len(payloads) == 1 for payloads in by_id.values()), "same id, different content"


# -- URL, credentials, topics (no broker) ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "user", "password", "root"),
    [
        ("mqtt://broker.local", "broker.local", 1883, False, None, None, "inspector"),
        ("mqtt://10.0.0.5:1884", "10.0.0.5", 1884, False, None, None, "inspector"),
        ("mqtts://line:s%40cret@broker:8884/acme/plant", "broker", 8884, True, "line", "s@cret", "acme/plant"),
        ("mqtts://broker", "broker", 8883, True, None, None, "inspector"),
        ("MQTT://u@[::1]", "::1", 1883, False, "u", None, "inspector"),
    ],
)
def test_publish_url_becomes_a_config(url, host, port, tls, user, password, root) -> None:
    config = mqtt_config_from_url(url)
    assert (config.host, config.port, config.tls is not None) == (host, port, tls)
    assert (config.username, config.password, config.topic_root) == (user, password, root)
    if tls:
        assert config.tls.ca_file is None  # the system CAs


def test_publish_url_keeps_the_rest_of_the_base_config(tmp_path: Path) -> None:
    tls = MqttTLSConfig(ca_file=tmp_path / "ca.pem")
    base = MqttConfig(outbox=tmp_path / "o.sqlite", password_env="MQTT_PW", username="x", tls=tls)
    config = mqtt_config_from_url("mqtts://broker", base)
    assert config.outbox == base.outbox and config.password_env == "MQTT_PW" and config.tls == base.tls
    plain = base.model_copy(update={"tls": None})
    assert mqtt_config_from_url("mqtt://u:p@broker", plain).password_env is None  # the URL's password wins


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://broker", "must start with mqtt:// or mqtts://"),
        ("broker:1883", "no scheme given"),
        ("mqtt://:1883", "names no host"),
        ("mqtt://broker:99999", "invalid port"),
        ("mqtt://broker:port", "invalid port"),
        ("mqtt://broker/a/#", "wildcard"),
        ("mqtt://broker/a+b", "topic_root"),
        ("mqtt://broker?x=1", "query"),
    ],
)
def test_malformed_publish_url_is_a_clear_error(url: str, message: str) -> None:
    with pytest.raises((InspectorError, ConfigError), match=message):
        mqtt_config_from_url(url)


def test_password_sources_and_redaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "pw-" + uuid.uuid4().hex
    monkeypatch.setenv("LINE_MQTT_PW", secret)
    assert resolve_password(MqttConfig(password_env="LINE_MQTT_PW")) == secret
    (tmp_path / "pw").write_text(secret + "\n")
    assert resolve_password(MqttConfig(password_file=tmp_path / "pw")) == secret
    with pytest.raises(InspectorError, match="NOPE_NOT_SET"):
        resolve_password(MqttConfig(password_env="NOPE_NOT_SET"))
    with pytest.raises(InspectorError, match="cannot read the MQTT password file"):
        resolve_password(MqttConfig(password_file=tmp_path / "missing"))
    config = mqtt_config_from_url(f"mqtt://line:{secret}@broker")
    assert secret not in repr(config) and secret not in str(config)
    assert redact_url(f"mqtt://line:{secret}@broker:1883") == "mqtt://line:***@broker:1883"


def test_topics_follow_the_unified_namespace() -> None:
    assert TOPICS.verdict == "inspector/plant/assembly/line-1/st-1/verdict"
    assert TOPICS.reject.endswith("/st-1/reject") and TOPICS.status.endswith("/status")
    assert TOPICS.cmd.endswith("/cmd") and TOPICS.health.endswith("/health")
    assert watch_filters("acme", line="line-1") == [
        "acme/+/+/line-1/+/verdict", "acme/+/+/line-1/+/reject", "acme/+/+/line-1/+/status",
    ]  # fmt: skip
    assert split_topic("inspector", TOPICS.reject) == ("plant", "assembly", "line-1", "st-1", "reject")
    assert split_topic("inspector", "other/plant/assembly/line-1/st-1/reject") is None


# -- delivery ------------------------------------------------------------------------------


def test_verdicts_rejects_and_birth_reach_a_v5_subscriber(broker: Mosquitto, tmp_path: Path, cleanup: list) -> None:
    sub = Collector(broker.port, watch_filters("inspector")).start()
    cleanup.append(sub)
    sink = MqttSink(sink_config(broker.port, tmp_path / "o.sqlite"), STATION, birth=BIRTH)
    cleanup.append(sink)
    assert isinstance(sink, Sink)
    for i in range(6):
        sink.publish(make_verdict(i, "NG" if i == 2 else "OK"))
    assert sink.wait_drained(30)
    wait_until(lambda: len(sub.ids()) == 6 and sub.received("reject") and sub.received("status"), what="messages")

    verdicts = sub.received("verdict")
    assert [m.json()["message_id"] for m in verdicts] == [f"v{i:06d}" for i in range(6)]
    for message in verdicts:
        jsonschema.validate(message.json(), committed("frame-verdict"))
        assert "tiles" not in message.json()
        assert message.properties["ContentType"] == "application/json"
        user = dict(message.properties["UserProperty"])
        assert user == {"schema": "line-inspector/frame-verdict", "schema-version": SCHEMA_VERSION,
                        "message-id": message.json()["message_id"]}  # fmt: skip

    (reject,) = sub.received("reject")
    body = reject.json()
    jsonschema.validate(body, committed("reject"))
    assert body["verdict_message_id"] == "v000002" and body["classes"] == ["scratch"] and body["part_id"] == "P2"
    assert body["message_id"] != "v000002"  # its own id; the verdict's is verdict_message_id
    assert dict(reject.properties["UserProperty"])["message-id"] == body["message_id"]
    assert 1 <= reject.properties["MessageExpiryInterval"] <= 10  # counts from creation

    status = sub.received("status")[-1].json()
    jsonschema.validate(status, committed("status"))
    assert status["state"] == "online" and status["software"].startswith("line-inspector ")
    assert (status["model"], status["backend"], status["precision"]) == ("tiny-random", "torch", "float32")
    stats = sink.stats()
    assert stats["acked"] == 7 and stats["outbox_messages"] == 0 and stats["connected"] and stats["dropped"] == {}


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_mosquitto_sub_receives_and_prints_the_json(broker: Mosquitto, tmp_path: Path, protocol: str) -> None:
    version = {"5": "mqttv5", "3.1.1": "mqttv311"}[protocol]
    command = [mosquitto_binary("mosquitto_sub"), "-h", HOST, "-p", str(broker.port), "-V", version,
               "-q", "1", "-c", "-i", "third-party", "-t", TOPICS.verdict]  # fmt: skip
    subprocess.run([*command, "-E"], check=True, timeout=20)  # a persistent session, so nothing is missed
    with MqttSink(sink_config(broker.port, tmp_path / "o.sqlite", protocol=protocol), STATION) as sink:
        for i in range(5):
            sink.publish(make_verdict(i, "NG" if i % 2 else "OK"))
        assert sink.wait_drained(30)
    out = subprocess.run([*command, "-C", "5", "-W", "20"], capture_output=True, text=True, timeout=30, check=True)
    lines = out.stdout.splitlines()
    assert [json.loads(line)["message_id"] for line in lines] == [f"v{i:06d}" for i in range(5)]
    for line in lines:
        jsonschema.validate(json.loads(line), committed("frame-verdict"))


@pytest.mark.slow
def test_broker_sigkill_mid_stream_loses_no_message(broker: Mosquitto, tmp_path: Path, cleanup: list) -> None:
    sub = Collector(broker.port, [TOPICS.verdict], client_id="dashboard", persistent=True).start()
    cleanup.append(sub)
    broker.save()  # the dashboard's session and subscription survive the SIGKILL
    sink = MqttSink(sink_config(broker.port, tmp_path / "o.sqlite"), STATION)
    cleanup.append(sink)
    wait_until(lambda: sink.connected, 10, "connection")
    count = 1500
    for i in range(count):
        if i == 500:
            wait_until(lambda: sink.stats()["acked"] >= 250, 30, "a flowing stream")
            broker.kill()
        if i == 900:
            broker.start()
        sink.publish(make_verdict(i, "NG" if i % 50 == 7 else "OK"))
    assert sink.wait_drained(60), sink.stats()
    assert_all_delivered(sub, [f"v{i:06d}" for i in range(count)])
    assert_duplicates_are_resends(sub)
    assert sink.stats()["connection_losses"] >= 1


@pytest.mark.slow
def test_offline_subscriber_gets_everything_despite_a_broker_crash(tmp_path: Path, cleanup: list) -> None:
    """Mosquitto acknowledges before it saves; the redelivery window covers what its crash loses."""
    broker = Mosquitto(tmp_path / "broker", autosave_interval=0)  # saves only when asked
    cleanup.append(broker)
    broker.start()
    sub = Collector(broker.port, [TOPICS.verdict], client_id="historian", persistent=True).start()
    broker.save()
    sub.stop()  # offline: the broker queues for it in memory only
    sink = MqttSink(sink_config(broker.port, tmp_path / "o.sqlite", redeliver_window_s=120), STATION)
    cleanup.append(sink)
    for i in range(400):
        sink.publish(make_verdict(i))
    assert sink.wait_drained(30)
    broker.restart(kill=True)  # the 400 queued messages die with it
    for i in range(400, 500):
        sink.publish(make_verdict(i))
    assert sink.wait_drained(30)
    wait_until(lambda: sink.stats()["redelivered"] == 400, 10, "redelivery")
    sub = Collector(broker.port, [TOPICS.verdict], client_id="historian", persistent=True).start()
    cleanup.append(sub)
    assert_all_delivered(sub, [f"v{i:06d}" for i in range(500)])
    assert_duplicates_are_resends(sub)


def test_broker_down_at_startup_outbox_grows_then_drains_in_order(tmp_path: Path, cleanup: list) -> None:
    broker = Mosquitto(tmp_path / "broker")
    cleanup.append(broker)
    broker.start()
    sub = Collector(broker.port, [TOPICS.verdict], client_id="dashboard", persistent=True).start()
    cleanup.append(sub)
    broker.stop()  # graceful: the dashboard's session is saved; nothing listens now

    sink = MqttSink(sink_config(broker.port, tmp_path / "o.sqlite"), STATION)
    cleanup.append(sink)
    for i in range(300):
        sink.publish(make_verdict(i, "NG" if i % 30 == 0 else "OK"))  # returns: inspection goes on
    stats = sink.stats()
    assert stats["outbox_messages"] == 310 and stats["outbox_by_kind"]["reject"] == 10 and not stats["connected"]
    wait_until(lambda: sink.last_error is not None, 10, "a connection error")
    assert isinstance(sink.last_error, MqttConnectError) and sink.last_error.cause == "refused"
    assert "connection refused" in sink.stats()["last_error"]

    broker.start()
    assert sink.wait_drained(60), sink.stats()
    expected = [f"v{i:06d}" for i in range(300)]
    assert_all_delivered(sub, expected)
    firsts = list(dict.fromkeys(sub.ids()))
    assert firsts == expected  # the backlog drained in order
    assert sink.stats()["last_error"] is None


def test_expired_rejects_are_dropped_and_counted_not_sent(tmp_path: Path, cleanup: list) -> None:
    broker = Mosquitto(tmp_path / "broker")
    cleanup.append(broker)
    now = [time.time()]  # an injected wall clock: the expiry is reached by moving it, not by sleeping past it
    sink = MqttSink(sink_config(broker.port, tmp_path / "o.sqlite", reject_expiry_s=60), STATION, clock=lambda: now[0])
    cleanup.append(sink)
    sink.publish(make_verdict(0, "NG"))
    assert sink.stats()["outbox_by_kind"]["reject"] == 1  # stored, not yet stale
    now[0] += 61  # the reject goes stale while the broker is down
    broker.start()
    assert sink.wait_drained(30)
    stats = sink.stats()
    assert stats["dropped"] == {"expired": 1} and stats["sent"] == 1 and stats["acked"] == 1


# -- publisher crashes, status and Will ------------------------------------------------------


class Publisher:
    """This file run as a publisher process (see _publisher_main), with its output lines in a queue."""

    def __init__(self, port: int, outbox: Path, *, start: int = 0, count: int = 0, hold: bool = False,
                 pace_s: float = 0.0) -> None:  # fmt: skip
        command = [sys.executable, __file__, "publish", "--port", str(port), "--outbox", str(outbox),
                   "--start", str(start), "--count", str(count), "--pace", str(pace_s)]  # fmt: skip
        if hold:
            command.append("--hold")
        # The child imports this file too, so it needs the tests' support code (tests/support) on its path.
        support = str(Path(__file__).parent / "support")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [support, os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.last_index = -1
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def expect(self, predicate: Callable[[str], bool], timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"publisher said nothing matching within {timeout_s} s") from None
            if line.isdigit():
                self.last_index = int(line)
            if predicate(line):
                return line

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        while not self.lines.empty():  # what it printed before dying still counts
            self.expect(lambda _: True, 1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.mark.slow
def test_publisher_sigkill_mid_stream_then_restart_on_the_same_outbox(
    broker: Mosquitto, tmp_path: Path, cleanup: list
) -> None:
    sub = Collector(broker.port, [TOPICS.verdict], client_id="dashboard", persistent=True).start()
    cleanup.append(sub)
    outbox, count = tmp_path / "outbox.sqlite", 1200
    first = Publisher(broker.port, outbox, count=count, pace_s=0.001)
    cleanup.append(first)
    first.expect(lambda line: line.isdigit() and int(line) >= 400)
    first.kill()
    accepted = first.last_index  # publish() had returned for 0..accepted
    assert 400 <= accepted < count - 1, "the kill should land mid-stream"

    second = Publisher(broker.port, outbox, start=accepted + 1, count=count - accepted - 1)
    cleanup.append(second)
    closed = second.expect(lambda line: line.startswith("closed "), 60)
    assert json.loads(closed.removeprefix("closed "))["outbox_messages"] == 0
    assert second.process.wait(10) == 0
    assert_all_delivered(sub, [f"v{i:06d}" for i in range(count)])
    assert_duplicates_are_resends(sub)


def _retained_status(port: int) -> dict:
    sub = Collector(port, [TOPICS.status]).start()
    try:
        wait_until(lambda: bool(sub.received("status")), 10, "the retained status")
        message = sub.received("status")[0]
        assert message.retain
        return message.json()
    finally:
        sub.stop()


def test_status_goes_offline_by_will_and_online_by_birth(broker: Mosquitto, tmp_path: Path, cleanup: list) -> None:
    watcher = Collector(broker.port, [TOPICS.status]).start()
    cleanup.append(watcher)

    def last_state() -> str | None:
        messages = watcher.received("status")
        return messages[-1].json()["state"] if messages else None

    first = Publisher(broker.port, tmp_path / "o.sqlite", hold=True)
    cleanup.append(first)
    first.expect(lambda line: line == "connected")
    wait_until(lambda: last_state() == "online", 10, "birth")
    birth = watcher.received("status")[-1].json()
    assert birth["model"] == "tiny-random" and birth["backend"] == "torch" and birth["precision"] == "float32"
    jsonschema.validate(birth, committed("status"))

    first.kill()  # no goodbye: the broker publishes the Will
    wait_until(lambda: last_state() == "offline", 10, "the Will")
    will = watcher.received("status")[-1].json()
    assert "Will" in will["reason"]
    jsonschema.validate(will, committed("status"))  # the Will is registered long before it is sent: still valid
    assert _retained_status(broker.port)["state"] == "offline"

    second = Publisher(broker.port, tmp_path / "o.sqlite", hold=True)
    cleanup.append(second)
    second.expect(lambda line: line == "connected")
    wait_until(lambda: last_state() == "online", 10, "the new birth")
    assert _retained_status(broker.port)["state"] == "online"

    assert second.process.stdin is not None
    second.process.stdin.write("quit\n")
    second.process.stdin.flush()
    second.expect(lambda line: line.startswith("closed "))
    status = _retained_status(broker.port)
    assert (status["state"], status["reason"]) == ("offline", "closed")  # a clean close says so itself


def test_set_status_health_and_commands(broker: Mosquitto, tmp_path: Path, cleanup: list) -> None:
    sub = Collector(broker.port, [TOPICS.status, TOPICS.health, "replies/#"]).start()
    cleanup.append(sub)
    sink = MqttSink(sink_config(broker.port, tmp_path / "o.sqlite"), STATION, birth=BIRTH)
    cleanup.append(sink)
    wait_until(lambda: sink.connected, 10, "connection")

    sink.set_status("degraded", {"reason": "camera reconnecting"})
    wait_until(lambda: sub.received("status") and sub.received("status")[-1].json()["state"] == "degraded")
    assert sub.received("status")[-1].json()["details"] == {"reason": "camera reconnecting"}
    assert sink.publish_health({"fps": 4.5, "queue": 0})
    wait_until(lambda: bool(sub.received("health")), what="a heartbeat")
    assert sub.received("health")[0].json() == {"fps": 4.5, "queue": 0}

    commands: list[Command] = []

    def handle(command: Command) -> None:
        commands.append(command)
        answer = {"ok": True, "echo": command.payload.decode()}
        sink.respond(command.response_topic or "", command.correlation_data, answer)

    sink.on_command(handle)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "replies/test"
    props.CorrelationData = b"req-42"
    wait_until(  # retry the request until the sink's subscription is in place
        lambda: sub.client.publish(TOPICS.cmd + "/ping", b"hello", 1, properties=props) and bool(sub.received("test")),
        10, "a response",
    )  # fmt: skip
    reply = sub.received("test")[0]
    assert reply.json() == {"ok": True, "echo": "hello"}
    assert bytes.fromhex(reply.properties["CorrelationData"]) == b"req-42"  # paho's json() shows bytes as hex
    assert commands[0].topic == TOPICS.cmd + "/ping" and commands[0].response_topic == "replies/test"


# -- errors, TLS, authentication -------------------------------------------------------------


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[Mosquitto, object]]:
    """A broker with a password file and a TLS listener signed by a test CA."""
    tls = make_tls_files(tmp_path / "pki")
    with Mosquitto(tmp_path / "secure", users={"line": "s3cret"}, tls=tls) as started:
        yield started, tls


def test_connection_errors_name_the_cause(secured, tmp_path: Path) -> None:
    broker, tls = secured
    wrong_ca = make_tls_files(tmp_path / "other-pki", name="other")
    plain = MqttConfig(host=HOST, port=broker.port, username="line", password="s3cret")
    secure = plain.model_copy(update={"port": broker.tls_port, "tls": MqttTLSConfig(ca_file=tls.ca_cert)})
    check_connection(plain, 5)
    check_connection(secure, 5)

    cases = [
        (plain.model_copy(update={"password": "pw-zq9x"}), "not_authorized", "not authorised"),
        (plain.model_copy(update={"password": "pw-zq9x", "protocol": "3.1.1"}), "not_authorized", "not authorised"),
        (secure.model_copy(update={"tls": MqttTLSConfig(ca_file=wrong_ca.ca_cert)}), "tls",
         "certificate verification failed"),
        (secure.model_copy(update={"tls": None}), "closed", "closed the connection"),  # plain MQTT to the TLS port
        (plain.model_copy(update={"tls": MqttTLSConfig(ca_file=tls.ca_cert)}), "tls", "TLS handshake"),  # TLS to plain
        (plain.model_copy(update={"port": free_port()}), "refused", "connection refused"),
    ]  # fmt: skip
    for config, cause, text in cases:
        with pytest.raises(MqttConnectError, match=text) as caught:
            check_connection(config, 5)
        assert caught.value.cause == cause, str(caught.value)
        assert "s3cret" not in str(caught.value) and "pw-zq9x" not in str(caught.value)

    with socket.socket() as silent:  # accepts TCP, never answers MQTT: a black hole
        silent.bind((HOST, 0))
        silent.listen()
        with pytest.raises(MqttConnectError, match="no MQTT CONNACK") as caught:
            check_connection(plain.model_copy(update={"port": silent.getsockname()[1]}), 1)
        assert caught.value.cause == "timeout" and caught.value.transient


def test_hostname_mismatch_is_named(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "pki", dns_names=("broker.example",), ip_addresses=())
    with Mosquitto(tmp_path / "b", tls=tls) as broker:
        config = MqttConfig(host=HOST, port=broker.tls_port, tls=MqttTLSConfig(ca_file=tls.ca_cert))
        with pytest.raises(MqttConnectError, match="mismatch") as caught:
            check_connection(config, 5)
        assert "verify_hostname" in str(caught.value)
        unchecked = MqttTLSConfig(ca_file=tls.ca_cert, verify_hostname=False)
        check_connection(config.model_copy(update={"tls": unchecked}), 5)


def test_publishing_over_tls_with_a_password_works(secured, tmp_path: Path, cleanup: list) -> None:
    broker, tls = secured
    sub = Collector(broker.port, [TOPICS.verdict], username="line", password="s3cret").start()
    cleanup.append(sub)
    (tmp_path / "pw").write_text("s3cret\n")
    base = MqttConfig(
        outbox=tmp_path / "o.sqlite", password_file=tmp_path / "pw", tls=MqttTLSConfig(ca_file=tls.ca_cert)
    )
    config = mqtt_config_from_url(f"mqtts://line@localhost:{broker.tls_port}", base)
    sink = MqttSink(config, STATION)
    cleanup.append(sink)
    sink.start(check_timeout_s=5)
    for i in range(20):
        sink.publish(make_verdict(i))
    assert sink.wait_drained(30), sink.stats()
    assert_all_delivered(sub, [f"v{i:06d}" for i in range(20)])


def test_client_certificate_required_by_the_broker(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "pki")
    with Mosquitto(tmp_path / "b", tls=tls, require_client_certificate=True) as broker:
        config = MqttConfig(host=HOST, port=broker.tls_port, tls=MqttTLSConfig(ca_file=tls.ca_cert))
        with pytest.raises(MqttConnectError, match="closed the connection before accepting it") as caught:
            check_connection(config, 5)
        assert "client certificate" in str(caught.value)  # the hint names the likely cause
        with_cert = MqttTLSConfig(ca_file=tls.ca_cert, cert_file=tls.client_cert, key_file=tls.client_key)
        check_connection(config.model_copy(update={"tls": with_cert}), 5)


def test_sink_with_a_wrong_password_keeps_verdicts_and_reports_never_logging_it(
    secured, tmp_path: Path, cleanup: list, caplog: pytest.LogCaptureFixture
) -> None:
    broker, _ = secured
    caplog.set_level(logging.DEBUG)
    secret = "hunter2-" + uuid.uuid4().hex
    sink = MqttSink(sink_config(broker.port, tmp_path / "o.sqlite", username="line", password=secret), STATION)
    cleanup.append(sink)
    sink.publish(make_verdict(0))  # accepted: the outbox keeps it
    wait_until(lambda: sink.last_error is not None, 10, "the login failure")
    assert sink.last_error.cause == "not_authorized" and not sink.last_error.transient
    assert sink.stats()["outbox_messages"] == 1 and "not authorised" in sink.stats()["last_error"]
    with pytest.raises(MqttConnectError):
        sink.start(check_timeout_s=5)  # the fail-fast path raises what a retry cannot fix
    assert secret not in caplog.text
    assert secret not in json.dumps(sink.stats()) and secret not in repr(sink.config)
    assert any("not authorised" in record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR)


# -- the publisher process the crash tests kill ------------------------------------------------


def _publisher_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--outbox", type=Path, required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--pace", type=float, default=0.0)
    parser.add_argument("--hold", action="store_true", help="after publishing, wait for a line on stdin")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sink = MqttSink(sink_config(args.port, args.outbox), STATION, birth=BIRTH)
    wait_until(lambda: sink.connected, 30, "connection")
    print("connected", flush=True)
    for i in range(args.start, args.start + args.count):
        sink.publish(make_verdict(i, "NG" if i % 10 == 3 else "OK"))
        print(i, flush=True)  # after publish() returned: the verdict is the outbox's now
        if args.pace:
            time.sleep(args.pace)
    if args.hold:
        sys.stdin.readline()
    sink.close(timeout_s=60)
    print("closed " + json.dumps(sink.stats()), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["publish"]:
        sys.exit(_publisher_main(sys.argv[2:]))
    sys.exit("usage: test_mqtt_sink.py publish --port P --outbox FILE [--start N --count N --pace S --hold]")
