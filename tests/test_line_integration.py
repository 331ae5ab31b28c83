"""Issue 16's "done when", end to end: ``inspector-edge`` on an emulated pylon camera, triggered over OPC UA.

A child process runs the edge service (a real Mosquitto, the tiny random model: its verdicts mean
nothing; that each part gets exactly one, with its part id and recipe, is what is checked) on
pypylon's emulated camera, software-triggered. A PLC client that only calls ``StartSingleJob``
triggers the parts (some naming a recipe, some taking the selected one); each part's verdict must
arrive exactly once on plain MQTT, as a Sparkplug B DDATA (decoded by a host application that
subscribes to ``spBv1.0/#``) and as an OPC UA ResultReady event (a SCADA client's subscription).
Killing the service (SIGKILL: no clean shutdown) must make the broker publish its NDEATH, whose
bdSeq matches the NBIRTH's.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

pytest.importorskip("pypylon", reason="the line test needs the genicam extra (pip install 'line-inspector[genicam]')")
pytest.importorskip("asyncua", reason="the line test needs the opcua extra")
pytest.importorskip("google.protobuf", reason="the line test needs the sparkplug extra")

from asyncua import Client, ua  # noqa: E402
from edge_station import station_data  # noqa: E402
from test_edge_service import ROOT, Edge, write_config  # noqa: E402

from cameras import emulator_camera, write_emulator_frames  # noqa: E402
from mosquitto import Mosquitto, free_port  # noqa: E402
from streams import poll  # noqa: E402

WAIT_S = 300.0  # the child loads the model on a shared machine: minutes under load
URI = "urn:line-inspector:machine-vision"
PARTS = [("P-001", ""), ("P-002", "grey-tile"), ("P-003", ""), ("P-004", "grey-tile"), ("P-005", "")]
RECIPES = {"grey-tile": {"inspection": {"product": "a grey tile", "defects": {"chip": {"description": "a chip"}}}}}


class SparkplugHost:
    """A Sparkplug host application: every spBv1.0 message, decoded with the Tahu protobuf."""

    def __init__(self, port: int) -> None:
        from edge.sparkplug.metrics import decode, describe_payload

        self._decode = lambda data: describe_payload(decode(data))
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: (c.subscribe("spBv1.0/#", qos=1), ready.set())
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10), "the Sparkplug host could not connect"

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic.startswith("spBv1.0/STATE/"):
            return
        with self._lock:
            self.messages.append((message.topic, self._decode(message.payload)))

    def of(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return [(topic, payload) for topic, payload in self.messages if topic.split("/")[2] == kind]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Verdicts:
    """The plain MQTT verdict topic, as a dashboard subscriber reads it."""

    def __init__(self, port: int) -> None:
        self.items: list[dict[str, Any]] = []
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *_: (c.subscribe(f"{ROOT}/+/+/+/+/verdict", qos=1), ready.set())
        self.client.on_message = lambda _c, _u, m: self.items.append(json.loads(m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def line_station(tmp_path: Path, model_dir: Path, broker: Mosquitto, opcua_port: int) -> dict[str, Any]:
    frames = write_emulator_frames(tmp_path / "frames", size=(512, 256))
    camera = emulator_camera(frames, trigger="software").model_dump(exclude_defaults=True)
    camera["roi"] = {"width": 512, "height": 256}
    data = station_data(model_dir, "pylon://0815-0000", trigger="opcua", trigger_timeout_s=60.0, camera=camera)
    return {
        **data,
        "recipes": RECIPES,
        "sinks": {"mqtt": {"port": broker.port, "outbox": str(tmp_path / "outbox.sqlite"), "topic_root": ROOT}},
        "edge": {
            "metrics_port": 0,
            "live_port": 0,
            "opcua": {"port": opcua_port, "security_policies": ["None"], "allow_anonymous": True},
            "sparkplug": {"group_id": "plant", "edge_node_id": "box-1", "bdseq_file": str(tmp_path / "bdseq")},
        },
    }


async def run_line(endpoint: str) -> list[Any]:
    """The PLC calls StartSingleJob only; a SCADA client records the ResultReady events meanwhile."""
    events: list[Any] = []

    class Recorder:
        def event_notification(self, event: Any) -> None:
            events.append(event)

    async with Client(endpoint) as scada, Client(endpoint) as plc:
        idx = await scada.get_namespace_index(URI)
        event_type = await scada.nodes.root.get_child(
            ["0:Types", "0:EventTypes", "0:BaseEventType", f"{idx}:ResultReadyEventType"]
        )
        subscription = await scada.create_subscription(50, Recorder())
        await subscription.subscribe_events(scada.get_node(ua.NodeId("st", idx)), event_type)
        station = plc.get_node(ua.NodeId("st", idx))
        for part, recipe in PARTS:
            assert await station.call_method(ua.QualifiedName("StartSingleJob", idx), part, recipe) == part
        for _ in range(int(WAIT_S / 0.1)):
            if len(events) >= len(PARTS):
                break
            await asyncio.sleep(0.1)
    return events


def test_a_line_triggers_an_emulated_camera_over_opcua_and_reads_every_verdict_everywhere(
    broker: Mosquitto, tiny_model_dir: Path, tmp_path: Path
) -> None:
    opcua_port = free_port()
    config = write_config(tmp_path, line_station(tmp_path, tiny_model_dir, broker, opcua_port))
    host = SparkplugHost(broker.port)
    verdicts = Verdicts(broker.port)
    edge = Edge(tmp_path, ["--config", str(config)], env={"PYLON_CAMEMU": "1"})
    try:
        assert poll(lambda: host.of("DBIRTH"), 2 * WAIT_S), edge.log()  # the child loads the model first
        assert poll(lambda: "camera open" in edge.log_path.read_text(errors="replace"), WAIT_S), edge.log()
        events = asyncio.run(run_line(f"opc.tcp://127.0.0.1:{opcua_port}"))
        assert poll(lambda: len(verdicts.items) >= len(PARTS) and len(host.of("DDATA")) >= len(PARTS), WAIT_S)
        expected = {part: recipe or "default" for part, recipe in PARTS}

        # Plain MQTT: exactly one verdict per part, judged (no error), with its part id and recipe.
        mqtt_parts = {v["source"]["part_id"]: v for v in verdicts.items}
        assert sorted(v["source"]["part_id"] for v in verdicts.items) == sorted(expected), verdicts.items
        assert {p: v["recipe"] for p, v in mqtt_parts.items()} == expected
        assert all(v["error"] is None for v in verdicts.items), [v["error"] for v in verdicts.items]

        # Sparkplug B: one DDATA per verdict on the station's device, the same part, recipe and result id.
        ddata = [p["metrics"] for t, p in host.of("DDATA") if t == "spBv1.0/plant/DDATA/box-1/st"]
        judged = [m for m in ddata if m.get("Inspection/Part ID")]
        assert sorted(m["Inspection/Part ID"] for m in judged) == sorted(expected)
        for metrics in judged:
            part = metrics["Inspection/Part ID"]
            assert metrics["Inspection/Recipe"] == expected[part]
            assert metrics["Inspection/Result ID"] == mqtt_parts[part]["message_id"]

        # OPC UA: one ResultReady event per part, the same verdict.
        assert sorted(e.PartId for e in events) == sorted(expected)
        for event in events:
            assert (event.RecipeId, event.ResultId, event.Result) == (
                expected[event.PartId],
                mqtt_parts[event.PartId]["message_id"],
                mqtt_parts[event.PartId]["verdict"],
            )

        # Killed without a word: the broker publishes the Will, the NDEATH of this birth's bdSeq.
        ((_, nbirth),) = host.of("NBIRTH")
        edge.process.send_signal(signal.SIGKILL)
        edge.process.wait(30)
        assert poll(lambda: host.of("NDEATH"), WAIT_S), "no NDEATH after the service was killed"
        ((topic, ndeath),) = host.of("NDEATH")
        assert topic == "spBv1.0/plant/NDEATH/box-1"
        assert ndeath["metrics"]["bdSeq"] == nbirth["metrics"]["bdSeq"]
    finally:
        edge.close()
        host.close()
        verdicts.close()
