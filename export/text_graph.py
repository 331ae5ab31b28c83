"""Export-only wrapper of Qwen3-VL's text decoder, with explicit tensors in and out.

Inputs (the layout NVIDIA's TensorRT-Edge-LLM uses for this model):

- ``inputs_embeds`` (B, L, D): token embeddings with the visual embeddings already placed;
- ``position_ids`` (3, B, L) int64: M-RoPE (t, h, w) positions, computed on the host;
- ``attention_mask`` (B, past + L) int64: 1 = attend, 0 = padding;
- ``deepstack_embeds`` (K, B, L, D): DeepStack features scattered to full length, zeros at
  text positions, added to the hidden states after layers 0..K-1 (equivalent to
  transformers' ``_deepstack_process``, which adds them at the visual positions only);
- ``past_key_<i>`` / ``past_value_<i>`` (B, KV, past, hd) per layer.

Outputs: ``logits`` (B, V) float32 at the last position (the "decoder" form) or
``option_logits`` (B, n) float32 for the int64 ``option_ids`` input (the "verdict" form,
which gathers a handful of lm_head rows instead of reading the whole head); then
``present_key_<i>`` / ``present_value_<i>`` (B, KV, past + L, hd).

Rotary tables, the causal mask and grouped-KV repetition are computed in the graph from
these inputs with standard ops, mirroring transformers' eager path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

DECODER = "decoder"
VERDICT = "verdict"


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def mrope_axis_per_frequency(head_dim: int, mrope_section: list[int]) -> list[int]:
    """Which position axis (0 = t, 1 = h, 2 = w) drives each rotary frequency.

    Qwen3-VL interleaves the axes (t h w t h w ...), the layout
    ``Qwen3VLTextRotaryEmbedding.recomposition_frequencies`` builds.
    """
    axes = [0] * (head_dim // 2)
    for axis, offset in ((1, 1), (2, 2)):
        for index in range(offset, mrope_section[axis] * 3, 3):
            axes[index] = axis
    return axes


_PROJECTIONS = (
    ("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
    ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj"),
)  # fmt: skip


def transposed_in_place(linear: nn.Linear) -> nn.Parameter:
    """W^T (in, out), contiguous, sharing memory with ``linear.weight`` (which becomes a view of it).

    Traced as ``x @ W^T`` with W^T already an initializer, the exporter writes it as is instead
    of constant-folding a transposed copy of every weight (7 GB more RAM for the 4B model).
    Values are unchanged; a second call (the next graph of the same model) copies nothing.
    """
    weight = linear.weight.detach()
    transposed = weight.t().contiguous()
    if transposed.data_ptr() != weight.data_ptr():
        linear.weight = nn.Parameter(transposed.t(), requires_grad=False)
    return nn.Parameter(transposed, requires_grad=False)


def text_io_names(layers: int, form: str) -> tuple[list[str], list[str]]:
    inputs = ["inputs_embeds", "position_ids", "attention_mask", "deepstack_embeds"]
    for layer in range(layers):
        inputs += [f"past_key_{layer}", f"past_value_{layer}"]
    if form == VERDICT:
        inputs.append("option_ids")
    outputs = ["option_logits" if form == VERDICT else "logits"]
    for layer in range(layers):
        outputs += [f"present_key_{layer}", f"present_value_{layer}"]
    return inputs, outputs


class TextGraph(nn.Module):
    def __init__(self, model: Any, form: str, io_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if form not in (DECODER, VERDICT):
            raise ValueError(f"form must be {DECODER!r} or {VERDICT!r}")
        text = model.model.language_model
        config = text.config
        self.form = form
        self.layers = text.layers
        self.norm = text.norm
        self.lm_head = model.lm_head
        self.dtype = model.lm_head.weight.dtype
        self.io_dtype = io_dtype or self.dtype
        self.head_dim = config.head_dim
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.deepstack_layers = len(model.config.vision_config.deepstack_visual_indexes)
        self.weights_t = nn.ParameterDict()
        for index, layer in enumerate(self.layers):
            for owner, name in _PROJECTIONS:
                linear = getattr(getattr(layer, owner), name)
                self.weights_t[f"layer{index}_{name}"] = transposed_in_place(linear)
        rotary = text.rotary_emb
        self.attention_scaling = float(rotary.attention_scaling)
        self.register_buffer("inv_freq", rotary.inv_freq.detach().float().clone(), persistent=False)
        axes = mrope_axis_per_frequency(self.head_dim, list(rotary.mrope_section))
        self.register_buffer("freq_axis", torch.tensor(axes, dtype=torch.long), persistent=False)

    def _rotary(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Pick each frequency's axis first, then multiply: the same float products as
        # computing all three axes and recomposing, as transformers does.
        positions = position_ids.index_select(0, self.freq_axis).permute(1, 2, 0).float()  # (B, L, hd/2)
        freqs = positions * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.attention_scaling).to(self.dtype)
        sin = (emb.sin() * self.attention_scaling).to(self.dtype)
        return cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, L, hd)

    def _mask(self, position_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # Shape-derived ranges via cumsum keep the graph free of baked lengths.
        query = torch.cumsum(torch.ones_like(position_ids[0, 0]), 0) - 1  # (L,)
        key = torch.cumsum(torch.ones_like(attention_mask[0]), 0) - 1  # (past + L,)
        past = key[-1:] - query[-1:]
        allowed = key.unsqueeze(0) <= (query + past).unsqueeze(1)  # (L, past + L) causal
        allowed = allowed.unsqueeze(0).unsqueeze(0) & (attention_mask != 0).unsqueeze(1).unsqueeze(1)
        minimum = torch.tensor(torch.finfo(torch.float32).min, dtype=torch.float32)
        return torch.where(allowed, torch.zeros_like(minimum), minimum)  # (B, 1, L, past + L) float32

    def _linear(self, x: torch.Tensor, index: int, owner: Any, name: str) -> torch.Tensor:
        out = torch.matmul(x, self.weights_t[f"layer{index}_{name}"])
        bias = getattr(owner, name).bias
        return out if bias is None else out + bias

    def _mlp(self, x: torch.Tensor, index: int, mlp: Any) -> torch.Tensor:
        gate = mlp.act_fn(self._linear(x, index, mlp, "gate_proj"))
        return self._linear(gate * self._linear(x, index, mlp, "up_proj"), index, mlp, "down_proj")

    def _attention(
        self, index: int, attn: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
        past_key: torch.Tensor, past_value: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        batch, length = x.shape[0], x.shape[1]
        query = self._linear(x, index, attn, "q_proj").view(batch, length, self.heads, self.head_dim)
        key = self._linear(x, index, attn, "k_proj").view(batch, length, self.kv_heads, self.head_dim)
        value = self._linear(x, index, attn, "v_proj").view(batch, length, self.kv_heads, self.head_dim)
        query, key, value = attn.q_norm(query).transpose(1, 2), attn.k_norm(key).transpose(1, 2), value.transpose(1, 2)
        query = query * cos + _rotate_half(query) * sin
        key = key * cos + _rotate_half(key) * sin
        key = torch.cat((past_key.to(self.dtype), key), dim=2)
        value = torch.cat((past_value.to(self.dtype), value), dim=2)
        groups = self.heads // self.kv_heads
        keys = key.unsqueeze(2).expand(-1, -1, groups, -1, -1).flatten(1, 2) if groups > 1 else key
        values = value.unsqueeze(2).expand(-1, -1, groups, -1, -1).flatten(1, 2) if groups > 1 else value
        scores = torch.matmul(query, keys.transpose(2, 3)) * attn.scaling
        # Mask and softmax in float32 (fp16 scores + a float32 minimum would overflow).
        probs = torch.softmax(scores.float() + mask, dim=-1).to(self.dtype)
        out = torch.matmul(probs, values).transpose(1, 2).reshape(batch, length, self.heads * self.head_dim)
        return self._linear(out, index, attn, "o_proj"), key, value

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        deepstack_embeds: torch.Tensor,
        *rest: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        past = rest[: 2 * len(self.layers)]
        cos, sin = self._rotary(position_ids)
        mask = self._mask(position_ids, attention_mask)
        hidden = inputs_embeds.to(self.dtype)
        deepstack = deepstack_embeds.to(self.dtype)
        presents: list[torch.Tensor] = []
        for index, layer in enumerate(self.layers):
            attn_out, key, value = self._attention(
                index, layer.self_attn, layer.input_layernorm(hidden), cos, sin, mask,
                past[2 * index], past[2 * index + 1],
            )  # fmt: skip
            hidden = hidden + attn_out
            hidden = hidden + self._mlp(layer.post_attention_layernorm(hidden), index, layer.mlp)
            if index < self.deepstack_layers:
                hidden = hidden + deepstack[index]
            presents += [key.to(self.io_dtype), value.to(self.io_dtype)]
        last = self.norm(hidden)[:, -1, :]  # (B, D)
        if self.form == VERDICT:
            option_ids = rest[2 * len(self.layers)]
            rows = self.lm_head.weight.index_select(0, option_ids)  # (n, D)
            head = torch.matmul(last, rows.transpose(0, 1))
        else:
            # W (V, D) @ h (B, D, 1): the head stays in the checkpoint's layout, so the
            # decoder and verdict graphs share its bytes in the external data file.
            head = torch.matmul(self.lm_head.weight, last.unsqueeze(-1)).squeeze(-1)
        return (head.float(), *presents)
