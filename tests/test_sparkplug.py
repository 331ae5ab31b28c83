"""The Sparkplug B edge node against a real Mosquitto, seen by a host subscriber that decodes every payload.

In process: births with every metric, a DDATA per verdict with its part id and recipe, seq order and wrap,
bdSeq per connect, rebirth, recipe selection by DCMD and every malformed command answered. As a process:
``inspector-edge`` killed with SIGKILL leaves the NDEATH whose bdSeq matches its birth.
The tiny random model's verdicts mean nothing; only what is published about them is checked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from edge_station import ROOT, RunningService, Subscriber, build_service, config_for, mqtt_config, station_data

from edge.commands import CommandRejected
from edge.sparkplug import metrics as spm
from edge.sparkplug.node import SparkplugNode
from edge.station_control import LineState
from inspector.payloads.verdict import FrameVerdict, ModelRef, SourceRef, StationRef
from inspector.plc_config import SparkplugConfig

from mosquitto import Mosquitto
from streams import MjpegCamera, noise_camera, poll

WAIT_S = 60.0
REPO = Path(__file__).resolve().parents[1]
GROUP, NODE = "plant-7", "box-1"
RECIPES = {"grey-tile": {"inspection": {"product": "a grey tile", "defects": {"chip": {"description": "a chip"}}}}}
DEVICE_METRICS = {
    "Inspection/Verdict", "Inspection/Confidence", "Inspection/Part ID", "Inspection/Recipe", "Inspection/Result ID",
    "Inspection/Defects", "Inspection/Error", "Inspection/Captured At", "Inspection/Total ms", "Counts/OK",
    "Counts/NG", "Counts/UNCERTAIN", "Yield", "Recipe/Selected", "Recipe/Available", "Status/State",
    "Status/Paused", "Device Control/Rebirth", "Device Control/Command Error",
}  # fmt: skip


class Host:
    """A Sparkplug host application: subscribes to spBv1.0/#, decodes every payload (a failure is a test failure)."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="host-app", protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, *_: (c.subscribe("spBv1.0/#", qos=1), ready.set())
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10), "host could not connect"

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic.startswith("spBv1.0/STATE/"):  # host state: JSON, not protobuf
            return
        kind = message.topic.split("/")[2]
        decoded = {} if kind in ("NCMD", "DCMD") else spm.describe_payload(spm.decode(bytes(message.payload)))
        with self._lock:
            self.messages.append((message.topic, decoded))

    def of(self, kind: str, device: str | None = None) -> list[dict[str, Any]]:
        topic = f"spBv1.0/{GROUP}/{kind}/{NODE}" + (f"/{device}" if device else "")
        with self._lock:
            return [payload for t, payload in self.messages if t == topic]

    def sequence(self) -> list[int]:
        """seq of every node message after the first NBIRTH (NDEATH has none)."""
        with self._lock:
            items = [(t.split("/")[2], p) for t, p in self.messages if t.split("/")[2] not in ("NCMD", "DCMD")]
        first = next(i for i, (kind, _) in enumerate(items) if kind == "NBIRTH")
        return [p["seq"] for kind, p in items[first:] if kind != "NDEATH"]

    def command(self, kind: str, metrics: list[spm.Metric] | bytes, device: str | None = None) -> None:
        topic = f"spBv1.0/{GROUP}/{kind}/{NODE}" + (f"/{device}" if device else "")
        payload = metrics if isinstance(metrics, bytes) else spm.encode(metrics, seq=None)
        self.client.publish(topic, payload, qos=0).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def host(broker: Mosquitto) -> Iterator[Host]:
    client = Host(broker.port)
    yield client
    client.close()


def settings(tmp_path: Path) -> SparkplugConfig:
    return SparkplugConfig(group_id=GROUP, edge_node_id=NODE, bdseq_file=tmp_path / "bdseq")


def device_metric(payloads: list[dict[str, Any]], name: str) -> list[Any]:
    return [p["metrics"][name] for p in payloads if name in p["metrics"]]


# -- a running station as a device --------------------------------------------------------------------


@pytest.fixture
def camera() -> Iterator[MjpegCamera]:
    yield from noise_camera(4)


def test_births_a_ddata_per_part_recipe_by_dcmd_rebirth_and_every_bad_command_answered(
    broker: Mosquitto, host: Host, camera: MjpegCamera, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from inspector.pipeline import build_inspector

    data = station_data(tiny_model_dir, camera.url, trigger="opcua", trigger_timeout_s=30.0)
    data["recipes"] = RECIPES
    config = config_for(data)
    node = SparkplugNode(settings(tmp_path), mqtt_config(broker.port, tmp_path / "unused.sqlite"))
    service = build_service(config, build_inspector(config), broker.port, tmp_path,
                            extra_sinks=[node.station_sink("st")])  # fmt: skip
    node.attach(service)
    subscriber = Subscriber(broker.port)
    running = RunningService(service)
    node.start()
    try:
        assert poll(lambda: host.of("DBIRTH", "st"), WAIT_S), "no DBIRTH"
        (nbirth,) = host.of("NBIRTH")
        assert nbirth["seq"] == 0 and nbirth["metrics"]["bdSeq"] == 0  # the first CONNECT with a fresh bdseq_file
        assert nbirth["metrics"]["Node Control/Rebirth"] is False
        (dbirth,) = host.of("DBIRTH", "st")
        assert set(dbirth["metrics"]) == DEVICE_METRICS
        assert dbirth["metrics"]["Recipe/Available"] == "default,grey-tile"
        assert poll(lambda: service.capture.captured > 0, WAIT_S), "the camera delivers no frames"
        assert service.trigger_part("P-1") == "accepted"
        assert poll(lambda: device_metric(host.of("DDATA", "st"), "Inspection/Part ID") == ["P-1"], WAIT_S)
        host.command("DCMD", [spm.Metric("Recipe/Selected", spm.STRING, "grey-tile")], "st")
        assert poll(lambda: service.recipes.selected == "grey-tile", WAIT_S), "the DCMD did not select the recipe"
        assert service.trigger_part("P-2") == "accepted"
        assert poll(lambda: len(device_metric(host.of("DDATA", "st"), "Inspection/Part ID")) == 2, WAIT_S)
        ddata = host.of("DDATA", "st")
        parts = dict(zip(device_metric(ddata, "Inspection/Part ID"), device_metric(ddata, "Inspection/Recipe")))
        assert parts == {"P-1": "default", "P-2": "grey-tile"}
        assert poll(lambda: len(subscriber.json("verdict")) == 2, WAIT_S), "the plain MQTT verdicts are missing"
        verdicts = {v["source"]["part_id"]: v["message_id"] for v in subscriber.json("verdict")}
        assert dict(zip(device_metric(ddata, "Inspection/Part ID"), device_metric(ddata, "Inspection/Result ID"))) \
            == verdicts  # fmt: skip
        assert "grey-tile" in device_metric(ddata, "Recipe/Selected")
        # Bad commands: each answered on Command Error, none changes anything.
        for body, expected in (
            ([spm.Metric("Recipe/Selected", spm.STRING, "blue-brick")], "unknown recipe 'blue-brick'"),
            ([spm.Metric("Recipe/Selected", spm.BOOLEAN, True)], "Recipe/Selected must be a String"),
            ([spm.Metric("Counts/OK", spm.UINT64, 0)], "unknown metric 'Counts/OK'"),
            (b"\x0a\xff\xff", "not a Sparkplug B protobuf payload"),
        ):
            host.command("DCMD", body, "st")
            assert poll(lambda: expected in " ".join(
                device_metric(host.of("DDATA", "st"), "Device Control/Command Error")), WAIT_S), expected  # fmt: skip
        host.command("DCMD", [spm.Metric("Recipe/Selected", spm.STRING, "default")], "nosuchstation")
        assert poll(lambda: "unknown device 'nosuchstation'" in " ".join(
            device_metric(host.of("NDATA"), "Node Control/Command Error")), WAIT_S)  # fmt: skip
        assert service.recipes.selected == "grey-tile"
        host.command("DCMD", [spm.Metric("Status/Paused", spm.BOOLEAN, True)], "st")
        assert poll(lambda: service.lane.paused.is_set(), WAIT_S)
        host.command("NCMD", [spm.Metric("Node Control/Rebirth", spm.BOOLEAN, True)])
        assert poll(lambda: len(host.of("DBIRTH", "st")) == 2, WAIT_S), "no rebirth"
        reborn = host.of("NBIRTH")[-1]
        assert reborn["seq"] == 0 and reborn["metrics"]["bdSeq"] == nbirth["metrics"]["bdSeq"]  # same session
        assert host.of("DBIRTH", "st")[-1]["metrics"]["Status/Paused"] is True
        assert host.of("DBIRTH", "st")[-1]["metrics"]["Inspection/Part ID"] == "P-2"  # the last verdict, kept
    finally:
        assert running.stop() == 0
        node.close()
        subscriber.close()
    death = poll(lambda: host.of("NDEATH"), WAIT_S)
    assert death and death[-1]["metrics"]["bdSeq"] == nbirth["metrics"]["bdSeq"] and death[-1]["seq"] is None
    sequence = host.sequence()
    assert sequence == [n % 256 for n in range(sequence[0], sequence[0] + len(sequence))] or all(
        (b - a) % 256 == 1 or b == 0 for a, b in zip(sequence, sequence[1:])
    )  # +1 per message; 0 again only on a rebirth


# -- seq wrap, bdSeq per connect (a minimal station: only the node's bookkeeping is under test) ------------


class StationStandIn:
    name = "press-1"
    selected = "default"

    def trigger_part(self, part_id: str, recipe_id: str | None = None) -> str:
        return "accepted"

    def select_recipe(self, recipe_id: str) -> dict[str, Any]:
        if recipe_id != "default":
            raise CommandRejected(f"unknown recipe {recipe_id!r}; this station has: default")
        return {}

    def pause(self) -> dict[str, Any]:
        return {}

    def resume(self) -> dict[str, Any]:
        return {}

    def line_state(self) -> LineState:
        return LineState("online", True, False, False, True, self.selected, ("default",))


def _verdict(index: int) -> FrameVerdict:
    return FrameVerdict(
        station=StationRef(site="s", area="a", line="l", station="press-1", camera="c"),
        source=SourceRef(id="x", frame_index=index, captured_at=datetime.now(UTC), part_id=f"P-{index}"),
        verdict="OK" if index % 3 else "NG", confidence=0.5, recipe="default",
        model=ModelRef(id="m", backend="torch", precision="float32", random_weights=True),
    )  # fmt: skip


def test_seq_wraps_at_256_and_bdseq_goes_up_per_connect(broker: Mosquitto, host: Host, tmp_path: Path) -> None:
    link = mqtt_config(broker.port, tmp_path / "unused.sqlite")
    births = []
    for connect in range(2):
        node = SparkplugNode(settings(tmp_path), link)
        sink = node.add_device(StationStandIn())
        node.start()
        assert poll(lambda: len(host.of("DBIRTH", "press-1")) == connect + 1, WAIT_S), "no births"
        births.append(host.of("NBIRTH")[-1]["metrics"]["bdSeq"])
        if connect == 0:
            for index in range(300):
                sink.publish(_verdict(index))
            assert poll(lambda: len(host.of("DDATA", "press-1")) >= 300, WAIT_S), "DDATA missing"
        node.close()
        assert poll(lambda: len(host.of("NDEATH")) == connect + 1, WAIT_S), "no NDEATH on a clean stop"
    assert births == [0, 1]
    assert [d["metrics"]["bdSeq"] for d in host.of("NDEATH")] == births
    seqs = [p["seq"] for p in host.of("DDATA", "press-1")][:300]
    assert seqs[0] == 2  # NBIRTH 0, DBIRTH 1
    assert seqs == [(2 + n) % 256 for n in range(300)]  # 255 is followed by 0
    counts = host.of("DDATA", "press-1")[299]["metrics"]
    assert (counts["Counts/OK"], counts["Counts/NG"]) == (200, 100) and abs(counts["Yield"] - 2 / 3) < 1e-9
    assert (tmp_path / "bdseq").read_text().strip() == "2"


# -- the box dies ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_killing_the_service_yields_ndeath_with_the_births_bdseq(
    broker: Mosquitto, host: Host, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from inspector.demo_data import write_demo_clip

    clip = write_demo_clip(tmp_path / "demo", frames=8, size=(256, 192), fps=10.0).video
    data = station_data(tiny_model_dir, str(clip), pace=True, loop=True)
    data["sinks"] = {"mqtt": {"port": broker.port, "topic_root": ROOT, "outbox": str(tmp_path / "outbox.sqlite")}}
    data["edge"] = {
        "metrics_port": 0,
        "live_port": 0,
        "sparkplug": {"group_id": GROUP, "edge_node_id": NODE, "bdseq_file": str(tmp_path / "bdseq")},
    }
    (tmp_path / "bdseq").write_text("41\n")  # a box that has connected 41 times before
    config = tmp_path / "station.yaml"
    config.write_text(yaml.safe_dump(data))
    log_path = tmp_path / "edge.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge", "--config", str(config)], cwd=tmp_path, stdout=log,
            stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
        )  # fmt: skip
    try:
        ddata = poll(lambda: host.of("DDATA", "st"), 180.0)
        assert ddata, f"no DDATA from the service:\n{log_path.read_text(errors='replace')[-4000:]}"
        (birth,) = host.of("NBIRTH")
        assert birth["metrics"]["bdSeq"] == 41
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        death = poll(lambda: host.of("NDEATH"), WAIT_S)
        assert death, "no NDEATH after SIGKILL (the Will)"
        assert death[0]["metrics"]["bdSeq"] == birth["metrics"]["bdSeq"]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_with_a_primary_host_the_births_wait_for_its_state_online(broker: Mosquitto, host: Host,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    config = SparkplugConfig(group_id=GROUP, edge_node_id=NODE, bdseq_file=tmp_path / "bdseq",
                             primary_host_id="scada-1")  # fmt: skip
    node = SparkplugNode(config, mqtt_config(broker.port, tmp_path / "unused.sqlite"))
    sink = node.add_device(StationStandIn())
    node.start()
    try:
        state_topic = "spBv1.0/STATE/scada-1"
        host.client.publish(state_topic, b"not json", qos=1, retain=True).wait_for_publish(5)  # ignored, logged
        sink.publish(_verdict(1))  # not born yet: counted, not sent
        assert poll(lambda: node.undelivered == 1, WAIT_S)
        assert host.of("NBIRTH") == []
        # Sparkplug 3.0 hosts publish STATE retained, so a node that connects later still learns it.
        host.client.publish(state_topic, b'{"online": true, "timestamp": 1}', qos=1, retain=True).wait_for_publish(5)
        assert poll(lambda: host.of("DBIRTH", "press-1"), WAIT_S), "no births after the host came online"
        assert host.of("DBIRTH", "press-1")[0]["metrics"]["Inspection/Part ID"] == "P-1"  # the last verdict, kept
    finally:
        node.close()
