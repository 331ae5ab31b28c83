"""GPU memory LoRA training needs, computed from a Qwen3-VL config (weights, adapters, optimizer, activations).

Assumptions, all of them the way ``inspector train --method lora --device cuda`` runs:
base weights in bf16 and frozen; LoRA A/B in fp32 (peft's default) with fp32 gradients and
AdamW's two fp32 moments; gradient checkpointing on every text layer, so the activations kept
for backward are each layer's bf16 input, plus one layer's working set while it is recomputed
(attention by SDPA, so no L x L score matrix; the MLP's three intermediate tensors); the frozen
vision tower runs without a graph (one block's working set at a time) unless trained; the LM
head sees one position per tile (``logits_to_keep=1``). The CUDA context and allocator slack
are a flat allowance. It is an estimate to size a GPU, not a measurement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

BF16, FP32 = 2, 4
CONTEXT_GB = 1.5  # CUDA context, cuBLAS workspace, allocator fragmentation
GB = 1024**3


@dataclass(frozen=True)
class MemoryEstimate:
    weights_gb: float
    lora_params_m: float
    lora_states_gb: float  # params + grads + AdamW moments
    activations_gb: float
    vision_training_gb: float
    total_gb: float

    def to_json(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in asdict(self).items()}


def _text_params(t: dict[str, Any]) -> tuple[int, int]:
    hidden, heads, kv, head_dim, mlp = (t["hidden_size"], t["num_attention_heads"], t["num_key_value_heads"],
                                        t["head_dim"], t["intermediate_size"])  # fmt: skip
    attention = hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2
    layer = attention + 3 * hidden * mlp
    embeddings = t["vocab_size"] * hidden * (1 if t.get("tie_word_embeddings", False) else 2)
    return layer * t["num_hidden_layers"], embeddings


def _vision_params(v: dict[str, Any], out_hidden: int) -> int:
    hidden, mlp, depth = v["hidden_size"], v["intermediate_size"], v["depth"]
    merged = hidden * v.get("spatial_merge_size", 2) ** 2
    blocks = depth * (4 * hidden * hidden + 2 * hidden * mlp)
    mergers = (1 + len(v.get("deepstack_visual_indexes", []))) * (merged * merged + merged * out_hidden)
    return blocks + mergers + 3 * 2 * 16 * 16 * hidden


def _lora_params(t: dict[str, Any], rank: int) -> int:
    hidden, q, kv, mlp = t["hidden_size"], t["num_attention_heads"] * t["head_dim"], \
        t["num_key_value_heads"] * t["head_dim"], t["intermediate_size"]  # fmt: skip
    shapes = [(hidden, q), (hidden, kv), (hidden, kv), (q, hidden), (hidden, mlp), (hidden, mlp), (mlp, hidden)]
    return t["num_hidden_layers"] * sum(rank * (i + o) for i, o in shapes)


def lora_memory(config: dict[str, Any], *, batch: int, tile: int = 512, text_tokens: int = 74, rank: int = 16,
                train_vision: bool = False) -> MemoryEstimate:  # fmt: skip
    """Estimate for a Qwen3-VL ``config.json`` mapping (``text_config`` + ``vision_config``)."""
    t, v = config["text_config"], config["vision_config"]
    if "tie_word_embeddings" in config:
        t = {**t, "tie_word_embeddings": config["tie_word_embeddings"]}
    text_layers, embeddings = _text_params(t)
    vision = _vision_params(v, t["hidden_size"])
    weights = (text_layers + embeddings + vision) * BF16
    lora = _lora_params(t, rank)
    lora_states = lora * FP32 * 4  # param, grad, two AdamW moments
    patches = (tile // 16) ** 2
    tokens = patches // 4 + text_tokens
    hidden, mlp = t["hidden_size"], t["intermediate_size"]
    kept = batch * tokens * hidden * BF16 * t["num_hidden_layers"]
    working = batch * tokens * (3 * mlp + 6 * hidden) * BF16 * 2  # forward tensors + their gradients
    vision_working = batch * patches * (v["intermediate_size"] + 4 * v["hidden_size"]) * BF16
    vision_training = 0.0
    if train_vision:
        vision_training = vision * (BF16 + FP32 * 3) + batch * patches * v["hidden_size"] * BF16 * v["depth"]
    total = weights + lora_states + kept + working + vision_working + vision_training + CONTEXT_GB * GB
    return MemoryEstimate(
        weights_gb=weights / GB,
        lora_params_m=lora / 1e6,
        lora_states_gb=lora_states / GB,
        activations_gb=(kept + working + vision_working) / GB,
        vision_training_gb=vision_training / GB,
        total_gb=total / GB,
    )


# The released configs' dimensions (DESIGN.md "Facts"), so the estimate needs no download.
QWEN3_VL = {
    "4B": {
        "tie_word_embeddings": True,
        "text_config": {"hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 32,
                        "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 9728, "vocab_size": 151936},
        "vision_config": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "spatial_merge_size": 2,
                          "deepstack_visual_indexes": [5, 11, 17]},
    },
    "8B": {
        "tie_word_embeddings": False,
        "text_config": {"hidden_size": 4096, "num_hidden_layers": 36, "num_attention_heads": 32,
                        "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 12288, "vocab_size": 151936},
        "vision_config": {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "spatial_merge_size": 2,
                          "deepstack_visual_indexes": [8, 16, 24]},
    },
}  # fmt: skip
