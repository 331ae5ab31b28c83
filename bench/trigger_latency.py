"""Triggered inspection latency: trigger published -> reject received, with a real Mosquitto.

    python bench/trigger_latency.py [--parts 40] [--model DIR] [--device cpu|cuda] [--tile 256] [--fps 30]

In one process: its own Mosquitto on a free port, the edge service (EdgeService, as
``inspector-edge`` builds it) with ``source.trigger: mqtt`` on a looping video paced at
``--fps`` (a live camera's cadence), and a line controller (a paho client) that publishes
one trigger per part, waits for that part's reject, then the next. The thresholds are set so
low that every part is NG, so every trigger has a reject to wait for.

Figures (ms): ``trigger_to_reject_p50/p95`` (publish -> reject in the controller's hands:
MQTT both ways, waiting for the first frame taken after the trigger, inference, the outbox);
``inference_p50/p95``, the service's own time to judge one frame (the same frames, the same
run), the reference: ``ratio_p50`` is how much the whole round trip costs over inference alone.
Without ``--model`` a tiny RANDOM model is built (its verdicts mean nothing; the latency does).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from _common import bench_station, use_checkout


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=40)
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: a tiny random model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    use_checkout()  # this checkout and tests/support (the Mosquitto helper) on sys.path

    from edge.capture import source_opener
    from edge.metrics import EdgeMetrics
    from edge.options import ServiceOptions
    from edge.sdnotify import SystemdNotifier
    from edge.supervisor import EdgeService
    from inspector.config import MqttConfig
    from inspector.demo_data import write_demo_clip
    from inspector.models import write_tiny_model
    from inspector.mqtt import MqttSink
    from inspector.pipeline import build_inspector, warm_up
    from inspector.runtime import Overrides

    from mosquitto import Mosquitto  # tests/support, on sys.path through _common

    workdir = Path(tempfile.mkdtemp(prefix="trigger-bench-"))
    broker = Mosquitto(workdir / "broker")
    try:
        broker.start()
    except RuntimeError as error:  # not installed, or did not listen
        shutil.rmtree(workdir, ignore_errors=True)
        sys.exit(str(error))
    port = broker.port
    try:
        model = args.model or write_tiny_model(workdir / "tiny", seed=0)
        size = (args.tile * 2, args.tile)
        clip = write_demo_clip(workdir / "clip", frames=int(args.fps * 2), size=size, fps=args.fps).video
        config = bench_station(
            model, tile=args.tile, device=args.device, batch_size=8, threshold=0.01,
            station={"site": "s", "area": "a", "line": "l", "station": "bench"},
            source={"uri": str(clip), "loop": True, "pace": True, "trigger": "mqtt", "trigger_timeout_s": 30.0},
        )  # fmt: skip
        inspector = build_inspector(config)
        warm_up(inspector, size)
        link = MqttConfig(port=port, topic_root="bench", outbox=workdir / "outbox.sqlite")
        sink = MqttSink(link, config.station)
        service = EdgeService(
            config, inspector, source_opener(config.source)(), sinks=[sink], mqtt=sink, metrics=EdgeMetrics(),
            notifier=SystemdNotifier(""), options=ServiceOptions(heartbeat_s=5.0, tick_s=0.05),
            overrides=Overrides(), evidence=None, mqtt_config=link,
        )  # fmt: skip
        runner = threading.Thread(target=service.run, daemon=True)
        runner.start()

        arrived: dict[str, float] = {}
        got = threading.Condition()

        def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
            part = json.loads(message.payload).get("part_id")
            with got:
                arrived[part] = time.perf_counter()
                got.notify_all()

        controller = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        controller.on_message = on_message
        controller.connect("127.0.0.1", port)
        controller.subscribe("bench/s/a/l/bench/reject", qos=1)
        controller.loop_start()
        deadline = time.monotonic() + 30
        while not (service.link and service.link.connected) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        latencies = []
        for index in range(args.parts):
            part = f"P-{index:05d}"
            sent = time.perf_counter()
            controller.publish("bench/s/a/l/bench/trigger", json.dumps({"part_id": part, "sequence": index}), qos=1)
            with got:
                got.wait_for(lambda p=part: p in arrived, timeout=60)
            if part in arrived:
                latencies.append((arrived[part] - sent) * 1000)
            time.sleep(0.05)
        inference_p50, inference_p95 = service.latency.percentiles(50, 95)
        service.stop_event.set()
        runner.join(60)
        controller.loop_stop()
        controller.disconnect()
    finally:
        broker.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    p50 = percentile(latencies, 50)
    print(
        json.dumps(
            {
                "bench": "trigger_latency",
                "parts": args.parts,
                "rejects_received": len(latencies),
                "device": args.device,
                "tile": args.tile,
                "tiles_per_frame": 2,
                "camera_fps": args.fps,
                "random_model": args.model is None,
                "trigger_to_reject_p50_ms": p50,
                "trigger_to_reject_p95_ms": percentile(latencies, 95),
                "inference_p50_ms": round(inference_p50, 2),
                "inference_p95_ms": round(inference_p95, 2),
                "ratio_p50": round(p50 / inference_p50, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
