"""Qwen3-VL at full size on one GPU: vision ms, prefill ms, tiles/s in bf16 and FP8 (torchao), vs the FLOP ceiling.

    python bench/gpu.py                      # 4B then 8B (8B skipped past --budget-s), batch 1/8/32
    python bench/gpu.py --models 4b --batches 1,8
    python bench/gpu.py --dry-run            # any machine: shapes and FLOP counts only (meta device)

Prints ONE JSON line. The models are the released architectures (widths from the Qwen3-VL
4B/8B configs) with RANDOM weights built on the GPU, so no download and no meaning in their
outputs: the timings are of the real shapes. Per model, per batch of 512-px tiles:

- ``vision_ms``: the vision tower on B tiles (1024 patches each -> 256 visual tokens);
- ``prefill_ms``: the verdict prefill (image + prompt tokens, logits at the last position
  only) = the whole forward minus the vision tower, i.e. the language model's share;
- ``tiles_per_s``: B / (the whole forward), ``peak_gib``: torch's peak allocated memory;
- in ``bf16`` and in ``fp8`` (``inspector.backends.torch.quantise_fp8``: torchao
  Float8DynamicActivationFloat8WeightConfig, per-row scales, on the language model's
  linears; vision and lm_head stay bf16) — ``fp8_vs_bf16`` is the tiles/s ratio, the
  reference being the bf16 run in the same process;
- ``share_of_ceiling``: tiles/s divided by the FLOP ceiling of this GPU (``ceiling_tiles_per_s``:
  peak dense TFLOP/s / FLOPs per tile; for fp8, the language model's FLOPs at the FP8 peak).

FLOPs per tile are computed from the config (2 per multiply-accumulate): patch embedding,
each vision block's qkv/proj/MLP and attention over the tile's patches, the merger and the
DeepStack mergers; each text layer's projections and MLP over the prompt, attention over it,
and lm_head at the last position. Timing: CUDA events, warm-up calls first, median of
``--repeats`` calls.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TILE = 512
PATCH = 16
# Text tokens of the verdict prompt beside the image tokens (chat template, product, defect list,
# question): ~44 with Qwen's tokenizer for the default 3-class prompt, ~300 tokens in all at 512 px.
PROMPT_TEXT_TOKENS = 44
# Dense peak TFLOP/s (bf16, fp8) from NVIDIA's data sheets; --peak-tflops overrides.
PEAKS = {"H200": (989.0, 1979.0), "H100": (989.0, 1979.0), "L40S": (362.0, 733.0), "L4": (121.0, 242.0)}

SIZES: dict[str, dict[str, Any]] = {
    "4b": {
        "text": {"hidden": 2560, "layers": 36, "heads": 32, "kv_heads": 8, "head_dim": 128, "mlp": 9728, "tied": True},
        "vision": {"depth": 24, "hidden": 1024, "heads": 16, "mlp": 4096, "deepstack": [5, 11, 17]},
    },
    "8b": {
        "text": {"hidden": 4096, "layers": 36, "heads": 32, "kv_heads": 8, "head_dim": 128, "mlp": 12288,
                 "tied": False},
        "vision": {"depth": 27, "hidden": 1152, "heads": 16, "mlp": 4304, "deepstack": [8, 16, 24]},
    },
}  # fmt: skip
VOCAB = 151936
IMAGE_PAD, VISION_START, VISION_END = 151655, 151652, 151653


def qwen3_vl_config(size: str) -> Any:
    from transformers import Qwen3VLConfig

    text, vision = SIZES[size]["text"], SIZES[size]["vision"]
    return Qwen3VLConfig(
        text_config={
            "vocab_size": VOCAB, "hidden_size": text["hidden"], "intermediate_size": text["mlp"],
            "num_hidden_layers": text["layers"], "num_attention_heads": text["heads"],
            "num_key_value_heads": text["kv_heads"], "head_dim": text["head_dim"], "max_position_embeddings": 262144,
            "rope_parameters": {"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20],
                                "mrope_interleaved": True},
            "tie_word_embeddings": text["tied"],
        },
        vision_config={
            "depth": vision["depth"], "hidden_size": vision["hidden"], "intermediate_size": vision["mlp"],
            "num_heads": vision["heads"], "out_hidden_size": text["hidden"], "num_position_embeddings": 2304,
            "deepstack_visual_indexes": vision["deepstack"], "patch_size": PATCH, "temporal_patch_size": 2,
            "spatial_merge_size": 2,
        },
        tie_word_embeddings=text["tied"],
    )  # fmt: skip


@dataclass(frozen=True)
class TileFlops:
    vision: float
    prefill: float  # language model over the prompt, + lm_head at the last position
    prompt_tokens: int
    image_tokens: int

    @property
    def total(self) -> float:
        return self.vision + self.prefill


def tile_flops(config: Any, tile: int = TILE, text_tokens: int = PROMPT_TEXT_TOKENS) -> TileFlops:
    """Forward FLOPs of one tile's verdict, from the config (2 FLOPs per multiply-accumulate)."""
    v, t = config.vision_config, config.text_config
    patches = (tile // v.patch_size) ** 2
    merge = v.spatial_merge_size**2
    tokens = patches // merge
    patch_in = v.in_channels * v.temporal_patch_size * v.patch_size**2
    block = patches * (4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size)  # qkv (3) + proj (1), MLP
    block += 2 * patches * patches * v.hidden_size  # scores and weighted sum
    merger_in = v.hidden_size * merge
    mergers = (1 + len(v.deepstack_visual_indexes)) * tokens * (merger_in**2 + merger_in * v.out_hidden_size)
    vision = 2 * (patches * patch_in * v.hidden_size + v.depth * block + mergers)
    length = tokens + 2 + text_tokens  # + vision start / end
    q_width, kv_width = t.num_attention_heads * t.head_dim, t.num_key_value_heads * t.head_dim
    projections = t.hidden_size * (2 * q_width + 2 * kv_width)  # q, o; k, v
    mlp = 3 * t.hidden_size * t.intermediate_size
    attention = length * (length + 1) // 2 * q_width * 2  # causal: scores and weighted sum
    layer = length * (projections + mlp) + attention
    prefill = 2 * (t.num_hidden_layers * layer + t.hidden_size * t.vocab_size)
    return TileFlops(float(vision), float(prefill), length, tokens)


def ceiling(flops: TileFlops, peak_bf16: float, peak_fp8: float) -> dict[str, float]:
    """Tiles/s a GPU could reach at its dense peak: bf16 everywhere, or the language model at the FP8 peak."""
    bf16 = peak_bf16 * 1e12 / flops.total
    fp8 = 1e12 / (flops.vision / peak_bf16 + flops.prefill / peak_fp8)
    return {"bf16": round(bf16, 1), "fp8": round(fp8, 1)}


def shapes(config: Any, batch: int, flops: TileFlops) -> dict[str, list[int]]:
    v = config.vision_config
    patches = (TILE // v.patch_size) ** 2
    return {
        "pixel_values": [batch * patches, v.in_channels * v.temporal_patch_size * v.patch_size**2],
        "image_grid_thw": [batch, 3],
        "input_ids": [batch, flops.prompt_tokens],
        "visual_embeds": [batch, flops.image_tokens, v.out_hidden_size],
        "deepstack": [len(v.deepstack_visual_indexes), batch, flops.image_tokens, v.out_hidden_size],
    }


def meta_parameters(config: Any) -> dict[str, float]:
    """Parameter counts of the architecture, built on the meta device (no memory, no weights)."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen3VLForConditionalGeneration(config)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    text = model.model.language_model
    return {
        "vision_b": round(count(model.model.visual) / 1e9, 3),
        "text_non_embedding_b": round((count(text) - text.embed_tokens.weight.numel()) / 1e9, 3),
        "total_b": round(count(model) / 1e9, 3),
    }


# -- GPU ---------------------------------------------------------------------------------


def random_model(config: Any, device: Any) -> Any:
    """The architecture with transformers' own random init, built directly on ``device`` in bfloat16."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Qwen3VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def verdict_inputs(config: Any, batch: int, flops: TileFlops, device: Any) -> dict[str, Any]:
    import torch

    v = config.vision_config
    patches = (TILE // v.patch_size) ** 2
    generator = torch.Generator(device=device).manual_seed(1)
    dim = v.in_channels * v.temporal_patch_size * v.patch_size**2
    pixels = (torch.rand(batch * patches, dim, device=device, generator=generator) * 2 - 1).to(torch.bfloat16)
    text = torch.randint(0, 151_000, (batch, flops.prompt_tokens - flops.image_tokens - 2), device=device,
                         generator=generator)  # fmt: skip
    image = torch.full((batch, flops.image_tokens), IMAGE_PAD, device=device)
    ids = torch.cat([torch.full((batch, 1), VISION_START, device=device), image,
                     torch.full((batch, 1), VISION_END, device=device), text], dim=1)  # fmt: skip
    grid = torch.tensor([[1, TILE // v.patch_size, TILE // v.patch_size]] * batch, device=device)
    return {"input_ids": ids, "mm_token_type_ids": (ids == IMAGE_PAD).int(), "pixel_values": pixels,
            "image_grid_thw": grid}  # fmt: skip


def _time_ms(call: Any, warmup: int, repeats: int) -> float:
    import torch

    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _measure(model: Any, config: Any, batches: list[int], flops: TileFlops, args: argparse.Namespace,
             device: Any) -> dict[str, Any]:  # fmt: skip
    import torch

    results = {}
    for batch in batches:
        inputs = verdict_inputs(config, batch, flops, device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            vision = _time_ms(lambda: model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]),
                              args.warmup, args.repeats)  # fmt: skip
            whole = _time_ms(lambda: model(**inputs, logits_to_keep=1), args.warmup, args.repeats)
        results[str(batch)] = {
            "vision_ms": round(vision, 2),
            "prefill_ms": round(whole - vision, 2),
            "total_ms": round(whole, 2),
            "tiles_per_s": round(batch * 1000 / whole, 1),
            "peak_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
        }
        torch.cuda.empty_cache()
    return results


def run_gpu(size: str, args: argparse.Namespace, peaks: tuple[float, float]) -> dict[str, Any]:
    import torch

    from inspector.backends.torch import quantise_fp8
    from inspector.models import LoadedModel

    device = torch.device("cuda")
    config = qwen3_vl_config(size)
    flops = tile_flops(config)
    began = time.monotonic()
    model = random_model(config, device)
    out: dict[str, Any] = {"build_s": round(time.monotonic() - began, 1)}
    out["bf16"] = _measure(model, config, args.batches, flops, args, device)
    try:
        loaded = LoadedModel(model, None, f"qwen3-vl-{size}-random", True, "bfloat16", "cuda")
        model = quantise_fp8(loaded).model
        out["fp8"] = _measure(model, config, args.batches, flops, args, device)
    except Exception as error:  # noqa: BLE001 - the bench reports why FP8 did not run, with the bf16 figures kept
        out["fp8"] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
    limits = ceiling(flops, *peaks)
    for precision in ("bf16", "fp8"):
        for figures in out[precision].values():
            if isinstance(figures, dict):
                figures["share_of_ceiling"] = round(figures["tiles_per_s"] / limits[precision], 3)
    if "error" not in out["fp8"]:
        out["fp8_vs_bf16"] = {b: round(out["fp8"][b]["tiles_per_s"] / out["bf16"][b]["tiles_per_s"], 3)
                              for b in out["bf16"]}  # fmt: skip
    del model
    torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="4b,8b", help="comma-separated sizes: 4b, 8b (default: 4b,8b)")
    parser.add_argument("--batches", default="1,8,32", help="tiles per call (default: 1,8,32)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=270.0, help="start no further model past this (default 270)")
    parser.add_argument("--peak-tflops", help="BF16,FP8 dense peaks of this GPU when it is not in the built-in table")
    parser.add_argument("--dry-run", action="store_true", help="shapes and FLOP counts only, on any machine")
    args = parser.parse_args(argv)
    sizes = [s.strip().lower() for s in args.models.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown model size {', '.join(unknown)}: use {', '.join(SIZES)}")
    try:
        args.batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error(f"--batches {args.batches!r} is not a comma-separated list of whole numbers")
    began = time.monotonic()
    gpu, peaks = None, PEAKS["H200"]
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA GPU is visible: run on a GPU machine, or pass --dry-run for shapes and FLOPs")
        gpu = torch.cuda.get_device_name(0)
        table = next((p for name, p in PEAKS.items() if name in gpu), None)
        if args.peak_tflops:
            table = tuple(float(x) for x in args.peak_tflops.split(","))
        if table is None:
            parser.error(f"no peak TFLOP/s known for {gpu}: pass --peak-tflops BF16,FP8")
        peaks = table
    report: dict[str, Any] = {
        "bench": "gpu",
        "tile": TILE,
        "batches": args.batches,
        "gpu": gpu or "not measured (dry run)",
        "peak_tflops": {"bf16": peaks[0], "fp8": peaks[1], "of": "this GPU" if gpu else "H200 (reference)"},
        "models": {},
    }
    for size in sizes:
        config = qwen3_vl_config(size)
        flops = tile_flops(config)
        limits = ceiling(flops, *peaks)
        entry: dict[str, Any] = {
            "params": meta_parameters(config),
            "tflop_per_tile": {
                "vision": round(flops.vision / 1e12, 3),
                "prefill": round(flops.prefill / 1e12, 3),
                "total": round(flops.total / 1e12, 3),
            },  # fmt: skip
            "prompt_tokens": flops.prompt_tokens,
            "ceiling_tiles_per_s": limits,
            "ceiling_fp8_vs_bf16": round(limits["fp8"] / limits["bf16"], 3),
            "shapes": {str(b): shapes(config, b, flops) for b in args.batches},
        }
        if not args.dry_run:
            if time.monotonic() - began > args.budget_s:
                entry["skipped"] = f"time budget of {args.budget_s:.0f} s spent before this model"
            else:
                entry.update(run_gpu(size, args, peaks))
        report["models"][size] = entry
    report["seconds"] = round(time.monotonic() - began, 1)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
