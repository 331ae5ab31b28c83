"""The one seam between the pipeline and a model runtime.

Every backend (``torch`` = transformers reference, ``onnxruntime`` = exported graphs,
``tensorrt`` = FP8 engines) implements three steps over numpy arrays:

1. ``encode``: a batch of same-size tiles' patches -> merged visual embeddings and the
   DeepStack features (one static-shape vision graph per tile size);
2. ``prefill``: prompt ids with image placeholders + visual features -> the logits of the
   answer options at the last position, and a state holding the KV cache;
3. ``generate``: greedy tokens for some rows of that state (explanations, reasoning).

Numpy at the seam keeps the pipeline free of any one framework's tensors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from inspector.config_paths import RELATIVE_TO_CONFIG
from inspector.token_trie import TokenTrie

# Rows of Qwen3-VL pixel_values: channels (3) x temporal patch (2) x 16 x 16, float32.
PATCH_DIM = 3 * 2 * 16 * 16
# Rows of patch bytes (the hot path): channels x 16 x 16 uint8, one temporal frame, not yet
# normalised. Backends expand them on their device (see inspector.vision.normalise_patch_bytes).
PATCH_BYTES_DIM = 3 * 16 * 16
# Patches per visual token (spatial merge 2x2).
PATCHES_PER_TOKEN = 4


# Weight / compute precision a config may ask for; fp8 needs compute capability >= 8.9.
Precision = Literal["float32", "bfloat16", "float16", "fp8"]
# "auto": cuda when available, else cpu, resolved once when the model loads.
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class BackendConfig(BaseModel):
    """The ``model`` section fields every backend shares; each backend subclasses it with its own.

    ``backend`` (a Literal in each subclass) is the tag of the discriminated union in
    ``inspector.config``, so an option of another backend is an unknown key.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str
    path: str = Field(
        description="checkpoint directory, or a hub id such as Qwen/Qwen3-VL-4B-Instruct" + RELATIVE_TO_CONFIG
    )
    dtype: Precision = Field(
        "float32", description="weights and compute: float32, bfloat16, float16, fp8 (compute capability >= 8.9)"
    )
    device: str = Field("auto", description="auto (cuda when available, else cpu), cpu, cuda, cuda:N")
    batch_size: int = Field(4, ge=1, le=256, description="tiles per model call")
    reasoning: bool = Field(False, description="Thinking models: reason before answering (slower)")
    max_reasoning_tokens: int = Field(256, ge=1, le=8192, description="bound on a Thinking model's reasoning")

    # Which devices this backend runs on; subclasses narrow it (TensorRT: GPUs only).
    devices: ClassVar[re.Pattern[str]] = DEVICE_PATTERN
    devices_help: ClassVar[str] = "auto, cpu, cuda or cuda:N"

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if not cls.devices.match(device):
            raise ValueError(f"must be {cls.devices_help}")
        return device


@dataclass(frozen=True)
class BackendPlugin:
    """What the registry (``inspector.backends.registry``) needs to know about one backend."""

    name: str  # the ``model.backend`` value
    config: type[BackendConfig]
    # (validated model section, tiling.tile or None) -> (backend, the checkpoint's tokenizer)
    load: Callable[[Any, int | None], tuple[Backend, Any]]
    requires: tuple[str, ...]  # modules that must be importable for this backend to run
    install: str  # how to get them (and the hardware it needs), shown when they are missing
    summary: str = ""


@dataclass(frozen=True, slots=True)
class BackendInfo:
    name: str  # "torch" | "onnxruntime" | "tensorrt"
    precision: str  # "float32", "bfloat16", "float16", "fp8"
    model_id: str
    random_weights: bool
    device: str = "cpu"
    demo_model: bool = False  # trained from a tiny random model on synthetic data (inspector train)


@dataclass(frozen=True, slots=True)
class VisualFeatures:
    """Vision encoder output for B tiles of one size.

    ``embeds``: (B, T, D) merged embeddings that replace the T image placeholders;
    ``deepstack``: (K, B, T, D) features added to the hidden states after text layers 0..K-1;
    ``grid_thw``: the patch grid (t, h, w) shared by all B tiles.
    """

    embeds: np.ndarray
    deepstack: np.ndarray
    grid_thw: tuple[int, int, int]

    @property
    def batch(self) -> int:
        return int(self.embeds.shape[0])

    @property
    def tokens_per_image(self) -> int:
        return int(self.embeds.shape[1])

    def rows(self, rows: Sequence[int]) -> VisualFeatures:
        index = np.asarray(rows, dtype=np.int64)
        return VisualFeatures(self.embeds[index], self.deepstack[:, index], self.grid_thw)


class DecodeState(Protocol):
    """Backend-specific KV cache and positions after a prefill; opaque to the pipeline."""

    @property
    def batch(self) -> int: ...


@runtime_checkable
class Backend(Protocol):
    info: BackendInfo

    def encode(self, pixel_values: np.ndarray, grid_thw: tuple[int, int, int]) -> VisualFeatures:
        """B tiles with grid ``grid_thw`` as (B, P, PATCH_DIM) float32 ``pixel_values`` or as
        (B, P, PATCH_BYTES_DIM) uint8 patch bytes; both give the same features."""
        ...

    def prefill(
        self, input_ids: np.ndarray, visual: VisualFeatures, option_ids: Sequence[int]
    ) -> tuple[np.ndarray, DecodeState]:
        """``input_ids``: (B, L) with exactly T image placeholders per row.

        Returns the float32 logits (B, len(option_ids)) of the answer options at the
        last position, and the state to continue from.
        """
        ...

    def generate(
        self,
        state: DecodeState,
        rows: Sequence[int],
        forced_ids: Sequence[int],
        max_new_tokens: int,
        stop_ids: Sequence[int],
        allowed: TokenTrie | None = None,
    ) -> list[list[int]]:
        """Feed ``forced_ids`` after the prefill for the given rows, then decode greedily
        (each step over the ids ``allowed`` lets continue what the row wrote, where given).

        Returns per row the generated ids (not the forced ones), ending before a stop id.
        """
        ...


def greedy_decode(
    feed: Callable[[np.ndarray], np.ndarray],
    first_logits: Callable[[], np.ndarray],
    rows: int,
    forced_ids: Sequence[int],
    max_new_tokens: int,
    stop_ids: Sequence[int],
    allowed: TokenTrie | None = None,
) -> list[list[int]]:
    """The decode loop every backend shares; backends supply one step.

    ``feed(tokens)`` consumes one token per row, shape (rows,), and returns the next-token
    logits (rows, vocabulary); ``first_logits()`` gives those right after the prefill (only
    called when nothing is forced). Each step takes the greedy token, or with ``allowed`` the
    greedy one of the ids that continue what the row has written (a row whose sequence is
    complete stops). A row ends at a stop id; the loop ends when all rows ended or reached
    ``max_new_tokens``.
    """
    generated: list[list[int]] = [[] for _ in range(rows)]
    finished = [False] * rows

    def choose(logits: np.ndarray) -> list[int]:
        if allowed is None:
            return np.asarray(logits).argmax(axis=-1).tolist()
        picks = []
        for row in range(rows):
            ids = allowed.allowed(generated[row])
            if not ids:  # the row wrote a whole allowed sequence
                finished[row] = True
            picks.append(ids[int(np.argmax(np.asarray(logits[row])[list(ids)]))] if ids else -1)
        return picks

    logits = None
    for token in forced_ids:
        logits = feed(np.full(rows, token, dtype=np.int64))
    if logits is None and max_new_tokens == 0:
        return generated
    choice = choose(first_logits() if logits is None else logits)
    stops = set(stop_ids)
    while True:
        for row, token in enumerate(choice):
            if not finished[row] and len(generated[row]) < max_new_tokens:
                if token in stops:
                    finished[row] = True
                else:
                    generated[row].append(int(token))
        if all(done or len(tokens) >= max_new_tokens for done, tokens in zip(finished, generated)):
            return generated
        choice = choose(feed(np.asarray(choice, dtype=np.int64)))
