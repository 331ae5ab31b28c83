"""Trigger -> verdict latency through each trigger path, with inference time beside it (real Mosquitto).

    python bench/trigger_latency.py [--parts 40] [--paths mqtt,opcua,camera,opcua_camera]
                                    [--model DIR] [--device cpu|cuda] [--tile 256] [--fps 30]

In one process: its own Mosquitto on a free port and, for each path in turn, the edge service
(EdgeService, as ``inspector-edge`` builds it) with a line controller that triggers one part,
waits for that part's reject on MQTT, then triggers the next. The thresholds are so low that
every part is NG, so every trigger has a reject to wait for. The paths:

- ``mqtt``: a trigger message on ``.../trigger``; the source is a looping video paced at ``--fps``
  (a free-running camera's cadence: the part waits for the first frame taken after its trigger);
- ``opcua``: the same source, the part triggered by an asyncua client calling StartSingleJob
  (the call returns at once; the reject is what the controller waits for);
- ``camera``: a trigger message fires pypylon's emulated camera (software trigger): exactly one
  image is taken for the part, no waiting for a frame;
- ``opcua_camera``: StartSingleJob firing the emulated camera (the line-integration set-up).

Figures per path (ms): ``trigger_to_reject_p50/p95`` (trigger sent -> reject in the controller's
hands) and ``inference_p50/p95``, the service's own time to judge the part's frame in the same
run: ``ratio_p50`` is how much the whole round trip costs over inference alone. A path whose
package is missing (pypylon, asyncua) is reported as skipped with the reason. Without
``--model`` a tiny RANDOM model is built (its verdicts mean nothing; the latency does).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("PYLON_CAMEMU", "1")  # pypylon's emulator, read when its transport layers load

import numpy as np  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from _common import bench_station, emit, use_checkout  # noqa: E402

PATHS = ("mqtt", "opcua", "camera", "opcua_camera")
TOPIC = "bench/s/a/l/bench"


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=40)
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated, of {', '.join(PATHS)}")
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: a tiny random model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if unknown := sorted(set(paths) - set(PATHS)):
        parser.error(f"unknown path(s) {', '.join(unknown)}; use {', '.join(PATHS)}")
    logging.basicConfig(level=logging.WARNING)
    use_checkout()  # this checkout and tests/support (the Mosquitto helper) on sys.path

    from inspector.models import write_tiny_model

    from mosquitto import Mosquitto  # tests/support, on sys.path through _common

    workdir = Path(tempfile.mkdtemp(prefix="trigger-bench-"))
    broker = Mosquitto(workdir / "broker")
    try:
        broker.start()
    except RuntimeError as error:  # not installed, or did not listen
        shutil.rmtree(workdir, ignore_errors=True)
        sys.exit(str(error))
    figures: dict[str, Any] = {}
    try:
        model = args.model or write_tiny_model(workdir / "tiny", seed=0)
        for path in paths:
            try:
                figures[path] = run_path(path, args, model, broker.port, workdir / path)
            except ImportError as error:
                figures[path] = {"skipped": f"{error.name or error} is not installed"}
    finally:
        broker.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    emit({
        "bench": "trigger_latency", "parts": args.parts, "device": args.device, "tile": args.tile,
        "tiles_per_frame": 2, "camera_fps": args.fps, "random_model": args.model is None, "paths": figures,
    })  # fmt: skip


def run_path(path: str, args: argparse.Namespace, model: Path, port: int, workdir: Path) -> dict[str, Any]:
    from edge.metrics import EdgeMetrics
    from edge.options import ServiceOptions
    from edge.reload import Overrides
    from edge.sdnotify import SystemdNotifier
    from edge.supervisor import EdgeService
    from inspector.config import MqttConfig
    from inspector.mqtt import MqttSink
    from inspector.pipeline import build_inspector, warm_up

    workdir.mkdir(parents=True)
    over_opcua = path.startswith("opcua")
    size = (args.tile * 2, args.tile)
    source = camera_source(workdir, size) if path.endswith("camera") else video_source(workdir, size, args.fps)
    source["trigger"] = "opcua" if over_opcua else "mqtt"
    config = bench_station(
        model, tile=args.tile, device=args.device, batch_size=8, threshold=0.01,
        station={"site": "s", "area": "a", "line": "l", "station": "bench"},
        source={**source, "trigger_timeout_s": 30.0},
    )  # fmt: skip
    inspector = build_inspector(config)
    warm_up(inspector, size)
    link = MqttConfig(port=port, topic_root="bench", outbox=workdir / "outbox.sqlite")
    sink = MqttSink(link, config.station)
    sinks: list[Any] = [sink]  # + the OPC UA station sink once the service exists (it is the StationControl)
    server = None
    if over_opcua:
        server = opcua_server()
    service = EdgeService(
        config, inspector, None, sinks=sinks, mqtt=sink, metrics=EdgeMetrics(),
        notifier=SystemdNotifier(""), options=ServiceOptions(heartbeat_s=5.0, tick_s=0.05),
        overrides=Overrides(), evidence=None, mqtt_config=link,
    )  # fmt: skip
    if server is not None:
        service.sinks.append(server.add_station(service))
        server.start(timeout_s=120.0)  # a loaded machine starts asyncua slowly
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    controller = Controller(port)
    try:
        deadline = time.monotonic() + 60
        while not (service.capture.healthy and (over_opcua or (service.link and service.link.connected))):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path}: the station did not come up: {service.capture.reason()}")
            time.sleep(0.05)
        if over_opcua:
            assert server is not None
            with OpcUaCaller(server.endpoint) as caller:
                latencies = controller.measure(args.parts, caller.start_single_job)
        else:
            latencies = controller.measure(args.parts, controller.publish_trigger)
        inference_p50, inference_p95 = service.latency.percentiles(50, 95)
    finally:
        service.stop_event.set()
        runner.join(60)
        controller.close()
        if server is not None:
            server.close()
    p50 = percentile(latencies, 50)
    return {
        "rejects_received": len(latencies),
        "trigger_to_reject_p50_ms": p50,
        "trigger_to_reject_p95_ms": percentile(latencies, 95),
        "trigger_to_reject_max_ms": max(latencies) if latencies else None,
        "inference_p50_ms": inference_p50,
        "inference_p95_ms": inference_p95,
        "ratio_p50": p50 / inference_p50 if p50 and inference_p50 else None,
    }


def video_source(workdir: Path, size: tuple[int, int], fps: float) -> dict[str, Any]:
    from inspector.demo_data import write_demo_clip

    clip = write_demo_clip(workdir / "clip", frames=int(fps * 2), size=size, fps=fps).video
    return {"uri": str(clip), "loop": True, "pace": True}


def camera_source(workdir: Path, size: tuple[int, int]) -> dict[str, Any]:
    """pypylon's emulator, software-triggered, serving demo frames written as PNGs."""
    import cv2
    import pypylon.pylon  # noqa: F401 - ImportError here: the path is skipped

    from inspector.sources import open_source

    clip = video_source(workdir, size, 10.0)["uri"]
    folder = workdir / "frames"
    folder.mkdir()
    with open_source(clip) as frames:
        for frame in frames:
            cv2.imwrite(str(folder / f"frame_{frame.index:03d}.png"), frame.image)
    width, height = size
    camera = {
        "trigger": "software", "pixel_format": "BGR8", "roi": {"width": width, "height": height},
        "features": {"ImageFilename": str(folder), "ImageFileMode": "On", "TestImageSelector": "Off"},
    }  # fmt: skip
    return {"uri": "pylon://0", "camera": camera}


def opcua_server() -> Any:
    from edge.opcua.server import OpcUaServer
    from inspector.plc_config import OpcUaConfig

    from mosquitto import free_port

    settings = OpcUaConfig(port=free_port(), security_policies=["None"], allow_anonymous=True)
    return OpcUaServer(settings)


class OpcUaCaller:
    """A PLC that only calls methods: StartSingleJob(PartId) on the bench station, from its own loop."""

    def __init__(self, endpoint: str) -> None:
        from asyncua import Client

        self._loop = asyncio.new_event_loop()
        self._client = Client(endpoint)
        self._station: Any = None
        self._method: Any = None

    def __enter__(self) -> OpcUaCaller:
        self._loop.run_until_complete(self._connect())
        return self

    async def _connect(self) -> None:
        await self._client.connect()
        ns = await self._client.get_namespace_index("urn:line-inspector:machine-vision")
        self._station = self._client.get_node(f"ns={ns};s=bench")
        self._method = self._client.get_node(f"ns={ns};s=bench.StartSingleJob")

    def start_single_job(self, part: str, _index: int) -> None:
        self._loop.run_until_complete(self._station.call_method(self._method, part))

    def __exit__(self, *exc: object) -> None:
        self._loop.run_until_complete(self._client.disconnect())
        self._loop.close()


class Controller:
    """The line controller's MQTT side: triggers out (mqtt paths), rejects in (every path)."""

    def __init__(self, port: int) -> None:
        self.arrived: dict[str, float] = {}
        self._got = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"{TOPIC}/reject", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        part = json.loads(message.payload).get("part_id")
        with self._got:
            self.arrived[part] = time.perf_counter()
            self._got.notify_all()

    def publish_trigger(self, part: str, index: int) -> None:
        self.client.publish(f"{TOPIC}/trigger", json.dumps({"part_id": part, "sequence": index}), qos=1)

    def measure(self, parts: int, trigger: Callable[[str, int], None]) -> list[float]:
        latencies = []
        for index in range(parts):
            part = f"P-{index:05d}"
            sent = time.perf_counter()
            trigger(part, index)
            with self._got:
                self._got.wait_for(lambda p=part: p in self.arrived, timeout=60)
            if part in self.arrived:
                latencies.append((self.arrived[part] - sent) * 1000)
        return latencies

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


if __name__ == "__main__":
    main()
