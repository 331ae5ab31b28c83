"""Tiny models whose greedy decode is not degenerate, for parity tests of token generation.

The default tiny model's random text weights are so small that greedy decoding repeats one
token, so "32 identical tokens" would prove little; wider random text weights fix that.
"""

from __future__ import annotations

from pathlib import Path

import torch

from inspector.models import TinySpec, load_model, write_tiny_model


def write_varied_tiny_model(
    out_dir: Path, spec: TinySpec = TinySpec(), seed: int = 0, *, thinking: bool = False
) -> Path:
    write_tiny_model(out_dir, seed=seed, spec=spec, thinking=thinking, vocabulary="trained")
    loaded = load_model(str(out_dir))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in loaded.model.named_parameters():
            if param.ndim >= 2 and ("language_model" in name or "lm_head" in name):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.08)
    loaded.model.save_pretrained(out_dir)
    return out_dir
