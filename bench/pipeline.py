"""Host-side throughput on ONE core: decode -> tile -> preprocess (model excluded), plus patchify vs HF.

Prints one JSON line. Generates its own short 1080p and 4K clips (mp4v) in a temp dir and
decodes them with cv2.VideoCapture. Tiling: 512-px tiles, 20% overlap, global view on.

    python bench/pipeline.py [--frames-1080p 90] [--frames-4k 45] [--hf-tiles 12]

Figures (per frame, means): decode_ms_*, tile_ms_* (plan + crop + global view),
preprocess_ms_* (the pipeline's preprocessing: ``patch_bytes`` into a reused buffer; the
backend normalises on its device); host_fps_* = frames / their total time.
host_fps_*_float: the same with the host writing float32 ``pixel_values`` (``patchify``),
as a backend without on-device normalisation would need. fill_ms_4k = writing the 4K
frame's float32 pixel_values once (np.ndarray.fill): that path's memory-bandwidth floor.
preprocess_speedup_vs_hf: HF's processor against ``patch_bytes`` (fresh output, as HF
allocates) on the same tiles, with preprocess_max_abs_diff = max |normalise_patch_bytes(ours)
- HF|; patchify_speedup_vs_hf: against the float32 path (and *_reused_out into a buffer).
"""

from __future__ import annotations

import os

# One core, set before numpy/cv2/torch load their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
cv2.setNumThreads(1)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from inspector.tiling import TilePlanner, crop_tiles  # noqa: E402
from inspector.vision import (  # noqa: E402
    normalise_patch_bytes,
    patch_bytes,
    patch_shape,
    patchify,
    to_hf_layout,
)

TILE = 512
OVERLAP = 0.2


def make_clip(path: Path, width: int, height: int, frames: int) -> None:
    """A textured 'conveyor' scene: smooth background, fine texture, parts moving right."""
    rng = np.random.default_rng(width)
    low = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
    background = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    texture = cv2.resize(rng.integers(0, 40, (height // 4, width // 4, 1), dtype=np.uint8), (width, height))
    background = cv2.add(background, cv2.merge([texture] * 3))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path} with mp4v")
    scale = width / 1920
    for i in range(frames):
        frame = np.roll(background, i * int(6 * scale), axis=1)
        for k in range(4):
            x = int((i * 12 * scale + k * width / 4) % width)
            cv2.rectangle(frame, (x, int(height * 0.3)), (x + int(200 * scale), int(height * 0.6)), (180, 180, 190), -1)
            cv2.circle(frame, (x + int(100 * scale), int(height * 0.45)), int(40 * scale), (60, 60, 70), -1)
        writer.write(frame)
    writer.release()


def open_clip(path: Path) -> cv2.VideoCapture:
    # Ask FFmpeg for one decoding thread too (its own pool ignores cv2.setNumThreads).
    params = [cv2.CAP_PROP_N_THREADS, 1] if hasattr(cv2, "CAP_PROP_N_THREADS") else []
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        raise RuntimeError(f"cannot open {path}")
    return cap


def run_clip(path: Path, *, as_bytes: bool = True) -> tuple[dict[str, float], np.ndarray]:
    """Decode -> tile -> preprocess every frame; returns per-frame means and the last frame's crops."""
    planner = TilePlanner(TILE, OVERLAP, global_view=True)
    cap = open_clip(path)
    crops_buf: np.ndarray | None = None
    values_buf: np.ndarray | None = None
    decode = tile = prep = 0.0
    frames = 0
    while True:
        t0 = time.perf_counter()
        ok, image = cap.read()
        t1 = time.perf_counter()
        if not ok:
            break
        tiles = planner.plan(image.shape[1], image.shape[0])
        if crops_buf is None:
            crops_buf = np.zeros((len(tiles), TILE, TILE, 3), np.uint8)
        crops = crop_tiles(image, tiles, TILE, out=crops_buf)
        t2 = time.perf_counter()
        if values_buf is None:  # allocate once and touch every page outside the timed loop
            values_buf = np.zeros(
                patch_shape(len(tiles), TILE, as_bytes=as_bytes), np.uint8 if as_bytes else np.float32
            )
        if as_bytes:
            patch_bytes(crops, out=values_buf)
        else:
            patchify(crops, out=values_buf)
        t3 = time.perf_counter()
        if frames > 0:  # frame 0 warms caches and allocators
            decode, tile, prep = decode + t1 - t0, tile + t2 - t1, prep + t3 - t2
        frames += 1
    cap.release()
    assert crops_buf is not None and values_buf is not None, f"{path} decoded no frames"
    n = frames - 1
    stats = {
        "frames": n,
        "tiles_per_frame": int(crops_buf.shape[0]),
        "decode_ms": 1000 * decode / n,
        "tile_ms": 1000 * tile / n,
        "preprocess_ms": 1000 * prep / n,
        "fps": n / (decode + tile + prep),
    }
    if not as_bytes:
        t0 = time.perf_counter()
        values_buf.fill(0.0)
        stats["fill_ms"] = 1000 * (time.perf_counter() - t0)
    return stats, crops_buf.copy()


def best_of(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def compare_with_hf(tiles: np.ndarray) -> dict[str, float]:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
        size={"shortest_edge": 65536, "longest_edge": 16777216},
    )
    images = list(tiles)
    result: dict = {}

    def hf() -> None:
        result["hf"] = processor(images=images, return_tensors="np", input_data_format="channels_last")

    hf_s = best_of(hf, 3)
    bytes_s = best_of(lambda: patch_bytes(tiles), 5)
    ours_s = best_of(lambda: patchify(tiles), 5)
    out = np.zeros(patch_shape(len(tiles), TILE), np.float32)
    reused_s = best_of(lambda: patchify(tiles, out=out), 5)
    values, grid = patchify(tiles)
    raw, _ = patch_bytes(tiles)
    ref = np.asarray(result["hf"]["pixel_values"])
    assert np.array_equal(np.asarray(result["hf"]["image_grid_thw"]), np.tile(grid, (len(tiles), 1)))
    n = len(tiles)
    return {
        "preprocess_speedup_vs_hf": hf_s / bytes_s,
        "preprocess_max_abs_diff": float(np.abs(to_hf_layout(normalise_patch_bytes(raw)) - ref).max()),
        "patchify_speedup_vs_hf": hf_s / ours_s,
        "patchify_speedup_vs_hf_reused_out": hf_s / reused_s,
        "patchify_max_abs_diff": float(np.abs(to_hf_layout(values) - ref).max()),
        "hf_ms_per_tile": 1000 * hf_s / n,
        "patch_bytes_ms_per_tile": 1000 * bytes_s / n,
        "patchify_ms_per_tile": 1000 * ours_s / n,
        "patchify_ms_per_tile_reused_out": 1000 * reused_s / n,
        "hf_compared_tiles": n,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames-1080p", type=int, default=90)
    parser.add_argument("--frames-4k", type=int, default=45)
    parser.add_argument("--hf-tiles", type=int, default=12, help="4K tiles (incl. the global view) timed against HF")
    args = parser.parse_args()
    figures: dict[str, object] = {"tile": TILE, "overlap": OVERLAP, "global_view": True, "threads": 1}
    with tempfile.TemporaryDirectory(prefix="inspector-bench-") as tmp:
        crops_4k = None
        for name, (w, h), frames in (("1080p", (1920, 1080), args.frames_1080p), ("4k", (3840, 2160), args.frames_4k)):
            clip = Path(tmp) / f"{name}.mp4"
            make_clip(clip, w, h, frames + 1)
            stats, crops = run_clip(clip)
            figures[f"host_fps_{name}"] = stats.pop("fps")
            figures.update({f"{key}_{name}": value for key, value in stats.items()})
            float_stats, _ = run_clip(clip, as_bytes=False)
            figures[f"host_fps_{name}_float"] = float_stats["fps"]
            figures[f"preprocess_ms_{name}_float"] = float_stats["preprocess_ms"]
            if name == "4k":
                figures["fill_ms_4k"] = float_stats["fill_ms"]
            crops_4k = crops
    assert crops_4k is not None
    picked = np.concatenate([crops_4k[: args.hf_tiles - 1], crops_4k[-1:]])  # local tiles + the global view
    figures.update(compare_with_hf(picked))
    figures["versions"] = {"numpy": np.__version__, "opencv": cv2.__version__, "torch": torch.__version__}
    rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
    print(json.dumps(rounded))
    return 0


if __name__ == "__main__":
    sys.exit(main())
