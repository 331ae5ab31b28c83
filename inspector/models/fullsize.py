"""Full-size Qwen3-VL checkpoints with random weights, written tensor by tensor (4B, 8B).

Building the 8B model in memory to ``save_pretrained`` it would hold 17.5 GB of bf16
weights before the first byte reaches disk. Instead the architecture is instantiated on
PyTorch's ``meta`` device (shapes only, no storage), and each tensor is drawn (seeded,
``transformers``' initialisation: normal(0, initializer_range) for matrices, ones for norm
weights, zeros for biases) and written into safetensors shards of at most ``shard_gb``, with
the index file ``from_pretrained`` reads. The result is an ordinary sharded checkpoint
directory: it loads through ``inspector.models.load_model`` exactly as a downloaded one,
and carries the random-weights marker so every verdict it gives is labelled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inspector.errors import ModelError
from inspector.models.checkpoint import quiet_transformers
from inspector.models.tiny import TinySpec, refuse_real_checkpoint, tiny_config, write_companions
from inspector.models.tokenizer import Vocabulary

log = logging.getLogger(__name__)

# The released configs (DESIGN.md, "Facts"): Instruct and Thinking share them.
QWEN3_VL_4B = TinySpec(
    text_hidden=2560, text_layers=36, text_heads=32, text_kv_heads=8, text_head_dim=128, text_mlp=9728,
    vision_depth=24, vision_hidden=1024, vision_heads=16, vision_mlp=4096, deepstack_indexes=(5, 11, 17),
    num_position_embeddings=2304, tie_word_embeddings=True,
)  # fmt: skip
QWEN3_VL_8B = TinySpec(
    text_hidden=4096, text_layers=36, text_heads=32, text_kv_heads=8, text_head_dim=128, text_mlp=12288,
    vision_depth=27, vision_hidden=1152, vision_heads=16, vision_mlp=4304, deepstack_indexes=(8, 16, 24),
    num_position_embeddings=2304, tie_word_embeddings=False,
)  # fmt: skip
ARCHITECTURES = {"4b": QWEN3_VL_4B, "8b": QWEN3_VL_8B}
CHECKPOINT_DTYPES = ("bfloat16", "float16")
_INDEX = "model.safetensors.index.json"


def _meta_model(spec: TinySpec, dtype: Any) -> Any:
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    config = tiny_config(spec)
    config.dtype = dtype
    with torch.device("meta"):
        return Qwen3VLForConditionalGeneration(config), config


def _initial_value(name: str, shape: tuple[int, ...], dtype: Any, std: float, generator: Any) -> Any:
    """transformers' initialisation for Qwen3-VL, by parameter kind."""
    import torch

    leaf = name.rsplit(".", 1)[-1]
    if leaf == "bias":
        return torch.zeros(shape, dtype=dtype)
    if len(shape) == 1:  # RMSNorm / LayerNorm weights
        return torch.ones(shape, dtype=dtype)
    # Drawn in float32 one tensor at a time (the largest, the embedding, is 1.6 GB as float32 at 4096 wide).
    return torch.empty(shape, dtype=torch.float32).normal_(0.0, std, generator=generator).to(dtype)


def _tensors(model: Any, config: Any, dtype: Any, seed: int) -> Iterator[tuple[str, Any]]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    std = float(getattr(config.text_config, "initializer_range", 0.02))
    tied = bool(config.tie_word_embeddings)
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue  # saved once, as the embedding (save_pretrained does the same)
        yield name, _initial_value(name, tuple(tensor.shape), dtype, std, generator)


def write_random_checkpoint(
    out_dir: Path, spec: TinySpec, *, dtype: str = "bfloat16", seed: int = 0, shard_gb: float = 2.0,
    vocabulary: Vocabulary = "auto", thinking: bool = False,
) -> Path:  # fmt: skip
    """Write a random Qwen3-VL checkpoint of ``spec``'s widths, holding at most one shard in memory."""
    import torch
    from safetensors.torch import save_file

    if dtype not in CHECKPOINT_DTYPES:
        raise ModelError(f"checkpoint dtype {dtype!r} is not supported", f"use one of {', '.join(CHECKPOINT_DTYPES)}")
    quiet_transformers()
    out_dir = Path(out_dir)
    refuse_real_checkpoint(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch_dtype = getattr(torch, dtype)
    model, config = _meta_model(spec, torch_dtype)
    limit = int(shard_gb * 1024**3)
    shards: list[dict[str, Any]] = [{}]
    sizes = [0]
    weight_map: dict[str, int] = {}
    total = 0

    def flush() -> None:
        number = len(shards)
        save_file(shards[-1], str(out_dir / f"part-{number:05d}.safetensors"), metadata={"format": "pt"})
        log.info("wrote shard %d (%.2f GB)", number, sizes[-1] / 1e9)
        shards[-1] = {}

    for name, tensor in _tensors(model, config, torch_dtype, seed):
        size = tensor.numel() * tensor.element_size()
        if sizes[-1] and sizes[-1] + size > limit:
            flush()
            shards.append({})
            sizes.append(0)
        shards[-1][name] = tensor
        sizes[-1] += size
        weight_map[name] = len(shards)
        total += size
    flush()
    count = len(shards)
    names = {index: f"model-{index:05d}-of-{count:05d}.safetensors" for index in range(1, count + 1)}
    for index, final in names.items():
        (out_dir / f"part-{index:05d}.safetensors").rename(out_dir / final)
    index_file = {"metadata": {"total_size": total}, "weight_map": {k: names[v] for k, v in weight_map.items()}}
    (out_dir / _INDEX).write_text(json.dumps(index_file, indent=2) + "\n")
    config.save_pretrained(out_dir)
    write_companions(out_dir, seed=seed, thinking=thinking, vocabulary=vocabulary)
    log.info("wrote a random %s Qwen3-VL checkpoint (%.2f GB, %d shards) to %s", dtype, total / 1e9, count, out_dir)
    return out_dir
