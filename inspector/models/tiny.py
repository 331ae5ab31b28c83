"""A tiny random Qwen3-VL checkpoint: the real architecture at toy widths, written like a real one.

The tiny model is the *real* ``Qwen3VLForConditionalGeneration`` architecture (DeepStack,
grouped KV heads, interleaved M-RoPE) at toy widths, with a real byte-level BPE
``Qwen2Tokenizer`` carrying Qwen's special tokens at their real ids, saved with
``save_pretrained``. It loads through exactly the path a real checkpoint does
(``inspector.models.checkpoint``). Its weights are random: a marker file says so, and every
verdict it produces is labelled.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.errors import ModelError
from inspector.models.checkpoint import RANDOM_MARKER, quiet_transformers
from inspector.models.tokenizer import (
    QWEN_RANKS_RESOURCE,
    QWEN_VOCAB_SIZE,
    Vocabulary,
    build_qwen_tokenizer,
    build_tiny_tokenizer,
    resolve_vocabulary,
)

log = logging.getLogger(__name__)

# What the marker file says about the tokenizer a tiny model got.
_TOKENIZER_SOURCES = {
    "qwen": f"Qwen's BPE ranks ({QWEN_RANKS_RESOURCE}): the real ids",
    "trained": "a small byte-level BPE trained offline: Qwen's special-token ids, other ids are not Qwen's",
}

# Qwen3-VL's image processor settings (preprocessor_config.json of the real checkpoints).
PREPROCESSOR_CONFIG: dict[str, Any] = {
    "image_processor_type": "Qwen2VLImageProcessor",
    "do_resize": True,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "do_convert_rgb": True,
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "size": {"shortest_edge": 65536, "longest_edge": 16777216},
}


@dataclass(frozen=True, slots=True)
class TinySpec:
    """Widths of the tiny model; defaults keep the 4B model's 4:1 query:KV head ratio."""

    text_hidden: int = 64
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 1
    text_head_dim: int = 16
    text_mlp: int = 128
    vision_depth: int = 4
    vision_hidden: int = 32
    vision_heads: int = 2
    vision_mlp: int = 64
    deepstack_indexes: tuple[int, ...] = (1, 2, 3)
    num_position_embeddings: int = 64  # must be a perfect square
    tie_word_embeddings: bool = True
    tokenizer_merges: int = 600


def tiny_config(spec: TinySpec = TinySpec()):  # -> Qwen3VLConfig
    from transformers import Qwen3VLConfig

    half = spec.text_head_dim // 2
    # Qwen's ratio [24, 20, 20] of 64 (t, h, w), rounded, summing to head_dim / 2.
    mrope = [half - 2 * round(half * 20 / 64), round(half * 20 / 64), round(half * 20 / 64)]
    side = int(spec.num_position_embeddings**0.5)
    if side * side != spec.num_position_embeddings:
        raise ValueError("num_position_embeddings must be a perfect square")
    if max(spec.deepstack_indexes) >= spec.vision_depth or len(spec.deepstack_indexes) > spec.text_layers:
        raise ValueError("each DeepStack index must be < vision depth, and their count <= text layers")
    return Qwen3VLConfig(
        text_config={
            "vocab_size": QWEN_VOCAB_SIZE,
            "hidden_size": spec.text_hidden,
            "intermediate_size": spec.text_mlp,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": spec.text_heads,
            "num_key_value_heads": spec.text_kv_heads,
            "head_dim": spec.text_head_dim,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": mrope,
                "mrope_interleaved": True,
            },
            "tie_word_embeddings": spec.tie_word_embeddings,
        },
        vision_config={
            "depth": spec.vision_depth,
            "hidden_size": spec.vision_hidden,
            "intermediate_size": spec.vision_mlp,
            "num_heads": spec.vision_heads,
            "out_hidden_size": spec.text_hidden,
            "num_position_embeddings": spec.num_position_embeddings,
            "deepstack_visual_indexes": list(spec.deepstack_indexes),
            "patch_size": 16,
            "temporal_patch_size": 2,
            "spatial_merge_size": 2,
        },
        tie_word_embeddings=spec.tie_word_embeddings,
    )


def write_tiny_model(
    out_dir: Path,
    *,
    seed: int = 0,
    spec: TinySpec = TinySpec(),
    thinking: bool = False,
    vocabulary: Vocabulary = "auto",
) -> Path:
    """Write a seeded, randomly initialised Qwen3-VL checkpoint directory (config, safetensors, tokenizer).

    ``thinking`` gives it the Thinking variant's chat template (the assistant turn opens ``<think>``).
    ``vocabulary``: "qwen" (Qwen's real BPE, needs the dashscope wheel), "trained" (a small BPE
    trained offline; fast to build and load, for tests), or "auto" (Qwen's where installed).
    """
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    quiet_transformers()
    out_dir = Path(out_dir)
    refuse_real_checkpoint(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(tiny_config(spec)).eval()
    model.save_pretrained(out_dir)
    write_companions(out_dir, seed=seed, thinking=thinking, vocabulary=vocabulary, merges=spec.tokenizer_merges)
    log.info("wrote tiny random Qwen3-VL to %s", out_dir)
    return out_dir


def refuse_real_checkpoint(out_dir: Path) -> None:
    """A random model never overwrites a real checkpoint (one without the random-weights marker)."""
    if (out_dir / "config.json").exists() and not (out_dir / RANDOM_MARKER).exists():
        raise ModelError(
            f"{out_dir} already holds a model that is not a line-inspector random model",
            "choose an empty directory; refusing to overwrite a real checkpoint",
        )


def write_companions(out_dir: Path, *, seed: int, thinking: bool, vocabulary: Vocabulary, merges: int = 600) -> None:
    """Everything of a random checkpoint beside its weights: tokenizer, preprocessor config, random-weights marker."""
    chosen = resolve_vocabulary(vocabulary)
    if chosen == "qwen":
        tokenizer = build_qwen_tokenizer(thinking=thinking)
    else:
        tokenizer = build_tiny_tokenizer(merges, thinking=thinking)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2) + "\n")
    marker = {
        "random_weights": True,
        "seed": seed,
        "variant": "thinking" if thinking else "instruct",
        "tokenizer": chosen,
        "tokenizer_source": _TOKENIZER_SOURCES[chosen],
        "warning": "randomly initialised test model: its verdicts mean nothing about any part",
    }
    (out_dir / RANDOM_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
