"""Replay throughput on a local Ray: frames/s with 1 and with 2 inspector workers, and their ratio.

Prints ONE JSON line. The reference is a local (no Ray) replay of the same clip in this
process. Each figure is steady-state throughput, from the first verdict back to the last
(model loading in the actors is reported apart, as ``startup_s``). The model is the tiny
random Qwen3-VL, so the figures measure the plumbing (decode, tiling, a small model,
Ray calls), not a real model: on real models the per-frame work is far larger and the
Ray overhead relatively smaller.

    python bench/ray_replay.py [--frames 24] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import yaml

from inspector.cluster import ClusterOptions, replay_on_ray
from inspector.config import load_config
from inspector.demo_data import write_demo_clip
from inspector.models import write_tiny_model
from inspector.pipeline import load_inspector
from inspector.replay import ReplaySummary, replay_frames
from inspector.sinks.jsonl import JsonlSink
from inspector.sources import open_source

ROOT = Path(__file__).resolve().parents[1]


def _station(work: Path, model: Path) -> Path:
    config = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    config["tiling"] = {"tile": 64, "overlap": 0.25, "global_view": True}
    config["model"].update(path=str(model), device="cpu")
    config["inspection"]["explanation"] = "never"
    path = work / "station.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _local_fps(config, clip: Path, out: Path) -> float:
    import torch

    # One thread, as one Ray worker of 1 CPU gets (Ray sets OMP_NUM_THREADS to the actor's CPUs).
    torch.set_num_threads(1)
    inspector = load_inspector(config)
    sink = JsonlSink(out)
    stamps: list[float] = []
    with open_source(str(clip)) as source:
        replay_frames(
            source, inspector, [sink], summary=ReplaySummary(), on_frame=lambda f, v: stamps.append(time.perf_counter())
        )
    sink.close()
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def _ray_fps(ray, config, clips: list[Path], out: Path, workers: int, span: int) -> tuple[float, float, int]:
    stamps: list[tuple[float, int]] = []
    began = time.perf_counter()
    options = ClusterOptions(workers=workers, span_frames=span, frames_in_flight=4)
    result = replay_on_ray(
        [str(c) for c in clips], config, out, options, on_verdicts=lambda n, s: stamps.append((time.perf_counter(), n))
    )
    # Steady state: frames after the first returned call, over the time since it returned.
    frames = sum(n for _, n in stamps[1:])
    return frames / (stamps[-1][0] - stamps[0][0]), stamps[0][0] - began, result.summary.frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24, help="frames per clip (2 clips)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import ray

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = write_tiny_model(work / "tiny", seed=0)
        clips = [
            write_demo_clip(work / f"clip{i}", frames=args.frames, size=(320, 240), fps=8.0, seed=i).video
            for i in range(2)
        ]
        config = load_config(_station(work, model))
        local = _local_fps(config, clips[0], work / "local.jsonl")
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        try:
            one, startup_one, frames_one = _ray_fps(ray, config, clips, work / "one", 1, args.frames)
            two, startup_two, frames_two = _ray_fps(ray, config, clips, work / "two", 2, args.frames // 2)
        finally:
            ray.shutdown()
    print(
        json.dumps(
            {
                "bench": "ray_replay",
                "model": "tiny random Qwen3-VL (plumbing, not a real model)",
                "frames": frames_one,
                "ray_cpus": args.cpus,
                "host_cpus": os.cpu_count(),
                # Other work on the host moves these figures: the 1-minute load before and after.
                "load_avg_before": round(load_before, 2),
                "load_avg_after": round(os.getloadavg()[0], 2),
                "local_fps": round(local, 2),
                "ray_1_worker_fps": round(one, 2),
                "ray_2_workers_fps": round(two, 2),
                "ratio_2_vs_1_workers": round(two / one, 3),
                "ratio_1_worker_vs_local": round(one / local, 3),
                "startup_s_1_worker": round(startup_one, 1),
                "startup_s_2_workers": round(startup_two, 1),
                "frames_2_workers": frames_two,
            }
        )
    )


if __name__ == "__main__":
    main()
