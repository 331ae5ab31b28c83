"""MQTT publishing throughput: verdicts through MqttSink's durable outbox vs. a bare paho QoS 1 client.

    python bench/mqtt.py [--count 5000] [--repeat 3] [--protocol 5] [--producers 4]

Starts its own Mosquitto on a free port (tests/support/mosquitto.py, the tests' helper), then in this one process
times, until every message is acknowledged (PUBACK):

- ``outbox_verdicts_per_s``: ``MqttSink.publish(verdict)`` for N verdicts from one thread:
  JSON, SQLite append (durable against a process crash, group-committed) and a QoS 1 send,
  acknowledged in the outbox on PUBACK;
- ``bare_paho_per_s``: the same verdicts serialised the same way and published at QoS 1
  with the same v5 properties by a plain paho client (in-memory queue only: a crash loses
  them), the baseline for "what does durability cost". ``ratio`` = outbox / bare.
- ``cpu_ratio``: bare paho's CPU time per verdict over the outbox's (this process, all its
  threads): what durability costs in CPU, less sensitive to a busy machine than wall time.
- ``commits_per_verdict``: SQLite transactions per verdict (group commit and acknowledgements
  riding along make it < 1 under load).
- ``producers_N``: the same with N publishing threads (several cameras on one box), where
  group commit shares one transaction among the verdicts that arrive during a commit.

All verdicts are OK (one message each; NG adds a reject message). Each side runs --repeat
times (5), alternating which goes first; the JSON gives the median, min and max of each side,
the ratio of the medians and the spread of the per-pair ratios. ``machine_before/after``: the
load average; on a shared machine the wall-clock rates swing with it, the ratios much less.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))  # the tests' Mosquitto

from inspector.config import MqttConfig, StationConfig  # noqa: E402
from inspector.mqtt import MqttSink, Topics  # noqa: E402
from inspector.mqtt.connection import message_properties  # noqa: E402
from inspector.payloads.verdict import SCHEMA_ID, SCHEMA_VERSION, FrameVerdict, ModelRef, SourceRef, StationRef  # noqa: E402

from mosquitto import Mosquitto  # noqa: E402


@dataclass(frozen=True)
class Run:
    per_s: float
    cpu_us: float  # process CPU time per verdict
    commits: float | None = None  # SQLite transactions per verdict (outbox only)


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


def _in_threads(work: list, producers: int, publish) -> None:
    """Publish ``work`` from ``producers`` threads, each its own interleaved share, in order within a share."""
    if producers == 1:
        for item in work:
            publish(item)
        return
    threads = [threading.Thread(target=lambda k=k: [publish(v) for v in work[k::producers]]) for k in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_outbox(
    config: MqttConfig, station: StationConfig, verdicts: list[FrameVerdict], workdir: Path, producers: int = 1
) -> Run:
    outbox = Path(tempfile.mkstemp(suffix=".sqlite", dir=workdir)[1])
    outbox.unlink()
    sink = MqttSink(config.model_copy(update={"outbox": outbox}), station)
    try:
        deadline = time.monotonic() + 10
        while not sink.connected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"MqttSink did not connect: {sink.last_error}")
            time.sleep(0.01)
        commits = sink.stats()["outbox_commits"]
        cpu, start = time.process_time(), time.perf_counter()
        _in_threads(verdicts, producers, sink.publish)
        if not sink.wait_drained(120):
            raise RuntimeError(f"outbox not drained: {sink.stats()}")
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        commits = sink.stats()["outbox_commits"] - commits
        return Run(len(verdicts) / wall, cpu / len(verdicts) * 1e6, commits / len(verdicts))
    finally:
        sink.close()


def run_bare(config: MqttConfig, station: StationConfig, verdicts: list[FrameVerdict], producers: int = 1) -> Run:
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

    def publish(verdict: FrameVerdict) -> None:
        props = message_properties(config, schema=SCHEMA_ID, schema_version=SCHEMA_VERSION,
                                   message_id=verdict.message_id)  # fmt: skip
        client.publish(topic, verdict.to_json(include_tiles=False).encode(), 1, False, props)

    client.on_publish = on_publish
    client.on_connect = lambda *_: connected.set()
    client.connect(config.host, config.port)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("bare paho client did not connect")
        cpu, start = time.process_time(), time.perf_counter()
        _in_threads(verdicts, producers, publish)
        if not done.wait(120):
            raise RuntimeError(f"bare paho: only {acked} of {len(verdicts)} acknowledged")
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        return Run(len(verdicts) / wall, cpu / len(verdicts) * 1e6)
    finally:
        client.disconnect()
        client.loop_stop()


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def compare(config: MqttConfig, station: StationConfig, verdicts: list, workdir: Path, repeat: int,
            producers: int) -> dict[str, object]:  # fmt: skip
    """``repeat`` pairs, alternating which side goes first (ABBA), so a load change hits both sides alike."""
    outbox_runs, bare_runs = [], []
    for k in range(repeat):
        if k % 2 == 0:
            outbox_runs.append(run_outbox(config, station, verdicts, workdir, producers))
            bare_runs.append(run_bare(config, station, verdicts, producers))
        else:
            bare_runs.append(run_bare(config, station, verdicts, producers))
            outbox_runs.append(run_outbox(config, station, verdicts, workdir, producers))
    outbox_rate = statistics.median(r.per_s for r in outbox_runs)
    bare_rate = statistics.median(r.per_s for r in bare_runs)
    outbox_cpu = statistics.median(r.cpu_us for r in outbox_runs)
    bare_cpu = statistics.median(r.cpu_us for r in bare_runs)
    return {
        "outbox_verdicts_per_s": round(outbox_rate, 1),
        "bare_paho_per_s": round(bare_rate, 1),
        "ratio": round(outbox_rate / bare_rate, 3),  # median over median
        # Each outbox run over the bare run beside it: drift in the machine's load cancels within a pair.
        "pair_ratio": _spread([o.per_s / b.per_s for o, b in zip(outbox_runs, bare_runs, strict=True)]),
        "outbox_per_s": _spread([r.per_s for r in outbox_runs]),
        "bare_per_s": _spread([r.per_s for r in bare_runs]),
        "outbox_cpu_us_per_verdict": round(outbox_cpu, 1),
        "bare_cpu_us_per_verdict": round(bare_cpu, 1),
        "cpu_ratio": round(bare_cpu / outbox_cpu, 3),
        "commits_per_verdict": round(statistics.median(r.commits or 0.0 for r in outbox_runs), 3),
    }


def machine() -> dict[str, object]:
    """How busy the machine is: on a shared box wall-clock rates swing, the ratios much less."""
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0]
    return {"cpus": cpus, "loadavg_1m": round(load, 2), "shared": load > 0.5 * cpus}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000, help="verdicts per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per side, alternating (median, min, max reported)")
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default="5")
    parser.add_argument("--producers", type=int, default=4, help="publishing threads of the second figure (0: skip)")
    args = parser.parse_args()

    station = StationConfig(site="plant-lyon", area="machining", line="line-3", station="final-check")
    verdicts = make_verdicts(args.count, station)
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        # Both sides: QoS 1, the same in-flight window (paho's default is 20; the sink's 100).
        config = MqttConfig(host=broker.host, port=broker.port, protocol=args.protocol)
        warm = verdicts[: min(500, len(verdicts))]
        run_outbox(config, station, warm, Path(tmp))
        run_bare(config, station, warm)
        figures: dict[str, object] = {
            "bench": "mqtt",
            "count": args.count,
            "repeat": args.repeat,
            "protocol": args.protocol,
            "payload_bytes": len(verdicts[0].to_json(include_tiles=False)),
            "settings": {
                "qos": 1,
                "max_inflight": config.max_inflight,
                "outbox_sync": config.outbox_sync,  # normal: survives a process crash, not a power loss
                "sqlite": "WAL, synchronous=" + ("FULL" if config.outbox_sync == "full" else "NORMAL"),
                "broker": "local Mosquitto, persistence true, autosave_interval 1",
            },
            "machine_before": machine(),
        }
        figures.update(compare(config, station, verdicts, Path(tmp), args.repeat, 1))
        if args.producers > 1:
            many = compare(config, station, verdicts, Path(tmp), args.repeat, args.producers)
            figures[f"producers_{args.producers}"] = many
        figures["machine_after"] = machine()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
