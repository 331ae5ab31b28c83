"""MQTT publishing throughput: verdicts through MqttSink's durable outbox vs. a bare paho QoS 1 client.

    python bench/mqtt.py [--count 5000] [--repeat 3] [--protocol 5]

Starts its own Mosquitto on a free port (tests/mosquitto.py), then in this one process
times, until every message is acknowledged (PUBACK):

- ``outbox_verdicts_per_s``: ``MqttSink.publish(verdict)`` for N verdicts: JSON, SQLite
  append (durable against a process crash) and a QoS 1 send, deleted on PUBACK;
- ``bare_paho_per_s``: the same verdicts serialised the same way and published at QoS 1
  with the same v5 properties by a plain paho client (in-memory queue only: a crash loses
  them), the baseline for "what does durability cost".

All verdicts are OK (one message each; NG adds a reject message). Each side runs --repeat
times, alternating; the median counts. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from inspector.config import MqttConfig, StationConfig  # noqa: E402
from inspector.mqtt import MqttSink, Topics  # noqa: E402
from inspector.mqtt.connection import message_properties  # noqa: E402
from inspector.payloads.verdict import SCHEMA_ID, SCHEMA_VERSION, FrameVerdict, ModelRef, SourceRef, StationRef  # noqa: E402

from mosquitto import Mosquitto  # noqa: E402  (tests/mosquitto.py, the broker helper the tests use)


def make_verdicts(n: int, station: StationConfig) -> list[FrameVerdict]:
    ref = StationRef(**station.model_dump())
    model = ModelRef(id="Qwen3-VL-4B-Instruct", backend="tensorrt", precision="fp8", random_weights=False)
    now = datetime.now(UTC)
    return [
        FrameVerdict(
            station=ref,
            source=SourceRef(id="rtsp://10.20.3.41:554/stream1", frame_index=i, captured_at=now, part_id=f"P{i:08d}"),
            verdict="OK",
            confidence=0.97,
            model=model,
        )
        for i in range(n)
    ]


def run_outbox(config: MqttConfig, station: StationConfig, verdicts: list[FrameVerdict], workdir: Path) -> float:
    outbox = Path(tempfile.mkstemp(suffix=".sqlite", dir=workdir)[1])
    outbox.unlink()
    sink = MqttSink(config.model_copy(update={"outbox": outbox}), station)
    try:
        deadline = time.monotonic() + 10
        while not sink.connected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"MqttSink did not connect: {sink.last_error}")
            time.sleep(0.01)
        start = time.perf_counter()
        for verdict in verdicts:
            sink.publish(verdict)
        if not sink.wait_drained(120):
            raise RuntimeError(f"outbox not drained: {sink.stats()}")
        return len(verdicts) / (time.perf_counter() - start)
    finally:
        sink.close()


def run_bare(config: MqttConfig, station: StationConfig, verdicts: list[FrameVerdict]) -> float:
    topic = Topics.for_station(config.topic_root, station).verdict
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=mqtt.MQTTv5
                         if config.protocol == "5" else mqtt.MQTTv311)  # fmt: skip
    client.max_inflight_messages_set(config.max_inflight)
    acked = 0
    done = threading.Event()
    connected = threading.Event()

    def on_publish(_c: mqtt.Client, _u: object, _mid: int, _rc: object, _p: object) -> None:
        nonlocal acked
        acked += 1
        if acked == len(verdicts):
            done.set()

    client.on_publish = on_publish
    client.on_connect = lambda *_: connected.set()
    client.connect(config.host, config.port)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("bare paho client did not connect")
        start = time.perf_counter()
        for verdict in verdicts:
            props = message_properties(config, schema=SCHEMA_ID, schema_version=SCHEMA_VERSION,
                                       message_id=verdict.message_id)  # fmt: skip
            client.publish(topic, verdict.to_json(include_tiles=False).encode(), 1, False, props)
        if not done.wait(120):
            raise RuntimeError(f"bare paho: only {acked} of {len(verdicts)} acknowledged")
        return len(verdicts) / (time.perf_counter() - start)
    finally:
        client.disconnect()
        client.loop_stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000, help="verdicts per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (median reported)")
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    args = parser.parse_args()

    station = StationConfig(site="plant-lyon", area="machining", line="line-3", station="final-check")
    verdicts = make_verdicts(args.count, station)
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        config = MqttConfig(host=broker.host, port=broker.port, protocol=args.protocol)
        warm = verdicts[: min(500, len(verdicts))]
        run_outbox(config, station, warm, Path(tmp))
        run_bare(config, station, warm)
        outbox_rates, bare_rates = [], []
        for _ in range(args.repeat):
            outbox_rates.append(run_outbox(config, station, verdicts, Path(tmp)))
            bare_rates.append(run_bare(config, station, verdicts))
    outbox_rate = statistics.median(outbox_rates)
    bare_rate = statistics.median(bare_rates)
    print(json.dumps({
        "bench": "mqtt",
        "count": args.count,
        "repeat": args.repeat,
        "protocol": args.protocol,
        "payload_bytes": len(verdicts[0].to_json(include_tiles=False)),
        "outbox_verdicts_per_s": round(outbox_rate, 1),
        "bare_paho_per_s": round(bare_rate, 1),
        "ratio": round(outbox_rate / bare_rate, 3),
        "outbox_runs": [round(r, 1) for r in outbox_rates],
        "bare_runs": [round(r, 1) for r in bare_rates],
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
