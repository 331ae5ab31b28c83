"""Several cameras on one box (edge/stations.py): the multi-station file, and 4 stations on one model in one process."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import yaml
from edge_station import ROOT, Subscriber, build_service, config_for, station_data

from edge.collectors import StationsCollector
from edge.inference import Outgoing
from edge.options import service_options, station_options
from edge.publish import PublishWorker
from edge.queues import BoundedQueue
from edge.reload import build_candidate
from edge.sdnotify import SystemdNotifier
from edge.stations import MultiStationService
from inspector.errors import ConfigError
from inspector.payloads.verdict import FrameVerdict, ModelRef, SourceRef, StationRef
from inspector.stations import is_multi_station, load_stations

from mosquitto import Mosquitto
from streams import MjpegCamera, poll

WAIT_S = 90.0
COMMON = {
    "model": {"path": "models/tiny", "batch_size": 4},
    "tiling": {"tile": 256, "overlap": 0.0, "global_view": False},
    "inspection": {"product": "a surface", "defects": {"scratch": {"description": "a line"}}},
}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "stations.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_each_station_gets_the_common_sections_and_its_own(tmp_path: Path) -> None:
    path = write(tmp_path, {
        "edge": {"metrics_port": 0},
        "common": COMMON,
        "stations": {
            "press-1": {"source": {"uri": "rtsp://cam1/s"}},
            "press-2": {"source": {"uri": "rtsp://cam2/s"}, "inspection": {"uncertain_band": 0.05}},
        },
    })  # fmt: skip
    assert is_multi_station(path)
    edge, stations = load_stations(path)
    assert edge.metrics_port == 0 and list(stations) == ["press-1", "press-2"]
    assert stations["press-2"].station.station == "press-2" and stations["press-2"].source.uri == "rtsp://cam2/s"
    assert stations["press-2"].inspection.uncertain_band == 0.05
    assert stations["press-2"].inspection.product == "a surface"  # merged deeply, not replaced


@pytest.mark.parametrize(
    ("stations", "message"),
    [
        ({"a": {"model": {"path": "models/other"}}, "b": {}}, "stations.b.model differs from stations.a.model"),
        ({"a": {"station": {"station": "x"}}, "b": {"station": {"station": "x"}}}, "the same site/area/line/station"),
        ({"a": {"edge": {"heartbeat_s": 1}}}, "'edge' belongs at the top level"),
        ({"a": {"tiling": {"tile": 100}}}, "stations.a: invalid configuration"),
        ({"../a": {"station": {"station": "a"}}}, "a station key must be a plain name"),
        (
            {"a": {"sinks": {"jsonl": {"path": "v.jsonl"}}}, "b": {"sinks": {"jsonl": {"path": "v.jsonl"}}}},
            "write the same file",
        ),
    ],
)
def test_a_bad_multi_station_file_names_the_station(tmp_path: Path, stations: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_stations(write(tmp_path, {"common": COMMON, "stations": stations}))


class _FullDisk:
    """A sink that refuses every verdict, as an outbox on a full disk does."""

    def publish(self, verdict: FrameVerdict) -> None:
        raise OSError(28, "No space left on device")

    def close(self, timeout_s: float = 5.0) -> None:
        pass


def _verdict(station: str, index: int) -> FrameVerdict:
    return FrameVerdict(
        station=StationRef(site="s", area="a", line="l", station=station, camera="cam0"),
        model=ModelRef(id="tiny", backend="torch", precision="float32", random_weights=True),
        verdict="OK", confidence=0.9, source=SourceRef(id=station, frame_index=index, captured_at=datetime.now(UTC)),
    )  # fmt: skip


def test_each_station_spills_its_failed_verdicts_to_its_own_file(tmp_path: Path) -> None:
    """Two stations of one service, both sinks refusing at once: each station's spill file holds its own
    verdicts, every one of them, none of the other's (one shared file would interleave them)."""
    path = write(tmp_path, {
        "edge": {"spill_file": "spill/undelivered.jsonl"},
        "common": COMMON,
        "stations": {"press-1": {"source": {"uri": "rtsp://cam1/s"}}, "press-2": {"source": {"uri": "rtsp://cam2/s"}}},
    })  # fmt: skip
    edge, stations = load_stations(path)
    publishers: dict[str, tuple[BoundedQueue[Outgoing], PublishWorker]] = {}
    for name in stations:
        options = station_options(service_options(edge, path), name)
        queue: BoundedQueue[Outgoing] = BoundedQueue(64)
        publishers[name] = queue, PublishWorker(queue, [_FullDisk()], spill=options.spill_file, retries=0)
    spills = {name: publisher._spill for name, (_, publisher) in publishers.items()}
    assert len(set(spills.values())) == 2 and all(s.parent == tmp_path / "spill" for s in spills.values())
    for _, publisher in publishers.values():
        publisher.start()
    for index in range(20):
        for name, (queue, _) in publishers.items():
            queue.put_latest(Outgoing(_verdict(name, index)))
    try:
        assert poll(lambda: all(p.spilled == 20 for _, p in publishers.values()), 30)
    finally:
        for _, publisher in publishers.values():
            publisher.stop()
            publisher.join(10)
    for name, spill in spills.items():
        kept = [json.loads(line) for line in spill.read_text().splitlines()]
        assert [(v["source"]["id"], v["source"]["frame_index"]) for v in kept] == [(name, i) for i in range(20)]


def test_the_example_multi_station_config_is_valid() -> None:
    edge, stations = load_stations(Path(__file__).resolve().parents[1] / "configs" / "multi-station.yaml")
    assert len(stations) == 4 and len({s.station.station for s in stations.values()}) == 4


def retained_status(port: int, station: str) -> dict:
    got: list[dict] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, *_: c.subscribe(f"{ROOT}/s/a/l1/{station}/status")
    client.on_message = lambda _c, _u, m: got.append(json.loads(m.payload))
    client.connect("127.0.0.1", port)
    client.loop_start()
    poll(lambda: got, 10)
    client.loop_stop()
    client.disconnect()
    return got[-1] if got else {}


def four_cameras(*, seed: int, period_s: float) -> tuple[list[MjpegCamera], list[str]]:
    """Four HTTP camera stand-ins, each its own random picture, and the station names cam0..cam3."""
    rng = np.random.default_rng(seed)
    cameras = [MjpegCamera(rng.integers(0, 255, (192, 256, 3), dtype=np.uint8), period_s=period_s) for _ in range(4)]
    return cameras, [f"cam{i}" for i in range(4)]


def verdict_counts(subscriber: Subscriber, names: list[str]) -> Callable[[], dict[str, int]]:
    """Verdicts received so far per station, each time it is called."""
    return lambda: {n: len(subscriber.json("verdict", n)) for n in names}


def test_four_stations_one_model_and_a_dead_camera_stalls_no_other(
    broker: Mosquitto, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from inspector.pipeline import build_inspector

    cameras, names = four_cameras(seed=3, period_s=0.05)
    configs = [config_for(station_data(tiny_model_dir, c.url, name=n)) for c, n in zip(cameras, names)]
    first = build_inspector(configs[0])
    inspectors = [first] + [build_candidate(first, c) for c in configs[1:]]
    assert all(i.backend is first.backend for i in inspectors)  # one model instance
    services = [build_service(c, i, broker.port, tmp_path, shared_inference=True) for c, i in zip(configs, inspectors)]
    runner = MultiStationService(services, notifier=SystemdNotifier(""), tick_s=0.05)
    subscriber = Subscriber(broker.port)
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(runner.run()), daemon=True)
    thread.start()
    try:
        counts = verdict_counts(subscriber, names)
        assert poll(lambda: all(v >= 2 for v in counts().values()), WAIT_S), f"not every station publishes: {counts()}"
        cameras[2].stop()  # this camera dies
        assert poll(lambda: not services[2].capture.healthy, WAIT_S), "the dead camera is not noticed"
        before = counts()
        alive = [n for n in names if n != "cam2"]
        assert poll(lambda: all(counts()[n] >= before[n] + 3 for n in alive), WAIT_S), (
            f"the other stations stalled: before {before}, now {counts()}"
        )
        assert poll(lambda: retained_status(broker.port, "cam2").get("state") == "degraded", WAIT_S)
        assert retained_status(broker.port, "cam0").get("state") == "online"
        # Tiles of several cameras went through the model together.
        inspected = sum(s.lane.inspected for s in services)
        assert runner.inference.rounds < inspected
        verdicts = subscriber.json("verdict", "cam1")
        assert {v["station"]["station"] for v in verdicts} == {"cam1"}  # each station on its own topics
        registry_text = _metrics_text(StationsCollector({s.name: s.metrics.registry for s in services}))
        assert 'inspector_frames_inspected_total{station="cam3"}' in registry_text
    finally:
        runner.stop_event.set()
        thread.join(60)
        subscriber.close()
        for camera in cameras:
            if camera is not cameras[2]:
                camera.stop()
    assert code == [0]


def _metrics_text(collector: StationsCollector) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


@pytest.mark.slow
def test_inspector_edge_serves_four_stations_from_one_file(
    broker: Mosquitto, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The real CLI: one process, one model load, four cameras; one camera dies, three keep publishing."""
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    from mosquitto import free_port

    cameras, names = four_cameras(seed=5, period_s=0.1)
    common = station_data(tiny_model_dir, "unused")
    common.pop("source")
    common["station"].pop("station")
    common["sinks"] = {"mqtt": {"port": broker.port, "topic_root": ROOT}}
    stations = {
        name: {"source": {"uri": cam.url, "reconnect": {"initial_s": 0.1, "max_s": 0.5}},
               "sinks": {"mqtt": {"outbox": str(tmp_path / f"{name}.sqlite")}}}
        for name, cam in zip(names, cameras)
    }  # fmt: skip
    metrics_port, live_port = free_port(), free_port()
    path = tmp_path / "stations.yaml"
    path.write_text(yaml.safe_dump({"edge": {"heartbeat_s": 1, "live_port": live_port}, "common": common,
                                    "stations": stations}))  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "INSPECTOR_LIVE_TOKEN": "a-token-of-twenty-chars"}  # fmt: skip
    log_path = tmp_path / "edge.log"
    subscriber = Subscriber(broker.port)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge", "--config", str(path), "--metrics-port", str(metrics_port)],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    counts = verdict_counts(subscriber, names)

    def get(port: int, url: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{url}", timeout=10) as response:
            return response.read().decode()

    try:
        assert poll(lambda: all(v >= 2 for v in counts().values()), 180), (
            f"not every station publishes: {counts()}\n{log_path.read_text()[-4000:]}"
        )
        cameras[1].stop()
        poll(lambda: retained_status(broker.port, "cam1").get("state") == "degraded", WAIT_S)
        before = counts()
        alive = [n for n in names if n != "cam1"]
        assert poll(lambda: all(counts()[n] >= before[n] + 2 for n in alive), WAIT_S), (
            f"the other stations stalled: before {before}, now {counts()}\n{log_path.read_text()[-4000:]}"
        )
        assert retained_status(broker.port, "cam1").get("state") == "degraded"
        text = get(metrics_port, "/metrics")
        assert all(f'inspector_frames_inspected_total{{station="{n}"}}' in text for n in names)
        assert sorted(json.loads(get(metrics_port, "/healthz"))["state"]) == names  # no token: states only
        assert json.loads(get(live_port, "/api/stations"))["stations"] == names
        assert log_path.read_text().count("loading model") == 1  # one model for the four cameras
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(90)
        subscriber.close()
        for camera in cameras:
            if camera is not cameras[1]:
                camera.stop()
    assert code == 0, log_path.read_text()[-4000:]
