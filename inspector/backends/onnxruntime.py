"""The backend protocol on exported ONNX graphs (``inspector export onnx``), with ONNX Runtime.

- ``encode`` runs ``vision_bytes.onnx`` on the pipeline's uint8 patch bytes, or
  ``vision.onnx`` on float32 pixel values (both baked for one tile size);
- ``prefill`` looks up token embeddings on the host (``embed_tokens.npy``, memory-mapped),
  places the visual embeddings at the image placeholders, scatters the DeepStack features
  to full length, computes M-RoPE positions on the host (``inspector.prompting``), and runs
  ``verdict.onnx``, which returns only the answer options' logits (plus the KV cache);
- ``generate`` decodes greedily with ``decoder.onnx`` and the KV cache, with the same
  semantics as the torch backend.

Graphs run through IO binding (``OrtGraph``): only the outputs the caller reads come to the
host as numpy (the option logits of a verdict, the logits of a decode step); the KV cache
stays in ONNX Runtime's own buffers (``OrtValue``) on the provider's device and is bound as
the next step's past — on CUDA it never leaves the GPU unless an explanation is asked for a
subset of the batch's rows (those rows are gathered on the host, once). Works with the CPU
and CUDA execution providers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from inspector.backends.base import (
    PATCH_BYTES_DIM,
    PATCH_DIM,
    BackendConfig,
    BackendInfo,
    BackendPlugin,
    VisualFeatures,
    greedy_decode,
)
from inspector.config_paths import RELATIVE_TO_CONFIG
from inspector.errors import ConfigError, ModelError
from inspector.token_trie import TokenTrie

if TYPE_CHECKING:  # onnx, the checkpoint identity and prompting load with the model, not with the config
    from inspector.artifacts.manifest import Manifest

log = logging.getLogger(__name__)


class OnnxRuntimeConfig(BackendConfig):
    """``model.backend: onnxruntime``: the graphs `inspector export onnx` wrote, on CPU or CUDA."""

    backend: Literal["onnxruntime"] = "onnxruntime"
    onnx_dir: Path | None = Field(
        None, description="exported graphs (`inspector export onnx --out DIR`)" + RELATIVE_TO_CONFIG
    )


CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_NUMPY_IO = {"float32": np.float32, "float16": np.float16}


@dataclass
class OnnxState:
    """KV cache and positions after a prefill; ``generate`` never modifies it."""

    present: list[Any]  # per layer key, value: (B, KV, L, hd), device values of the runner (never copied out)
    rope_delta: np.ndarray  # (B,) int64: M-RoPE offset for tokens after the prompt
    length: int  # tokens in the cache
    last_embeds: np.ndarray  # (B, 1, D) what the last prompt position was fed
    last_deepstack: np.ndarray  # (K, B, 1, D)
    last_positions: np.ndarray  # (3, B, 1)

    @property
    def batch(self) -> int:
        return int(self.rope_delta.shape[0])


def output_placement(outputs: Sequence[str], host: Sequence[str], device: str) -> dict[str, str]:
    """Where each graph output is bound: ``host`` ones on "cpu" (read as numpy), the rest on ``device``."""
    unknown = set(host) - set(outputs)
    if unknown:
        raise ValueError(f"the graph has no output(s) {', '.join(sorted(unknown))}")
    return {name: "cpu" if name in host else device for name in outputs}


class OrtGraph:
    """An ONNX Runtime session run through IO binding.

    ``run(feeds, host)``: ``feeds`` are numpy arrays (copied to the device by ONNX Runtime) or
    ``OrtValue``s from an earlier run (bound as they are, no copy); the outputs named in
    ``host`` come back as numpy, every other output as an ``OrtValue`` left on the device.
    """

    def __init__(self, session: Any, device: str = "cpu", device_id: int = 0) -> None:
        self.session, self.device, self.device_id = session, device, device_id
        self.outputs = [o.name for o in session.get_outputs()]

    def run(self, feeds: dict[str, Any], host: Sequence[str]) -> tuple[list[np.ndarray], dict[str, Any]]:
        import onnxruntime as ort

        binding = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        placement = output_placement(self.outputs, host, self.device)
        for name, where in placement.items():
            binding.bind_output(name, where, 0 if where == "cpu" else self.device_id)
        self.session.run_with_iobinding(binding)
        values = dict(zip(placement, binding.get_outputs()))
        return [values[name].numpy() for name in host], {n: v for n, v in values.items() if n not in host}

    def take_rows(self, values: list[Any], rows: np.ndarray, batch: int) -> list[Any]:
        """The KV cache of ``rows`` only: as it is when that is every row, else gathered (via the host)."""
        if len(rows) == batch and np.array_equal(rows, np.arange(batch)):
            return values
        import onnxruntime as ort

        return [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v.numpy()[rows]), self.device, self.device_id)
                for v in values]  # fmt: skip


def _default_providers() -> list[Any]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in (CUDA, CPU) if p in available]


def check_model_matches(manifest: Manifest, model_dir: Path) -> None:
    """Graphs must come from the checkpoint the config names (architecture and weight files)."""
    from inspector.artifacts.identity import identify_checkpoint

    identity = identify_checkpoint(model_dir, hash_weights=False)
    exported = manifest.model
    hint = (
        f"re-export with `inspector export onnx --model {model_dir} --tile {manifest.tile} --out DIR`, "
        "or point model.onnx_dir at the export of this checkpoint"
    )
    if identity.config_sha256 != exported.config_sha256:
        raise ModelError(
            f"the ONNX graphs were exported from {exported.name} (config {exported.config_sha256[:12]}), "
            f"but model.path {model_dir} has config {identity.config_sha256[:12]}",
            hint,
        )
    if exported.weight_files and (
        identity.weight_files != exported.weight_files or identity.weights_fingerprint != exported.weights_fingerprint
    ):
        raise ModelError(
            f"the ONNX graphs were exported from other weights than those in {model_dir} "
            "(the safetensors files differ in size or content)",
            hint,
        )


class OnnxRuntimeBackend:
    def __init__(
        self,
        onnx_dir: Path,
        *,
        providers: Sequence[Any] | None = None,
        model_dir: Path | None = None,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        from inspector.artifacts.manifest import read_manifest

        self.onnx_dir = Path(onnx_dir)
        self.manifest = read_manifest(self.onnx_dir)
        if model_dir is not None:
            check_model_matches(self.manifest, Path(model_dir))
        manifest = self.manifest
        if manifest.io_dtype not in _NUMPY_IO:
            raise ModelError(f"graphs with {manifest.io_dtype} inputs cannot be fed from numpy", "re-export them")
        self._io = _NUMPY_IO[manifest.io_dtype]
        self.providers = list(providers) if providers is not None else _default_providers()
        names = [p if isinstance(p, str) else p[0] for p in self.providers]
        if manifest.dtype == "bfloat16" and CUDA not in names:
            raise ModelError(
                f"{self.onnx_dir} holds bfloat16 graphs; ONNX Runtime runs bfloat16 only with the CUDA provider",
                "use CUDA (model.device: cuda), or export float32 / float16 graphs for CPU",
            )
        self._options = ort.SessionOptions()
        self._options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            self._options.intra_op_num_threads = threads
        # Sessions load on first use (one of the two vision forms; the decoder only for
        # explanations), except the verdict graph that every frame needs.
        self._sessions: dict[str, Any] = {}
        # Where the KV cache lives between calls: the first provider's device.
        self._device = "cuda" if CUDA in names else "cpu"
        first = self.providers[0]
        self._device_id = int(first[1].get("device_id", 0)) if isinstance(first, tuple | list) else 0
        self._session("verdict")
        table = np.load(self.onnx_dir / manifest.embedding["file"], mmap_mode="r")
        self._embedding = table
        self._bf16_table = manifest.embedding["dtype"] == "bfloat16"
        text = manifest.text
        self._layers, self._kv_heads, self._head_dim = text["layers"], text["kv_heads"], text["head_dim"]
        self._hidden, self._deepstack_layers = text["hidden"], text["deepstack_layers"]
        self.image_token_id = manifest.token_ids["image"]
        device = "cuda" if CUDA in names else "cpu"
        self.info = BackendInfo(
            "onnxruntime",
            manifest.effective_precision,
            manifest.model.name,
            manifest.model.random_weights,
            device,
            manifest.model.demo_model,
        )
        if manifest.model.random_weights:
            log.info("%s was exported from a RANDOM test model: its verdicts mean nothing", self.onnx_dir)

    def _session(self, name: str) -> Any:
        if name not in self._sessions:
            import onnxruntime as ort

            path = self.onnx_dir / self.manifest.graphs[name].file
            log.info("loading %s with %s", path, self.providers)
            try:
                session = ort.InferenceSession(str(path), self._options, providers=self.providers)
                self._sessions[name] = OrtGraph(session, self._device, self._device_id)
            except Exception as error:  # ORT raises its own exception types
                raise ModelError(
                    f"ONNX Runtime cannot load {path}: {str(error).splitlines()[0]}",
                    "check the providers (float16/bfloat16 graphs may need CUDA) or re-export the graphs",
                ) from None
        return self._sessions[name]

    # -- host-side pieces -------------------------------------------------------------

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        rows = np.asarray(self._embedding[ids.ravel()])
        if self._bf16_table:  # bfloat16 bits -> float32, exact
            rows = (rows.astype(np.uint32) << 16).view(np.float32)
        return rows.reshape(*ids.shape, -1).astype(self._io, copy=False)

    def _empty_past(self, batch: int) -> list[np.ndarray]:
        shape = (batch, self._kv_heads, 0, self._head_dim)
        return [np.zeros(shape, dtype=self._io) for _ in range(2 * self._layers)]

    def _feeds(self, embeds: np.ndarray, positions: np.ndarray, mask: np.ndarray, deepstack: np.ndarray,
               past: list[np.ndarray]) -> dict[str, np.ndarray]:  # fmt: skip
        feeds = {
            "inputs_embeds": np.ascontiguousarray(embeds, dtype=self._io),
            "position_ids": np.ascontiguousarray(positions, dtype=np.int64),
            "attention_mask": np.ascontiguousarray(mask, dtype=np.int64),
            "deepstack_embeds": np.ascontiguousarray(deepstack, dtype=self._io),
        }
        for layer in range(self._layers):
            feeds[f"past_key_{layer}"] = past[2 * layer]
            feeds[f"past_value_{layer}"] = past[2 * layer + 1]
        return feeds

    # -- the protocol -----------------------------------------------------------------

    def encode(self, pixel_values: np.ndarray, grid_thw: tuple[int, int, int]) -> VisualFeatures:
        manifest = self.manifest
        if tuple(grid_thw) != manifest.grid_thw:
            raise ModelError(
                f"the vision graph in {self.onnx_dir} is baked for {manifest.tile} px tiles (grid "
                f"{manifest.grid_thw}), got patches of grid {tuple(grid_thw)}",
                f"set tiling.tile: {manifest.tile}, or re-export with --tile matching tiling.tile",
            )
        patches = manifest.grid_thw[0] * manifest.grid_thw[1] * manifest.grid_thw[2]
        if pixel_values.dtype == np.uint8:  # the hot path: normalised and repeated in the graph
            graph, name, dim, dtype = "vision_bytes", "patch_bytes", PATCH_BYTES_DIM, np.uint8
        else:
            graph, name, dim, dtype = "vision", "pixel_values", PATCH_DIM, self._io
        if pixel_values.ndim != 3 or pixel_values.shape[1:] != (patches, dim):
            raise ValueError(f"{name} must be (B, {patches}, {dim}), got {pixel_values.shape}")
        feeds = {name: np.ascontiguousarray(pixel_values, dtype=dtype)}
        (embeds, deepstack), _ = self._session(graph).run(feeds, ("embeds", "deepstack"))
        return VisualFeatures(embeds.astype(np.float32), deepstack.astype(np.float32), tuple(grid_thw))

    def prefill(
        self, input_ids: np.ndarray, visual: VisualFeatures, option_ids: Sequence[int]
    ) -> tuple[np.ndarray, OnnxState]:
        from inspector.prompting import mrope_positions

        ids = np.asarray(input_ids, dtype=np.int64)
        if ids.ndim != 2 or ids.shape[0] != visual.batch:
            raise ValueError(f"input_ids must be (B, L) with B = {visual.batch} tiles, got {ids.shape}")
        batch, length = ids.shape
        image = ids == self.image_token_id
        if np.any(image.sum(axis=1) != visual.tokens_per_image):
            raise ValueError(f"every prompt row needs exactly {visual.tokens_per_image} image placeholders")
        embeds = self._embed(ids)
        # Row-major order of the mask = masked_scatter's order in transformers.
        embeds[image] = visual.embeds.reshape(-1, self._hidden).astype(self._io)
        deepstack = np.zeros((self._deepstack_layers, batch, length, self._hidden), dtype=self._io)
        deepstack[:, image] = visual.deepstack.reshape(self._deepstack_layers, -1, self._hidden).astype(self._io)
        positions = np.empty((3, batch, length), dtype=np.int64)
        delta = np.empty(batch, dtype=np.int64)
        for row in range(batch):
            positions[:, row], delta[row] = mrope_positions(
                ids[row], self.image_token_id, visual.grid_thw, self.manifest.spatial_merge
            )
        feeds = self._feeds(embeds, positions, np.ones((batch, length)), deepstack, self._empty_past(batch))
        feeds["option_ids"] = np.asarray(list(option_ids), dtype=np.int64)
        # Only the option logits come to the host; the KV cache stays where the provider put it.
        (options,), kept = self._session("verdict").run(feeds, ("option_logits",))
        state = OnnxState(
            present=[kept[f"present_{kind}_{layer}"] for layer in range(self._layers) for kind in ("key", "value")],
            rope_delta=delta,
            length=length,
            last_embeds=embeds[:, -1:].copy(),
            last_deepstack=deepstack[:, :, -1:].copy(),
            last_positions=positions[:, :, -1:].copy(),
        )
        return options.astype(np.float32), state

    def _decode(self, embeds: np.ndarray, positions: np.ndarray, deepstack: np.ndarray, past: list[Any],
                mask: np.ndarray) -> tuple[np.ndarray, list[Any]]:  # fmt: skip
        """One decoder step: full-vocabulary logits to the host, the grown KV cache kept on the device."""
        feeds = self._feeds(embeds, positions, mask, deepstack, past)
        (logits,), kept = self._session("decoder").run(feeds, ("logits",))
        return logits, [kept[f"present_{kind}_{layer}"] for layer in range(self._layers) for kind in ("key", "value")]

    def generate(
        self,
        state: OnnxState,
        rows: Sequence[int],
        forced_ids: Sequence[int],
        max_new_tokens: int,
        stop_ids: Sequence[int],
        allowed: TokenTrie | None = None,
    ) -> list[list[int]]:
        if not rows:
            return []
        index = np.asarray(list(rows), dtype=np.int64)
        count = len(index)
        past = self._session("decoder").take_rows(state.present, index, state.batch)
        delta = state.rope_delta[index]
        zeros = np.zeros((self._deepstack_layers, count, 1, self._hidden), dtype=self._io)
        cursor = {"past": past, "length": state.length}

        def feed(tokens: np.ndarray) -> np.ndarray:
            positions = np.broadcast_to((cursor["length"] + delta)[None, :, None], (3, count, 1))
            mask = np.ones((count, cursor["length"] + 1))
            logits, cursor["past"] = self._decode(self._embed(tokens[:, None]), positions, zeros, cursor["past"], mask)
            cursor["length"] += 1
            return logits

        def first_logits() -> np.ndarray:
            # The verdict graph returns option logits only: recompute the last prompt position
            # with the decoder. The cache already holds that position; masking it out makes the
            # recomputed query see exactly the positions before it (no slicing of device buffers).
            mask = np.ones((count, state.length + 1))
            mask[:, state.length - 1] = 0
            logits, _ = self._decode(
                state.last_embeds[index], state.last_positions[:, index], state.last_deepstack[:, index], past, mask
            )
            return logits

        return greedy_decode(feed, first_logits, count, forced_ids, max_new_tokens, stop_ids, allowed)


def providers_for(device: str) -> list[Any]:
    """ONNX Runtime providers for a config ``model.device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""
    import onnxruntime as ort

    if device == "auto":
        device = "cuda" if CUDA in ort.get_available_providers() else "cpu"
        log.info("model.device auto -> %s", device)
    if device == "cpu":
        return [CPU]
    if CUDA not in ort.get_available_providers():
        raise ModelError(
            f"model.device is {device}, but this onnxruntime has no CUDA execution provider",
            "install onnxruntime-gpu (in place of onnxruntime), or set model.device: cpu",
        )
    device_id = int(device.partition(":")[2] or 0)
    return [(CUDA, {"device_id": device_id}), CPU]


def create_onnxruntime_backend(model_config: OnnxRuntimeConfig, *, tile: int | None = None) -> OnnxRuntimeBackend:
    """The backend for ``model.backend: onnxruntime``; checks the export against the config.

    ``tile`` (the station's ``tiling.tile``) must be the size the vision graph is baked for,
    and ``model.path``, when it is a local directory, must be the checkpoint the graphs were
    exported from.
    """
    from inspector.artifacts.manifest import read_manifest

    if model_config.onnx_dir is None:
        raise ConfigError(
            "model.backend is onnxruntime but model.onnx_dir is not set",
            "export the graphs with `inspector export onnx --model DIR --tile N --out DIR` "
            "and set model.onnx_dir to that directory",
        )
    onnx_dir = Path(model_config.onnx_dir).expanduser()
    manifest = read_manifest(onnx_dir)
    if tile is not None and tile != manifest.tile:
        raise ModelError(
            f"the ONNX graphs in {onnx_dir} are built for {manifest.tile} px tiles, but tiling.tile is {tile}",
            f"set tiling.tile: {manifest.tile}, or re-export with --tile {tile}",
        )
    local = Path(model_config.path).expanduser()
    model_dir: Path | None = None
    if local.is_dir():
        model_dir = local
    elif Path(model_config.path).name != manifest.model.name:
        raise ModelError(
            f"the ONNX graphs in {onnx_dir} were exported from {manifest.model.name}, "
            f"but model.path is {model_config.path}",
            "point model.onnx_dir at the export of model.path, or re-export",
        )
    if model_config.dtype != manifest.dtype:
        log.info("model.dtype %s is ignored by onnxruntime: the graphs were exported in %s",
                 model_config.dtype, manifest.dtype)  # fmt: skip
    return OnnxRuntimeBackend(onnx_dir, providers=providers_for(model_config.device), model_dir=model_dir)


def load_onnxruntime_backend(config: OnnxRuntimeConfig, tile: int | None = None) -> tuple[OnnxRuntimeBackend, Any]:
    from inspector.models import load_tokenizer

    return create_onnxruntime_backend(config, tile=tile), load_tokenizer(config.path)


PLUGIN = BackendPlugin(
    name="onnxruntime",
    config=OnnxRuntimeConfig,
    load=load_onnxruntime_backend,
    requires=("onnxruntime",),
    install="pip install 'onnxruntime>=1.20' (CPU), or onnxruntime-gpu in its place for device cuda",
    summary="the exported ONNX graphs on ONNX Runtime (CPU or CUDA)",
)
