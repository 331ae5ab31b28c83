"""The reference backend: transformers' Qwen3VLForConditionalGeneration, eager PyTorch.

Prefill goes through the model's own forward (its M-RoPE index, placeholder scatter and
DeepStack injection), fed with visual features from ``encode``, so this backend *is* the
behaviour the exported graphs must reproduce.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from inspector.backends.base import BackendConfig, BackendInfo, BackendPlugin, VisualFeatures, greedy_decode
from inspector.errors import ModelError
from inspector.token_trie import TokenTrie

if TYPE_CHECKING:  # torch, transformers and OpenCV load only with the model
    from inspector.models import LoadedModel

log = logging.getLogger(__name__)


class TorchConfig(BackendConfig):
    """``model.backend: torch``: the checkpoint itself, run by transformers (the reference)."""

    backend: Literal["torch"] = "torch"


def resolve_torch_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; other values unchanged."""
    if device != "auto":
        return device
    import torch

    resolved = "cuda" if torch.cuda.is_available() else "cpu"
    log.info("model.device auto -> %s", resolved)
    return resolved


TORCHAO_INSTALL = "pip install 'line-inspector[torchao]' (torchao, with a CUDA build of torch)"
FP8_ALTERNATIVES = (
    "use model.dtype bfloat16 (or float16) here; to measure FP8 accuracy without such a GPU, export FP8 graphs "
    "(`inspector export onnx --precision fp8`) and run them with backend onnxruntime"
)


def torch_fp8_problem(
    device: str, gpu: str | None, capability: tuple[int, int] | None, torchao: bool
) -> ModelError | None:
    """Why ``dtype: fp8`` cannot run on ``device`` (pure: the caller reads the GPU), or None."""
    from inspector.backends.fp8 import fp8_capability_problem

    if not device.startswith("cuda") or gpu is None or capability is None:
        return ModelError(
            f"model.dtype fp8 on backend torch needs a CUDA GPU with FP8 tensor cores, but the device is {device}",
            FP8_ALTERNATIVES,
        )
    problem = fp8_capability_problem(gpu, capability)
    if problem is not None:
        return ModelError(f"model.dtype fp8: {problem}", FP8_ALTERNATIVES)
    if not torchao:
        return ModelError("model.dtype fp8 on backend torch needs torchao, which is not installed", TORCHAO_INSTALL)
    return None


def check_torch_fp8(device: str) -> None:
    """Refuse ``dtype: fp8`` before any weights load, naming the reason and the alternatives."""
    import importlib.util

    import torch

    gpu = capability = None
    if device.startswith("cuda") and torch.cuda.is_available():
        gpu, capability = torch.cuda.get_device_name(device), tuple(torch.cuda.get_device_capability(device))
    problem = torch_fp8_problem(device, gpu, capability, importlib.util.find_spec("torchao") is not None)
    if problem is not None:
        raise problem


def quantise_fp8(loaded: LoadedModel) -> LoadedModel:
    """``dtype: fp8``: torchao float8 on the language model's linears (bfloat16 weights in).

    ``Float8DynamicActivationFloat8WeightConfig`` with per-row scales: E4M3 weights scaled per
    output row, activations quantised per token at run time, float8 matmuls (``torch._scaled_mm``).
    lm_head and the vision tower stay bfloat16, as in the FP8 export.
    """
    import dataclasses

    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    check_torch_fp8(loaded.device)
    quantize_(loaded.model.model.language_model, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
    log.info("torch backend: language model linears in FP8 (torchao, per-row scales)")
    return dataclasses.replace(loaded, dtype="fp8")


def load_torch_backend(config: TorchConfig, tile: int | None = None) -> tuple[TorchBackend, Any]:
    from inspector.models import load_model

    device = resolve_torch_device(config.device)
    # FP8 starts from the bfloat16 weights: torchao quantises a loaded model.
    weights = "bfloat16" if config.dtype == "fp8" else config.dtype
    if config.dtype == "fp8":
        check_torch_fp8(device)  # before the weights load: a 4B model takes a while to refuse
    loaded = load_model(config.path, dtype=weights, device=device)
    if config.dtype == "fp8":
        loaded = quantise_fp8(loaded)
    return TorchBackend(loaded), loaded.tokenizer


@dataclass
class TorchState:
    cache: Any  # transformers DynamicCache, batch = B
    last_logits: Any  # (B, V) next-token logits after the prompt
    rope_delta: Any  # (B, 1) M-RoPE offset for tokens after the prompt
    length: int  # tokens in the cache

    @property
    def batch(self) -> int:
        return int(self.last_logits.shape[0])


class TorchBackend:
    def __init__(self, loaded: LoadedModel) -> None:
        import torch

        self._torch = torch
        self.loaded = loaded
        self.model = loaded.model
        self.device = torch.device(loaded.device)
        self.info = BackendInfo(
            "torch", loaded.dtype, loaded.model_id, loaded.random_weights, loaded.device, loaded.demo_model
        )
        self._table: Any = None  # byte -> normalised value, on the device

    def _pixel_values(self, patches: np.ndarray) -> Any:
        """(B*P, 1536) float pixel values on the device; patch bytes are expanded there (1/8 of the transfer)."""
        torch = self._torch
        batch, count, dim = patches.shape
        source = torch.from_numpy(np.ascontiguousarray(patches)).to(self.device)
        if patches.dtype == np.uint8:
            if self._table is None:
                from inspector.vision import normalisation_table

                self._table = torch.from_numpy(normalisation_table()).to(self.device)
            values = self._table[source.long()].reshape(batch * count, 3, 1, dim // 3)
            return values.expand(-1, -1, 2, -1).reshape(batch * count, -1)
        return source.reshape(batch * count, dim)

    def encode(self, pixel_values: np.ndarray, grid_thw: tuple[int, int, int]) -> VisualFeatures:
        torch = self._torch
        batch = pixel_values.shape[0]
        flat = self._pixel_values(pixel_values)
        grid = torch.tensor([grid_thw] * batch, dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.model.model.visual(flat.to(self.model.model.visual.dtype), grid_thw=grid, return_dict=True)
        tokens = out.pooler_output.shape[0] // batch
        embeds = out.pooler_output.float().reshape(batch, tokens, -1).cpu().numpy()
        deepstack = np.stack(
            [f.float().reshape(batch, tokens, -1).cpu().numpy() for f in out.deepstack_features], axis=0
        )
        return VisualFeatures(embeds, deepstack, grid_thw)

    def _encoder_outputs(self, visual: VisualFeatures) -> dict[str, Any]:
        from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

        torch = self._torch
        dtype = self.model.dtype
        embeds = torch.from_numpy(visual.embeds).to(self.device, dtype)
        deepstack = torch.from_numpy(visual.deepstack).to(self.device, dtype)
        return {
            "image": BaseModelOutputWithDeepstackFeatures(
                pooler_output=tuple(embeds.unbind(0)),
                deepstack_features=[tuple(layer.unbind(0)) for layer in deepstack.unbind(0)],
            )
        }

    def prefill(
        self, input_ids: np.ndarray, visual: VisualFeatures, option_ids: Sequence[int]
    ) -> tuple[np.ndarray, TorchState]:
        from transformers import DynamicCache

        torch = self._torch
        ids = torch.tensor(
            np.asarray(input_ids, dtype=np.int64), device=self.device
        )  # copies: input may be a read-only broadcast
        image_token_id = self.model.config.image_token_id
        mm_types = (ids == image_token_id).to(torch.int32)
        grid = torch.tensor([visual.grid_thw] * ids.shape[0], dtype=torch.long, device=self.device)
        cache = DynamicCache(config=self.model.config)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids,
                mm_token_type_ids=mm_types,
                image_grid_thw=grid,
                mm_encoder_outputs=self._encoder_outputs(visual),
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        last = out.logits[:, -1, :].float()
        rope_delta = self.model.model.rope_deltas.clone()
        state = TorchState(out.cache, last, rope_delta, int(ids.shape[1]))
        options = last[:, list(option_ids)].cpu().numpy()
        return options.astype(np.float32), state

    def generate(
        self,
        state: TorchState,
        rows: Sequence[int],
        forced_ids: Sequence[int],
        max_new_tokens: int,
        stop_ids: Sequence[int],
        allowed: TokenTrie | None = None,
    ) -> list[list[int]]:
        import copy

        torch = self._torch
        if not rows:
            return []
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        cache = copy.deepcopy(state.cache)  # the state stays reusable for another call
        cache.batch_select_indices(index)
        delta = state.rope_delta[index]
        cursor = {"cache": cache, "length": state.length}

        def feed(tokens: np.ndarray) -> np.ndarray:
            step = torch.from_numpy(tokens).to(self.device)[:, None]
            positions = (torch.full_like(step, cursor["length"]) + delta).unsqueeze(0).expand(3, -1, -1)
            with torch.inference_mode():
                out = self.model(input_ids=step, position_ids=positions, cache=cursor["cache"], use_cache=True)
            cursor["cache"], cursor["length"] = out.cache, cursor["length"] + 1
            return out.logits[:, -1, :].float().cpu().numpy()

        def first_logits() -> np.ndarray:
            return state.last_logits[index].float().cpu().numpy()

        return greedy_decode(feed, first_logits, len(rows), forced_ids, max_new_tokens, stop_ids, allowed)


PLUGIN = BackendPlugin(
    name="torch",
    config=TorchConfig,
    load=load_torch_backend,
    requires=("torch", "transformers"),
    install="pip install 'torch>=2.6' 'transformers>=5.2,<6' (line-inspector's own dependencies: `pip install -e .`); "
    "a CUDA build of torch for device cuda",
    summary="transformers Qwen3-VL in eager PyTorch (the reference)",
)
