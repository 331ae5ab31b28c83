"""Export-only wrapper of Qwen3-VL's vision tower for one fixed tile size.

transformers' vision model packs all images into one sequence and splits attention by
``cu_seqlens`` (a data-dependent split that neither the dynamo exporter nor TensorRT likes).
For fixed-size tiles the grid is a constant, so this wrapper:

- bakes the position-embedding interpolation (the already-interpolated table) and the 2-D
  rotary cos/sin for that grid as constants, computed with transformers' own helpers;
- keeps tiles on a batch dimension and runs plain per-tile attention (matmul, softmax);
- outputs merged embeddings (B, T, D) and DeepStack features (K, B, T, D), as
  ``inspector.backends.base.VisualFeatures`` holds them.

The weights are the transformers modules' own (norms, MLPs, mergers are called as is).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from inspector.backends.base import PATCH_BYTES_DIM, PATCH_DIM


def tile_grid(tile: int, patch_size: int = 16) -> tuple[int, int, int]:
    """Patch grid (t, h, w) of one square tile: one temporal step, ``tile / 16`` patches a side."""
    return (1, tile // patch_size, tile // patch_size)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class VisionGraph(nn.Module):
    """``pixel_values`` (B, P, 1536) -> ``embeds`` (B, T, D_text), ``deepstack`` (K, B, T, D_text).

    With ``patch_bytes=True`` the input is instead the pipeline's hot-path form, uint8
    ``patch_bytes`` (B, P, 768): one temporal frame, not normalised. The graph maps bytes
    through the 256-entry normalisation table and repeats the frame (what
    ``inspector.vision.normalise_patch_bytes`` does on the host), so a GPU receives 1/8 of
    the bytes.
    """

    def __init__(
        self, visual: Any, grid_thw: tuple[int, int, int], io_dtype: torch.dtype | None = None,
        *, patch_bytes: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        from transformers.vision_utils import get_vision_interpolation_indices_and_weights, get_vision_position_ids

        from inspector.vision import normalisation_table

        self.visual = visual
        self.grid_thw = grid_thw
        self.patches = grid_thw[0] * grid_thw[1] * grid_thw[2]
        self.tokens = self.patches // visual.spatial_merge_unit
        self.hidden = visual.config.hidden_size
        self.heads = visual.config.num_heads
        self.head_dim = self.hidden // self.heads
        self.deepstack_indexes = list(visual.deepstack_visual_indexes)
        dtype = visual.patch_embed.proj.weight.dtype
        self.io_dtype = io_dtype or dtype
        grid = torch.tensor([grid_thw], dtype=torch.long)
        with torch.no_grad():
            # The same expressions as Qwen3VLVisionModel.forward, evaluated once for this grid.
            indices, weights = get_vision_interpolation_indices_and_weights(
                grid,
                num_grid_per_side=visual.num_grid_per_side,
                mode=visual.interpolation_mode,
                align_corners=visual.interpolation_align_corners,
                spatial_merge_size=visual.config.spatial_merge_size,
            )
            pos_embeds = (visual.pos_embed(indices) * weights[:, :, None]).sum(1).to(dtype)
            position_ids = get_vision_position_ids(grid, visual.spatial_merge_size)
            cos, sin = visual.rotary_pos_emb(pos_embeds, position_ids)
        self.register_buffer("pos_embeds", pos_embeds.contiguous(), persistent=False)
        self.register_buffer("rope_cos", cos.float().contiguous(), persistent=False)
        self.register_buffer("rope_sin", sin.float().contiguous(), persistent=False)
        self.patch_bytes = patch_bytes
        self.register_buffer("byte_values", torch.from_numpy(normalisation_table()), persistent=False)

    def _attention(self, block: Any, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        qkv = block.attn.qkv(x).reshape(batch, self.patches, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]  # (B, H, P, hd)
        # Rotary in float32, as apply_rotary_pos_emb_vision does.
        q32, k32 = query.float(), key.float()
        query = (q32 * self.rope_cos + _rotate_half(q32) * self.rope_sin).to(x.dtype)
        key = (k32 * self.rope_cos + _rotate_half(k32) * self.rope_sin).to(x.dtype)
        scores = torch.matmul(query, key.transpose(2, 3)) * block.attn.scaling
        probs = torch.softmax(scores.float(), dim=-1).to(x.dtype)
        out = torch.matmul(probs, value).transpose(1, 2).reshape(batch, self.patches, self.hidden)
        return block.attn.proj(out)

    def _expand_bytes(self, patch_bytes: torch.Tensor) -> torch.Tensor:
        batch = patch_bytes.shape[0]
        values = self.byte_values[patch_bytes.long()]  # (B, P, 768) float32, the reference's values
        values = values.reshape(batch, self.patches, 3, 1, PATCH_BYTES_DIM // 3).expand(-1, -1, -1, 2, -1)
        return values.reshape(batch, self.patches, PATCH_DIM)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        visual = self.visual
        batch = pixel_values.shape[0]
        if self.patch_bytes:
            pixel_values = self._expand_bytes(pixel_values)
        proj = visual.patch_embed.proj
        # Conv3d with kernel == stride over one patch is a linear map of its 1536 values.
        weight = proj.weight.reshape(proj.weight.shape[0], PATCH_DIM)
        x = nn.functional.linear(pixel_values.to(weight.dtype), weight, proj.bias)
        x = x + self.pos_embeds
        features = []
        for index, block in enumerate(visual.blocks):
            x = x + self._attention(block, block.norm1(x))
            x = x + block.mlp(block.norm2(x))
            if index in self.deepstack_indexes:
                merger = visual.deepstack_merger_list[self.deepstack_indexes.index(index)]
                features.append(merger(x.reshape(-1, self.hidden)).reshape(batch, self.tokens, -1))
        embeds = visual.merger(x.reshape(-1, self.hidden)).reshape(batch, self.tokens, -1)
        return embeds.to(self.io_dtype), torch.stack(features, dim=0).to(self.io_dtype)
