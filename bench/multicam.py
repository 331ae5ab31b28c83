"""Several cameras on one model: tiles judged per second with 1 camera and with N cameras.

    python bench/multicam.py [--cameras 4] [--seconds 20] [--model DIR] [--device cpu|cuda] [--tile 256]
                             [--batch-size 16]

In one process: ONE model, the edge service's shared inference worker (edge/inference.py) with
one lane per camera, and per camera a feeder thread that keeps the lane's queue holding a
fresh frame (a live camera that is always ahead of inference). Each frame is 2x2 tiles. The
worker takes the freshest frame of every camera per round and sends all their tiles through
the model together, ``--batch-size`` tiles per call.

Figures: ``tiles_per_s_1cam`` (the reference, same process, same model) and
``tiles_per_s_{N}cam``; ``ratio`` is N cameras over 1: how much more work the same model does
when the tiles of several cameras share its batches (1.0: none; on a GPU the batch is where
the throughput is). ``frames_per_s_per_cam_{N}cam`` is what each camera gets. Without
``--model`` a tiny RANDOM model is built (verdicts meaningless, the throughput is not).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from _common import bench_station


def measure(inspectors: list, seconds: float, size: tuple[int, int]) -> tuple[float, float, float]:
    """(tiles/s, frames/s, frames per round) for one lane per inspector over ``seconds``."""
    from edge.inference import InferenceWorker, Lane
    from edge.publish import PublishWorker
    from edge.queues import BoundedQueue
    from inspector.frames import Frame

    stop = threading.Event()
    lanes, publishers, feeders = [], [], []
    for index, inspector in enumerate(inspectors):
        frames = BoundedQueue(2)
        verdicts = BoundedQueue(64)
        publisher = PublishWorker(verdicts, [])
        lanes.append(Lane(f"cam{index}", inspector, frames, verdicts, publisher.is_alive))
        publishers.append(publisher)
        image = np.random.default_rng(index).integers(0, 255, (size[1], size[0], 3), np.uint8)

        def feed(frames: BoundedQueue = frames, image: np.ndarray = image, camera: str = f"cam{index}") -> None:
            count = 0
            while not stop.is_set():
                if len(frames) == 0:  # a live camera: there is always a fresh frame waiting
                    frames.put_latest(Frame(image, camera, count, datetime.now(UTC)), keep=1)
                    count += 1
                time.sleep(0.001)

        feeders.append(threading.Thread(target=feed, daemon=True))
    worker = InferenceWorker(lanes)
    for thread in (*publishers, *feeders):
        thread.start()
    worker.start()
    time.sleep(min(2.0, seconds / 5))  # warm: first batches of a new shape
    before = [lane.inspected for lane in lanes]
    rounds_before = worker.rounds
    began = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - began
    frames_done = sum(lane.inspected - b for lane, b in zip(lanes, before))
    rounds = worker.rounds - rounds_before
    stop.set()
    worker.stop()
    worker.join(60)
    for publisher in publishers:
        publisher.stop()
        publisher.join(10)
    tiles_per_frame = len(inspectors[0].planner.plan(*size))
    return frames_done * tiles_per_frame / elapsed, frames_done / elapsed, frames_done / max(rounds, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: a tiny random model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from edge.reload import build_candidate
    from inspector.models import write_tiny_model
    from inspector.pipeline import build_inspector, warm_up

    workdir = Path(tempfile.mkdtemp(prefix="multicam-bench-"))
    model = args.model or write_tiny_model(workdir / "tiny", seed=0)
    size = (args.tile * 2, args.tile * 2)

    def station(name: str) -> object:
        return bench_station(model, tile=args.tile, device=args.device, batch_size=args.batch_size,
                             station={"station": name})  # fmt: skip

    first = build_inspector(station("cam0"))
    warm_up(first, size)
    inspectors = [first] + [build_candidate(first, station(f"cam{i}")) for i in range(1, args.cameras)]
    one_tiles, one_frames, one_rounds = measure(inspectors[:1], args.seconds, size)
    many_tiles, many_frames, many_rounds = measure(inspectors, args.seconds, size)
    n = args.cameras
    print(
        json.dumps(
            {
                "bench": "multicam",
                "device": args.device,
                "random_model": args.model is None,
                "model_instances": 1,
                "tile": args.tile,
                "tiles_per_frame": len(first.planner.plan(*size)),
                "batch_size": args.batch_size,
                "seconds": args.seconds,
                "tiles_per_s_1cam": round(one_tiles, 2),
                f"tiles_per_s_{n}cam": round(many_tiles, 2),
                "ratio": round(many_tiles / one_tiles, 3) if one_tiles else None,
                "frames_per_s_per_cam_1cam": round(one_frames, 2),
                f"frames_per_s_per_cam_{n}cam": round(many_frames / n, 2),
                f"frames_per_round_{n}cam": round(many_rounds, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
