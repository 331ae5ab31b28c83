"""Helpers for in-process edge-service tests: a station config, a service built like inspector-edge builds it,
and an MQTT subscriber that records what a line controller would receive. Real Mosquitto, real model, no mocks."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge.metrics import EdgeMetrics
from edge.options import ServiceOptions
from edge.sdnotify import SystemdNotifier
from edge.supervisor import EdgeService
from inspector.config import EvidenceConfig, MqttConfig, StationFile, parse_config
from inspector.mqtt import MqttSink

ROOT = "test"


def station_data(model_dir: Path, source: str, name: str = "st", **source_extra: Any) -> dict[str, Any]:
    return {
        "station": {"site": "s", "area": "a", "line": "l1", "station": name, "camera": "cam0"},
        "source": {"uri": source, "reconnect": {"initial_s": 0.05, "max_s": 0.3}, **source_extra},
        "tiling": {"tile": 256, "overlap": 0.0, "global_view": False},
        "model": {"path": str(model_dir), "batch_size": 4},
        "inspection": {
            "product": "a textured surface",
            "defects": {"scratch": {"description": "a thin line"}, "spot": {"description": "a dark blob"}},
            "explanation": "never",
        },
    }


def mqtt_config(port: int, outbox: Path) -> MqttConfig:
    return MqttConfig(host="127.0.0.1", port=port, topic_root=ROOT, outbox=outbox,
                      reconnect={"initial_s": 0.05, "max_s": 0.5})  # fmt: skip


def build_service(
    config: StationFile, inspector: Any, port: int, tmp_path: Path, *, evidence: EvidenceConfig | None = None,
    shared_inference: bool = False, extra_sinks: list[Any] | None = None, **options: Any,
) -> EdgeService:  # fmt: skip
    """An EdgeService as ``inspector-edge`` assembles it, publishing to the broker on ``port``
    (and to ``extra_sinks``: the OPC UA server's, the Sparkplug node's)."""
    station = config.station.station
    link = mqtt_config(port, tmp_path / f"outbox-{station}.sqlite")
    sink = MqttSink(link, config.station)
    return EdgeService(
        config, inspector, None, sinks=[sink, *(extra_sinks or [])], mqtt=sink, metrics=EdgeMetrics(),
        notifier=SystemdNotifier(),
        options=ServiceOptions(heartbeat_s=1.0, tick_s=0.05, snapshot_dir=tmp_path / "snapshots", **options),
        overrides=_no_overrides(), evidence=evidence, mqtt_config=link, shared_inference=shared_inference,
    )  # fmt: skip


def _no_overrides() -> Any:
    from edge.reload import Overrides

    return Overrides()


def config_for(data: dict[str, Any]) -> StationFile:
    return parse_config(data, "test")


class Subscriber:
    """Everything published under ``test/#``, as parsed JSON per topic leaf (and raw bytes)."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: (c.subscribe(f"{ROOT}/#", qos=1), self._ready.set())
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("test subscriber could not connect")

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def json(self, leaf: str, station: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self.messages)
        return [
            json.loads(payload)
            for topic, payload, _ in items
            if topic.endswith("/" + leaf) and (station is None or topic.split("/")[-2] == station)
        ]

    def raw(self, leaf: str) -> list[tuple[bytes, bool]]:
        with self._lock:
            return [(payload, retain) for topic, payload, retain in self.messages if topic.endswith("/" + leaf)]

    def trigger(self, station: str, body: dict[str, Any] | bytes) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.client.publish(f"{ROOT}/s/a/l1/{station}/trigger", payload, qos=1).wait_for_publish(5)

    def command(self, station: str, body: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
        """Send one command on ``.../cmd`` (MQTT v5 request/response) and return its response."""
        import uuid

        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"{ROOT}/s/a/l1/{station}/response/{uuid.uuid4().hex}"  # the station's namespace
        props.CorrelationData = uuid.uuid4().bytes
        self.client.publish(f"{ROOT}/s/a/l1/{station}/cmd", json.dumps(body).encode(), qos=1,
                            properties=props).wait_for_publish(5)  # fmt: skip
        deadline = threading.Event()
        for _ in range(int(timeout_s / 0.02)):
            with self._lock:
                answers = [json.loads(m) for t, m, _ in self.messages if t == props.ResponseTopic]
            if answers:
                return answers[0]
            deadline.wait(0.02)
        raise AssertionError(f"no response to {body}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class RunningService:
    """A service's supervisor loop in a thread; ``stop()`` ends it and returns its exit code."""

    def __init__(self, service: EdgeService) -> None:
        self.service = service
        self.code: list[int] = []
        self.thread = threading.Thread(target=lambda: self.code.append(service.run()), daemon=True)
        self.thread.start()

    def stop(self) -> int:
        self.service.stop_event.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the service did not stop"
        return self.code[0]
