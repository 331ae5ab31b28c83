"""Verdict latency per tile batch, torch vs onnxruntime on CPU; and option logits vs JSON text.

    python bench/backends.py [--work DIR] [--repeats N] [--skip-mid]

Prints one JSON line. For each model (the tiny test model, and a mid-size one with the 4B
model's widths -- hidden 2560, 32/8 heads, MLP 9728, vision 1024 wide -- but 3 text and 3
vision layers, all random), for each tile batch size: the time of one verdict
(``encode`` of uint8 patch bytes, the pipeline's hot path, + ``prefill`` -> answer-option
logits) on each backend, best of N runs (other load on a shared machine only adds time),
per batch and per tile, and torch / onnxruntime.

``logits_vs_json_speedup`` (torch backend, mid-size model, one tile): the time to produce a
verdict as JSON text (the same prefill, then greedy decoding of the ~22 tokens a compact JSON
verdict takes with Qwen's tokenizer) divided by the time to read it from the option logits.
Random weights produce no real JSON, so the decode is timed at a real JSON verdict's length.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from export.onnx_export import export_checkpoint  # noqa: E402
from export.parity import DEFAULT_INSPECTION  # noqa: E402
from inspector.backends.base import PATCH_BYTES_DIM  # noqa: E402
from inspector.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from inspector.backends.torch import TorchBackend  # noqa: E402
from inspector.models import TinySpec, load_model, write_tiny_model  # noqa: E402
from inspector.prompting import build_prompt  # noqa: E402

log = logging.getLogger("bench.backends")

MODELS = {
    "tiny": {"spec": TinySpec(), "tile": 512, "batches": (1, 4, 8)},
    "mid_4b_widths_3_layers": {
        "spec": TinySpec(
            text_hidden=2560, text_layers=3, text_heads=32, text_kv_heads=8, text_head_dim=128, text_mlp=9728,
            vision_depth=3, vision_hidden=1024, vision_heads=16, vision_mlp=4096, deepstack_indexes=(0, 1, 2),
            num_position_embeddings=2304,
        ),
        "tile": 256,
        "batches": (1, 4),
    },
}  # fmt: skip
# A compact JSON verdict, '{"verdict": "NG", "class": "scratch", "confidence": 0.93}', is about
# 22 tokens with Qwen's tokenizer (digits are one token each). The tiny test tokenizer, trained
# on a few lines, splits it into twice as many, so the count is fixed here, not measured.
JSON_VERDICT_TOKENS = 22


def patch_bytes(batch: int, grid: tuple[int, int, int]) -> np.ndarray:
    """Random tiles in the pipeline's hot-path form: uint8 patch bytes (B, P, 768)."""
    patches = grid[0] * grid[1] * grid[2]
    return np.random.default_rng(batch).integers(0, 256, (batch, patches, PATCH_BYTES_DIM), dtype=np.uint8)


def best_ms(run: Any, repeats: int) -> float:
    """Best of ``repeats`` after a warm-up: on a shared machine, other load only ever adds time."""
    run()  # warm-up: lazy allocations, ORT's first-run planning
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def prepare(name: str, spec: TinySpec, tile: int, work: Path) -> tuple[Path, Path]:
    model_dir, onnx_dir = work / name, work / f"{name}-onnx-{tile}"
    if not (model_dir / "config.json").exists():
        log.info("writing the %s model", name)
        write_tiny_model(model_dir, seed=0, spec=spec)
    if not (onnx_dir / "manifest.json").exists():
        log.info("exporting the %s model for %d px tiles", name, tile)
        export_checkpoint(model_dir, tile, onnx_dir)
    return model_dir, onnx_dir


def bench_model(name: str, setup: dict[str, Any], work: Path, repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    model_dir, onnx_dir = prepare(name, setup["spec"], setup["tile"], work)
    loaded = load_model(str(model_dir))
    backends = {
        "torch": TorchBackend(loaded),
        "onnxruntime": OnnxRuntimeBackend(onnx_dir, providers=["CPUExecutionProvider"]),
    }
    grid = backends["onnxruntime"].manifest.grid_thw
    tokens = grid[1] * grid[2] // 4
    prompt = build_prompt(loaded.tokenizer, DEFAULT_INSPECTION, tokens)
    batches: dict[str, Any] = {}
    for batch in setup["batches"]:
        pixels = patch_bytes(batch, grid)
        ids = np.tile(prompt.input_ids, (batch, 1))
        row: dict[str, Any] = {}
        for backend_name, backend in backends.items():

            def verdict(backend: Any = backend) -> None:
                backend.prefill(ids, backend.encode(pixels, grid), prompt.option_ids)

            ms = best_ms(verdict, repeats)
            row[f"{backend_name}_ms"] = round(ms, 2)
            row[f"{backend_name}_ms_per_tile"] = round(ms / batch, 2)
            log.info("%s batch %d %s: %.1f ms", name, batch, backend_name, ms)
        row["torch_over_onnxruntime"] = round(row["torch_ms"] / row["onnxruntime_ms"], 3)
        batches[str(batch)] = row
    result = {"tile": setup["tile"], "prompt_tokens": prompt.length, "image_tokens": tokens, "batches": batches}

    # Logits vs JSON text, torch backend, one tile.
    torch_backend = backends["torch"]
    json_tokens = JSON_VERDICT_TOKENS
    pixels = patch_bytes(1, grid)
    ids = prompt.input_ids[None]

    def by_logits() -> None:
        torch_backend.prefill(ids, torch_backend.encode(pixels, grid), prompt.option_ids)

    def by_json() -> None:
        _, state = torch_backend.prefill(ids, torch_backend.encode(pixels, grid), prompt.option_ids)
        torch_backend.generate(state, [0], (), json_tokens, ())

    logits_ms, json_ms = best_ms(by_logits, repeats), best_ms(by_json, repeats)
    versus = {
        "json_tokens": json_tokens,
        "logits_ms": round(logits_ms, 2),
        "json_ms": round(json_ms, 2),
        "speedup": round(json_ms / logits_ms, 3),
    }
    log.info("%s logits %.1f ms vs JSON %.1f ms", name, logits_ms, json_ms)
    return result, versus


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="keep models and exports here (default: a temporary directory)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (best of; default 5)")
    parser.add_argument("--skip-mid", action="store_true", help="only the tiny model (the mid-size one takes minutes)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    import torch

    with tempfile.TemporaryDirectory(prefix="bench-backends-") as temp:
        work = args.work or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        models, versus = {}, {}
        for name, setup in MODELS.items():
            if args.skip_mid and name != "tiny":
                continue
            models[name], versus[name] = bench_model(name, setup, work, args.repeats)
    headline = versus.get("mid_4b_widths_3_layers", versus["tiny"])
    print(json.dumps({
        "bench": "backends",
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "models": models,
        "logits_vs_json_speedup": headline["speedup"],
        "logits_vs_json": versus,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
