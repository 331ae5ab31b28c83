"""`inspector model tiny DIR`: write a tiny random Qwen3-VL checkpoint for offline runs and tests."""

from __future__ import annotations

import argparse
from pathlib import Path

from inspector.models import write_tiny_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="model utilities (tiny offline test model)")
    actions = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    tiny = actions.add_parser(
        "tiny",
        help="write a tiny RANDOM Qwen3-VL checkpoint directory",
        description=(
            "Write a tiny, seeded, randomly initialised Qwen3-VL (the real architecture: DeepStack, grouped KV\n"
            "heads, M-RoPE) with a real tokenizer carrying Qwen's special tokens, fully offline. It loads exactly\n"
            "like a real checkpoint. Its verdicts mean NOTHING about parts: every verdict it produces says\n"
            "random_weights: true."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tiny.add_argument("dir", type=Path, help="output directory (created)")
    tiny.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    tiny.add_argument("--thinking", action="store_true", help="use the Thinking variant's chat template")
    tiny.set_defaults(func=run_tiny)


def run_tiny(args: argparse.Namespace) -> int:
    out = write_tiny_model(args.dir, seed=args.seed, thinking=args.thinking)
    print(f"wrote tiny RANDOM Qwen3-VL ({'thinking' if args.thinking else 'instruct'}, seed {args.seed}) to {out}")
    return 0
