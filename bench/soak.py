"""Soak test of the edge service: loop the demo clip through ``inspector-edge`` for N minutes.

Not in CI. Starts its own Mosquitto on a free loopback port (or uses ``--publish URL``),
writes the demo clip and a tiny random model into a temp dir (or uses ``--clip`` /
``--model``), runs ``python -m edge --loop`` as a child process and samples its RSS
(/proc) and its ``/healthz`` every few seconds; at the end sends SIGTERM and waits for the
drain. Prints ONE JSON line:

    python bench/soak.py --minutes 10 [--pace] [--config configs/demo.yaml] [--model DIR] [--clip FILE]

Figures: frames_processed (inspected, error verdicts included), frames_published,
fps (over the soak window), rss_start_mib / rss_end_mib (peak RSS of the first / last
window of the soak; the soak starts after ``--warmup-s`` of inspection), rss_max_mib,
rss_growth_mib (end - start), rss_slope_mib_per_h (least squares through the window
peaks), outbox_high_water (most MQTT messages waiting at once, sampled by the service
every 0.25 s), outbox_left (messages in the outbox after the drain), exit_code.

RSS is sampled every ``--sample-s`` (1 s) but compared as per-window peaks (windows of
60 s, or a fifth of a short soak): the model's per-frame activations make instantaneous
RSS swing by tens of MiB, while a leak raises the peaks window after window.
``memory_flat`` is true when rss_growth_mib is at most ``--flat-mib`` (default 16).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(REPO / "tests" / "support"))  # the tests' Mosquitto helper

from mosquitto import Mosquitto, MosquittoNotFound, free_port  # noqa: E402

log = logging.getLogger("soak")
MIB = 1024 * 1024


def start_broker(directory: Path) -> Mosquitto:
    broker = Mosquitto(directory / "broker")
    try:
        return broker.start()
    except MosquittoNotFound as error:
        raise SystemExit(f"soak: {error}; or give a --publish URL") from None
    except RuntimeError as error:
        raise SystemExit(f"soak: mosquitto did not start: {error}") from None


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def healthz(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def window_peaks(samples: list[tuple[float, int]], window_s: float) -> list[tuple[float, int]]:
    """(window middle, highest RSS in it) for consecutive windows of ``window_s``; a short last one is dropped."""
    peaks: dict[int, int] = {}
    for t, rss in samples:
        key = int(t // window_s)
        peaks[key] = max(peaks.get(key, 0), rss)
    last = int(samples[-1][0] // window_s) if samples else 0
    if len(peaks) > 2 and samples and samples[-1][0] - last * window_s < window_s / 2:
        peaks.pop(last, None)
    return [((k + 0.5) * window_s, v) for k, v in sorted(peaks.items())]


def slope_per_hour(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS over time, in MiB per hour."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_r = sum(r for _, r in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (r - mean_r) for t, r in samples)
    return round(cov / var * 3600 / MIB, 3)


def prepare(args: argparse.Namespace, work: Path) -> Path:
    """The station config the service runs: the given one, with model, clip, outbox and sinks set for the soak."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = yaml.safe_load(Path(args.config).read_text())
    if args.model:
        data["model"]["path"] = str(args.model)
    else:
        from inspector.models import write_tiny_model

        data["model"]["path"] = str(write_tiny_model(work / "tiny", seed=0))
    if args.clip:
        clip = Path(args.clip)
    else:
        from inspector.demo_data import write_demo_clip

        clip = write_demo_clip(work / "demo").video
    data["source"] = {**data.get("source", {}), "uri": str(clip), "loop": True, "pace": bool(args.pace)}
    # Only MQTT: a JSONL file would grow on disk for the whole soak and prove nothing about memory.
    data["sinks"] = {"mqtt": {**(data.get("sinks", {}).get("mqtt") or {}), "outbox": str(work / "outbox.sqlite")}}
    path = work / "soak.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="how long to run the service")
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"), help="station config to start from")
    parser.add_argument("--model", help="checkpoint directory (default: a tiny random model in a temp dir)")
    parser.add_argument("--clip", help="video to loop (default: the demo clip, written to a temp dir)")
    parser.add_argument("--publish", help="use this broker instead of starting a Mosquitto")
    parser.add_argument("--pace", action="store_true", help="deliver frames at the clip's fps instead of flat out")
    parser.add_argument("--sample-s", type=float, default=1.0, help="seconds between RSS samples")
    parser.add_argument("--warmup-s", type=float, default=20.0, help="seconds of inspection before rss_start")
    parser.add_argument("--flat-mib", type=float, default=16.0, help="memory_flat: most RSS growth allowed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s soak: %(message)s")

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        broker = None if args.publish else start_broker(work)
        url = args.publish or broker.url
        try:
            config = prepare(args, work)
            return run(args, work, config, url)
        finally:
            if broker is not None:
                broker.stop()


def run(args: argparse.Namespace, work: Path, config: Path, url: str) -> int:
    port = free_port()
    edge_log = work / "edge.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "edge", "--config", str(config), "--publish", url, "--metrics-port", str(port),
               "--heartbeat-s", "5", "--log-level", "WARNING"]  # fmt: skip
    with edge_log.open("wb") as out:
        service = subprocess.Popen(command, env=env, cwd=work, stdout=out, stderr=subprocess.STDOUT)
    try:
        began = time.monotonic()
        # Warm-up: the model loads, the first frames are judged, caches settle.
        first: float | None = None
        while True:
            if service.poll() is not None:
                raise SystemExit(f"soak: the service exited with {service.returncode}:\n{edge_log.read_text()[-3000:]}")
            health = healthz(port)
            if health and health["frames"]["inspected"] > 0 and first is None:
                first = time.monotonic()
            if first is not None and time.monotonic() - first >= args.warmup_s:
                break
            if time.monotonic() - began > 600:
                raise SystemExit("soak: the service did not start inspecting within 10 minutes")
            time.sleep(0.5)
        start = time.monotonic()
        inspected_at_start = (healthz(port) or {}).get("frames", {}).get("inspected", 0)
        samples: list[tuple[float, int]] = []
        last_health: dict[str, Any] | None = None
        log.info("warm; soaking for %.1f minute(s)", args.minutes)
        while True:
            rss = rss_bytes(service.pid)
            if rss is not None:
                samples.append((time.monotonic() - start, rss))
            last_health = healthz(port) or last_health
            if service.poll() is not None:
                raise SystemExit(f"soak: the service died with {service.returncode}:\n{edge_log.read_text()[-3000:]}")
            if time.monotonic() - start >= args.minutes * 60:
                break
            time.sleep(min(args.sample_s, max(0.1, args.minutes * 60 - (time.monotonic() - start))))
        service.send_signal(signal.SIGTERM)
        exit_code = service.wait(120)
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(10)

    with sqlite3.connect(work / "outbox.sqlite") as db:
        outbox_left = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    health = last_health or {}
    frames = health.get("frames", {})
    peaks = window_peaks(samples, min(60.0, args.minutes * 60 / 5)) if samples else []
    growth = (peaks[-1][1] - peaks[0][1]) / MIB if peaks else None
    result = {
        "minutes": args.minutes,
        "paced": bool(args.pace),
        "frames_processed": frames.get("inspected"),
        "frames_published": frames.get("published"),
        "frame_errors": frames.get("errors"),
        "fps": round((frames.get("inspected", 0) - inspected_at_start) / max(1e-9, samples[-1][0]), 3)
        if samples
        else None,
        "latency_p95_ms": health.get("latency", {}).get("p95_ms"),
        "rss_start_mib": round(peaks[0][1] / MIB, 1) if peaks else None,
        "rss_end_mib": round(peaks[-1][1] / MIB, 1) if peaks else None,
        "rss_max_mib": round(max(r for _, r in samples) / MIB, 1) if samples else None,
        "rss_growth_mib": round(growth, 1) if growth is not None else None,
        "rss_slope_mib_per_h": slope_per_hour(peaks),
        "memory_flat": growth is not None and growth <= args.flat_mib,
        "outbox_high_water": health.get("outbox", {}).get("high_water"),
        "outbox_left": outbox_left,
        "exit_code": exit_code,
    }
    print(json.dumps(result), flush=True)
    return 0 if exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
