"""Qwen3-VL checkpoints: loading one (``checkpoint``), building tokenizers (``tokenizer``), and
writing a tiny random model of the real architecture (``tiny``).

The names below are the package's public API, re-exported so callers need not know which
module holds them.
"""

from inspector.models.checkpoint import (
    DEMO_MARKER,
    RANDOM_MARKER,
    LoadedModel,
    check_checkpoint,
    is_demo_model,
    is_random_model,
    load_model,
    load_tokenizer,
)
from inspector.models.tiny import TinySpec, tiny_config, write_tiny_model
from inspector.models.tokenizer import build_qwen_tokenizer, build_tiny_tokenizer, qwen_ranks_file

__all__ = [
    "DEMO_MARKER",
    "RANDOM_MARKER",
    "LoadedModel",
    "TinySpec",
    "build_qwen_tokenizer",
    "build_tiny_tokenizer",
    "check_checkpoint",
    "is_demo_model",
    "is_random_model",
    "load_model",
    "load_tokenizer",
    "qwen_ranks_file",
    "tiny_config",
    "write_tiny_model",
]
