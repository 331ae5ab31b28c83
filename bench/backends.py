"""Verdict latency per tile batch, torch vs onnxruntime on CPU; and option logits vs JSON text.

    python bench/backends.py [--work DIR] [--repeats N] [--skip-mid]

Prints one JSON line. For each model (the tiny test model, and a mid-size one with the 4B
model's widths -- hidden 2560, 32/8 heads, MLP 9728, vision 1024 wide -- but 3 text and 3
vision layers, all random), for each tile batch size: the time of one verdict
(``encode`` of uint8 patch bytes, the pipeline's hot path, + ``prefill`` -> answer-option
logits) on each backend, best of N runs (other load on a shared machine only adds time),
per batch and per tile, and torch / onnxruntime.

``logits_vs_json_speedup`` (torch backend, mid-size model, one tile): a verdict the way a
JSON-prompting pipeline gets it, divided by the time of ours. Ours: ``TileClassifier.classify``
with explanations off (encode, one prefill of the option prompt, softmax over the option
logits). The JSON baseline: the same tile, a prompt that asks for a JSON object
(``{"verdict": .., "class": .., "confidence": ..}``), encode + prefill of that prompt, greedy
decode until ``<|im_end|>``, detokenise, ``json.loads`` and check the fields. Random weights
never write JSON, so their decode would not stop by itself: it is bounded at the length of
a real compact JSON verdict (counted with the model's tokenizer, Qwen's real vocabulary where
the dashscope wheel is installed: ``json_reply_tokens``) plus its ``<|im_end|>``, and
``json_parsed`` says how many replies parsed (0 with random weights, and labelled so).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common  # noqa: E402
import numpy as np

_common.use_checkout()

from export.onnx_export import export_checkpoint  # noqa: E402
from export.parity import DEFAULT_INSPECTION  # noqa: E402
from inspector.backends.base import PATCH_BYTES_DIM  # noqa: E402
from inspector.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from inspector.backends.torch import TorchBackend  # noqa: E402
from inspector.classify import TileClassifier  # noqa: E402
from inspector.config import InspectionConfig  # noqa: E402
from inspector.models import RANDOM_MARKER, TinySpec, load_model, write_tiny_model  # noqa: E402
from inspector.prompting import IMAGE_PAD, build_prompt, question_text  # noqa: E402

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
# What a real model would answer to the JSON prompt: its token count bounds the random model's decode.
REFERENCE_JSON_REPLY = '{"verdict": "NG", "class": "scratch", "confidence": 0.93}'


def json_question(inspection: InspectionConfig) -> str:
    """The option prompt's intro and class list, asking for a JSON object instead of a letter."""
    classes = ", ".join(f'"{name}"' for name in inspection.classes)
    return question_text(inspection).rsplit("\n", 1)[0] + (
        '\nReply with one JSON object only: {"verdict": "OK" or "NG", "class": one of '
        + classes
        + ', "confidence": a number from 0 to 1}.'
    )


def json_prompt_ids(tokenizer: Any, text: str, image_tokens: int) -> np.ndarray:
    """The chat template around one image and ``text``, the image placeholder expanded (as build_prompt does)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    before, after = rendered.split(IMAGE_PAD)
    image_pad = tokenizer.convert_tokens_to_ids(IMAGE_PAD)
    ids = tokenizer.encode(before, add_special_tokens=False) + [image_pad] * image_tokens
    return np.asarray(ids + tokenizer.encode(after, add_special_tokens=False), dtype=np.int64)


def parse_json_verdict(text: str, classes: list[str]) -> dict[str, Any] | None:
    """The reply as a verdict, or None when it is not one: the outermost {...}, json.loads, fields checked."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        reply = json.loads(text[start : end + 1])
    except ValueError:
        return None
    if not isinstance(reply, dict) or reply.get("verdict") not in ("OK", "NG") or reply.get("class") not in classes:
        return None
    confidence = reply.get("confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
        return None
    return reply


def patch_bytes(batch: int, grid: tuple[int, int, int]) -> np.ndarray:
    """Random tiles in the pipeline's hot-path form: uint8 patch bytes (B, P, 768)."""
    patches = grid[0] * grid[1] * grid[2]
    return np.random.default_rng(batch).integers(0, 256, (batch, patches, PATCH_BYTES_DIM), dtype=np.uint8)


def best_ms(run: Any, repeats: int) -> float:
    """Best of ``repeats`` after a warm-up (lazy allocations, ORT's first-run planning), in ms."""
    return 1000 * _common.best_of(run, repeats)


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
    versus = logits_vs_json(loaded, model_dir, backends["torch"], grid, tokens, repeats)
    log.info("%s logits %.1f ms vs JSON %.1f ms", name, versus["logits_ms"], versus["json_ms"])
    return result, versus


def logits_vs_json(
    loaded: Any, model_dir: Path, backend: TorchBackend, grid: tuple[int, int, int], image_tokens: int, repeats: int
) -> dict[str, Any]:
    inspection = DEFAULT_INSPECTION.model_copy(update={"explanation": "never"})
    classifier = TileClassifier(backend, loaded.tokenizer, inspection, batch_size=1)
    option_prompt = classifier.prompt_for(image_tokens)
    json_ids = json_prompt_ids(loaded.tokenizer, json_question(inspection), image_tokens)[None]
    reply_tokens = len(loaded.tokenizer.encode(REFERENCE_JSON_REPLY, add_special_tokens=False))
    if parse_json_verdict(REFERENCE_JSON_REPLY, inspection.classes) is None:
        raise RuntimeError("the JSON parser rejects the reference reply")
    pixels = patch_bytes(1, grid)
    replies: list[dict[str, Any] | None] = []

    def by_logits() -> None:
        classifier.classify(pixels, grid)

    def by_json() -> None:
        _, state = backend.prefill(json_ids, backend.encode(pixels, grid), option_prompt.option_ids)
        (generated,) = backend.generate(state, [0], (), reply_tokens + 1, option_prompt.stop_ids)
        text = loaded.tokenizer.decode(generated, skip_special_tokens=True)
        replies.append(parse_json_verdict(text, inspection.classes))

    logits_ms, json_ms = best_ms(by_logits, repeats), best_ms(by_json, repeats)
    marker = json.loads((model_dir / RANDOM_MARKER).read_text()) if loaded.random_weights else {}
    return {
        "logits_ms": round(logits_ms, 2),
        "json_ms": round(json_ms, 2),
        "speedup": round(json_ms / logits_ms, 3),
        "option_prompt_tokens": option_prompt.length,
        "json_prompt_tokens": int(json_ids.shape[1]),
        "json_reply_tokens": reply_tokens,
        "json_parsed": f"{sum(r is not None for r in replies)}/{len(replies)}",
        "tokenizer": marker.get("tokenizer", "checkpoint"),
        "random_weights": loaded.random_weights,
    }


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
