"""Frame -> FrameVerdict: tile, preprocess, classify, aggregate. One object per station, no globals."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inspector.aggregate import aggregate
from inspector.backends.base import Backend, BackendConfig
from inspector.backends.registry import create_backend, plugin_for
from inspector.classify import StageTimes, TileClassifier, TileResult
from inspector.config import DEFAULT_RECIPE, StationFile, parse_model_config
from inspector.frames import Frame
from inspector.model_warning import random_weights_warning
from inspector.payloads.verdict import FrameVerdict, ModelRef, SourceRef, StationRef, TileVerdict, Timings
from inspector.tiling import Tile, TilePlanner
from inspector.vision import patch_bytes, patch_shape

if TYPE_CHECKING:
    from inspector.images import ImageInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedFrame:
    """A frame tiled and preprocessed, waiting for the classifier (alone or batched with other frames)."""

    frame: Frame
    tiles: list[Tile]
    pixel_values: np.ndarray
    grid: tuple[int, int, int]
    began: float  # perf_counter at the start of preprocessing
    preprocess_ms: float


@dataclass
class Inspector:
    """Judges frames for one station configuration with one backend."""

    config: StationFile
    backend: Backend
    classifier: TileClassifier
    recipe: str = DEFAULT_RECIPE  # the product recipe (config.recipes) whose prompt and thresholds these are

    def __post_init__(self) -> None:
        self.planner = TilePlanner.from_config(self.config.tiling)
        # Reused per frame size: a 4K frame's patches are hundreds of MB, and fresh pages cost.
        self._crops: np.ndarray | None = None
        self._patches: np.ndarray | None = None
        info = self.backend.info
        self.model_ref = ModelRef(
            id=info.model_id,
            backend=info.name,
            precision=info.precision,
            random_weights=info.random_weights,
            demo_model=info.demo_model,
        )
        self.station_ref = StationRef(**self.config.station.model_dump())
        self._predictions = itertools.count()  # frame indices of predict()

    @classmethod
    def from_config(
        cls,
        config: str | Path | StationFile,
        *,
        model: str | None = None,
        backend: str | None = None,
        onnx_dir: str | Path | None = None,
        device: str | None = None,
    ) -> Inspector:
        """Load the model a station config names (a YAML path or a parsed ``StationFile``).

        The keywords override the config's ``model`` section as the CLI flags do (``model``
        = ``--model``, a checkpoint directory or hub id; ``onnx_dir`` implies onnxruntime;
        ``device="auto"`` picks cuda when available). Logs a warning for a random or demo model.
        """
        from inspector.config import load_config

        station = config if isinstance(config, StationFile) else load_config(config)
        onnx = None if onnx_dir is None else str(onnx_dir)
        return load_inspector(model_config_with(station, path=model, backend=backend, onnx_dir=onnx, device=device))

    def predict(self, image: ImageInput, *, part_id: str | None = None, source_id: str | None = None) -> FrameVerdict:
        """Judge one image: a file path, a numpy array (BGR uint8 as OpenCV gives, or grayscale) or a PIL image.

        Each call is a new frame (indices count up from 0) of ``source_id``, by default the
        file's path or "predict". Errors are raised, not turned into UNCERTAIN verdicts: the
        caller decides what a failure means.
        """
        from datetime import UTC, datetime

        from inspector.images import to_bgr

        if source_id is None:
            source_id = str(image) if isinstance(image, str | Path) else "predict"
        frame = Frame(to_bgr(image), source_id, next(self._predictions), datetime.now(UTC), part_id=part_id)
        return self.inspect(frame)

    def inspect(self, frame: Frame) -> FrameVerdict:
        prepared = self.prepare(frame)
        times = StageTimes()
        results = self.classifier.classify(prepared.pixel_values, prepared.grid, times)
        return self.conclude(prepared, results, times)

    def prepare(self, frame: Frame) -> PreparedFrame:
        """Tile and preprocess one frame. The patches live in a buffer reused by the next call."""
        began = time.perf_counter()
        tiles = self.planner.plan(*frame.size)
        self._crops = _buffer(self._crops, (len(tiles), self.planner.tile, self.planner.tile, 3), np.uint8)
        tiles, pixels = self.planner.crop(frame.image, out=self._crops)
        self._patches = _buffer(self._patches, patch_shape(len(tiles), self.planner.tile, as_bytes=True), np.uint8)
        # Tiles are never resized, so sizes under the released processor's 256-px minimum are allowed.
        # Patch bytes: the backend normalises on its device (see inspector/vision.py).
        pixel_values, grid = patch_bytes(pixels, out=self._patches, min_pixels=0)
        return PreparedFrame(frame, list(tiles), pixel_values, grid, began, (time.perf_counter() - began) * 1000)

    def conclude(self, prepared: PreparedFrame, results: list[TileResult], times: StageTimes) -> FrameVerdict:
        """Tile results (from ``classifier.classify``, perhaps batched with other frames) -> the verdict."""
        tile_verdicts = [
            TileVerdict(
                index=tile.index,
                bbox=tile.bbox,
                is_global=tile.is_global,
                probabilities={k: round(v, 6) for k, v in result.probabilities.items()},
                explanation=result.explanation,
            )
            for tile, result in zip(prepared.tiles, results)
        ]
        decision = aggregate(tile_verdicts, self.config.inspection)
        timings = Timings(
            preprocess_ms=round(prepared.preprocess_ms, 3),
            vision_ms=round(times.vision_ms, 3),
            prefill_ms=round(times.prefill_ms, 3),
            explain_ms=round(times.explain_ms, 3),
            total_ms=round((time.perf_counter() - prepared.began) * 1000, 3),
        )
        return FrameVerdict(
            station=self.station_ref,
            source=self._source_ref(prepared.frame),
            verdict=decision.verdict,
            confidence=decision.confidence,
            defects=decision.defects,
            model=self.model_ref,
            recipe=self.recipe,
            timings=timings,
            tiles=tile_verdicts,
        )

    def error_verdict(self, frame: Frame, error: BaseException) -> FrameVerdict:
        """A frame that could not be judged still gets a verdict: UNCERTAIN, carrying the error."""
        return FrameVerdict(
            station=self.station_ref,
            source=self._source_ref(frame),
            verdict="UNCERTAIN",
            confidence=0.0,
            model=self.model_ref,
            recipe=self.recipe,
            error=f"{type(error).__name__}: {error}",
        )

    @staticmethod
    def _source_ref(frame: Frame) -> SourceRef:
        return SourceRef(
            id=frame.source_id, frame_index=frame.index, captured_at=frame.captured_at, part_id=frame.part_id
        )


def _buffer(current: np.ndarray | None, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    if current is not None and current.shape == shape:
        return current
    return np.empty(shape, dtype=dtype)


def model_config_with(config: StationFile, **overrides: Any) -> StationFile:
    """The config with model fields replaced (CLI --model / --backend / --onnx), re-validated.

    Switching backend keeps the shared fields and drops the old backend's own (``onnx_dir``
    means nothing to torch); ``onnx_dir`` alone switches a backend that has no such option
    to onnxruntime.
    """
    changes = {k: v for k, v in overrides.items() if v is not None}
    if not changes:
        return config
    current = config.model.model_dump()
    backend = changes.get("backend", current["backend"])
    if "backend" not in changes and "onnx_dir" in changes and "onnx_dir" not in plugin_for(backend).config.model_fields:
        backend = "onnxruntime"
    if backend != current["backend"]:
        own = plugin_for(backend).config.model_fields
        current = {k: v for k, v in current.items() if k in BackendConfig.model_fields or k in own}
    model = parse_model_config({**current, **changes, "backend": backend}, "command line (model overrides)")
    return config.model_copy(update={"model": model})


def build_inspector(config: StationFile, recipe: str | None = None) -> Inspector:
    """The pipeline for ``recipe`` of ``config`` (default: its ``default_recipe``), loading its model."""
    recipe = config.default_recipe if recipe is None else recipe
    config = config.for_recipe(recipe)
    backend, tokenizer = create_backend(config.model, tile=config.tiling.tile)
    classifier = TileClassifier(
        backend,
        tokenizer,
        config.inspection,
        batch_size=config.model.batch_size,
        reasoning=config.model.reasoning,
        max_reasoning_tokens=config.model.max_reasoning_tokens,
    )
    return Inspector(config, backend, classifier, recipe)


def load_inspector(config: StationFile, *, warn: Callable[[str], None] | None = None) -> Inspector:
    """Load the model the config names and build its Inspector.

    The random-weights / demo-model warning goes to ``warn`` (the CLI's console), else to the log.
    """
    log.info("loading model %s (%s)", config.model.path, config.model.backend)
    inspector = build_inspector(config)
    warning = random_weights_warning(inspector.backend.info)
    if warning:
        (warn or log.warning)(warning)
    return inspector


_VERSIONED = ("torch", "transformers", "opencv-python-headless", "paho-mqtt", "onnxruntime")


def describe(inspector: Inspector) -> dict[str, Any]:
    """What a status/birth message says about a running pipeline: versions, model, backend, precision, tiling."""
    import sys
    from importlib import metadata

    from inspector.sources import redact_uri
    from inspector.version import __version__

    info = inspector.backend.info
    versions = {"python": sys.version.split()[0], "line-inspector": __version__}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    uri = inspector.config.source.uri
    return {
        "model": info.model_id,
        "backend": info.name,
        "precision": info.precision,
        "random_weights": info.random_weights,
        "demo_model": info.demo_model,
        "device": info.device,
        "tiling": inspector.config.tiling.model_dump(mode="json"),
        "versions": versions,
        "source": uri if isinstance(uri, int) or uri is None else redact_uri(str(uri)),
    }


def warm_up(inspector: Inspector, size: tuple[int, int] = (640, 480)) -> None:
    """One throwaway frame so the first real frame's latency is not the model's lazy setup."""
    from datetime import UTC, datetime

    frame = Frame(np.zeros((size[1], size[0], 3), np.uint8), "warm-up", 0, datetime.now(UTC))
    inspector.inspect(frame)
