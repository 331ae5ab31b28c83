"""``inspector export check``: run the torch reference and the exported graphs on the same input.

Same random tiles (float pixel values in [-1, 1], the normalised range, and random uint8
patch bytes, the pipeline's form), same prompt, same answer options; reports the largest
differences of the vision outputs, the option logits and probabilities, and whether N
greedy explanation tokens agree (decoded with no stop ids, so every row yields exactly N
tokens to compare).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from inspector.artifacts.manifest import read_manifest
from inspector.config import InspectionConfig

log = logging.getLogger(__name__)

# fp32 graphs must match the reference to float noise; fp16/bf16 to their precision.
TOLERANCES = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 5e-2}

DEFAULT_INSPECTION = InspectionConfig(
    product="a machined metal housing",
    defects={
        "scratch": {"description": "a thin straight line across the surface"},
        "dent": {"description": "a small hollow pressed into the surface"},
        "stain": {"description": "a dark spot or blob"},
    },
)


@dataclass(frozen=True, slots=True)
class ParityReport:
    model: str
    onnx_dir: str
    dtype: str
    tile: int
    batch: int
    vision_max_abs_diff: float
    deepstack_max_abs_diff: float
    vision_bytes_max_abs_diff: float  # the pipeline's uint8 patch-bytes input (embeds and DeepStack)
    logit_max_abs_diff: float
    prob_max_abs_diff: float
    verdict_classes_match: bool
    greedy_tokens: int
    greedy_tokens_match: bool
    tolerance: float
    passed: bool

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def random_tiles(batch: int, grid_thw: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    patches = grid_thw[0] * grid_thw[1] * grid_thw[2]
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (batch, patches, 1536)).astype(np.float32)


def check_parity(
    model_dir: str | Path,
    onnx_dir: str | Path,
    *,
    inspection: InspectionConfig = DEFAULT_INSPECTION,
    batch: int = 2,
    tokens: int = 32,
    seed: int = 0,
) -> ParityReport:
    """Compare the torch backend on ``model_dir`` with the onnxruntime backend on ``onnx_dir``."""
    from inspector.backends.onnxruntime import OnnxRuntimeBackend
    from inspector.backends.torch import TorchBackend
    from inspector.models import load_model
    from inspector.prompting import build_prompt

    manifest = read_manifest(onnx_dir)
    # The reference always runs in float32: for float16/bfloat16 graphs the report says how
    # far the export is from the full-precision model.
    loaded = load_model(str(model_dir), dtype="float32")
    reference = TorchBackend(loaded)
    exported = OnnxRuntimeBackend(Path(onnx_dir), model_dir=Path(model_dir))
    pixels = random_tiles(batch, manifest.grid_thw, seed)
    log.info("encoding %d tile(s) of %d px with both backends", batch, manifest.tile)
    ref_visual = reference.encode(pixels, manifest.grid_thw)
    onnx_visual = exported.encode(pixels, manifest.grid_thw)
    patch_bytes = np.random.default_rng(seed + 1).integers(0, 256, (*pixels.shape[:2], 768), dtype=np.uint8)
    ref_bytes = reference.encode(patch_bytes, manifest.grid_thw)
    onnx_bytes = exported.encode(patch_bytes, manifest.grid_thw)
    prompt = build_prompt(loaded.tokenizer, inspection, ref_visual.tokens_per_image)
    ids = np.tile(prompt.input_ids, (batch, 1))
    # Both prefills take the reference's visual features, so the text comparison is not
    # polluted by the vision difference measured above.
    ref_logits, ref_state = reference.prefill(ids, ref_visual, prompt.option_ids)
    onnx_logits, onnx_state = exported.prefill(ids, ref_visual, prompt.option_ids)
    rows = list(range(batch))
    log.info("decoding %d greedy tokens with both backends", tokens)
    ref_tokens = reference.generate(ref_state, rows, prompt.explanation_ids, tokens, ())
    onnx_tokens = exported.generate(onnx_state, rows, prompt.explanation_ids, tokens, ())
    tolerance = TOLERANCES[manifest.dtype]
    vision = float(np.abs(ref_visual.embeds - onnx_visual.embeds).max())
    deepstack = float(np.abs(ref_visual.deepstack - onnx_visual.deepstack).max())
    from_bytes = max(
        float(np.abs(ref_bytes.embeds - onnx_bytes.embeds).max()),
        float(np.abs(ref_bytes.deepstack - onnx_bytes.deepstack).max()),
    )
    probs = float(np.abs(softmax(ref_logits) - softmax(onnx_logits)).max())
    classes = bool(np.array_equal(ref_logits.argmax(-1), onnx_logits.argmax(-1)))
    tokens_match = ref_tokens == onnx_tokens
    return ParityReport(
        model=str(model_dir),
        onnx_dir=str(onnx_dir),
        dtype=manifest.dtype,
        tile=manifest.tile,
        batch=batch,
        vision_max_abs_diff=vision,
        deepstack_max_abs_diff=deepstack,
        vision_bytes_max_abs_diff=from_bytes,
        logit_max_abs_diff=float(np.abs(ref_logits - onnx_logits).max()),
        prob_max_abs_diff=probs,
        verdict_classes_match=classes,
        greedy_tokens=tokens,
        greedy_tokens_match=tokens_match,
        tolerance=tolerance,
        passed=max(vision, deepstack, from_bytes, probs) <= tolerance and (tokens_match or manifest.dtype != "float32"),
    )
