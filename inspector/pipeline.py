"""Frame -> FrameVerdict: tile, preprocess, classify, aggregate. One object per station, no globals."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from inspector.aggregate import aggregate
from inspector.backends import create_backend
from inspector.backends.base import Backend
from inspector.classify import StageTimes, TileClassifier
from inspector.config import ModelConfig, StationFile
from inspector.frames import Frame
from inspector.tiling import TilePlanner
from inspector.payloads.verdict import FrameVerdict, ModelRef, SourceRef, StationRef, TileVerdict, Timings
from inspector.vision import patch_bytes, patch_shape

log = logging.getLogger(__name__)


@dataclass
class Inspector:
    """Judges frames for one station configuration with one backend."""

    config: StationFile
    backend: Backend
    classifier: TileClassifier

    def __post_init__(self) -> None:
        self.planner = TilePlanner.from_config(self.config.tiling)
        # Reused per frame size: a 4K frame's patches are hundreds of MB, and fresh pages cost.
        self._crops: np.ndarray | None = None
        self._patches: np.ndarray | None = None
        info = self.backend.info
        self.model_ref = ModelRef(
            id=info.model_id, backend=info.name, precision=info.precision, random_weights=info.random_weights
        )
        self.station_ref = StationRef(**self.config.station.model_dump())

    def inspect(self, frame: Frame) -> FrameVerdict:
        began = time.perf_counter()
        tiles = self.planner.plan(*frame.size)
        self._crops = _buffer(self._crops, (len(tiles), self.planner.tile, self.planner.tile, 3), np.uint8)
        tiles, pixels = self.planner.crop(frame.image, out=self._crops)
        self._patches = _buffer(self._patches, patch_shape(len(tiles), self.planner.tile, as_bytes=True), np.uint8)
        # Tiles are never resized, so sizes under the released processor's 256-px minimum are allowed.
        # Patch bytes: the backend normalises on its device (see inspector/vision.py).
        pixel_values, grid = patch_bytes(pixels, out=self._patches, min_pixels=0)
        preprocess_ms = (time.perf_counter() - began) * 1000
        times = StageTimes()
        results = self.classifier.classify(pixel_values, grid, times)
        tile_verdicts = [
            TileVerdict(
                index=tile.index,
                bbox=tile.bbox,
                is_global=tile.is_global,
                probabilities={k: round(v, 6) for k, v in result.probabilities.items()},
                explanation=result.explanation,
            )
            for tile, result in zip(tiles, results)
        ]
        decision = aggregate(tile_verdicts, self.config.inspection)
        timings = Timings(
            preprocess_ms=round(preprocess_ms, 3),
            vision_ms=round(times.vision_ms, 3),
            prefill_ms=round(times.prefill_ms, 3),
            explain_ms=round(times.explain_ms, 3),
            total_ms=round((time.perf_counter() - began) * 1000, 3),
        )
        return FrameVerdict(
            station=self.station_ref,
            source=self._source_ref(frame),
            verdict=decision.verdict,
            confidence=decision.confidence,
            defects=decision.defects,
            model=self.model_ref,
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
    """The config with model fields replaced (CLI --model / --backend), re-validated."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    if not changes:
        return config
    model = ModelConfig.model_validate({**config.model.model_dump(), **changes})
    return config.model_copy(update={"model": model})


def build_inspector(config: StationFile) -> Inspector:
    backend, tokenizer = create_backend(config.model, tile=config.tiling.tile)
    classifier = TileClassifier(
        backend,
        tokenizer,
        config.inspection,
        batch_size=config.model.batch_size,
        reasoning=config.model.reasoning,
        max_reasoning_tokens=config.model.max_reasoning_tokens,
    )
    return Inspector(config, backend, classifier)


_VERSIONED = ("torch", "transformers", "opencv-python-headless", "paho-mqtt", "onnxruntime")


def describe(inspector: Inspector) -> dict[str, Any]:
    """What a status/birth message says about a running pipeline: versions, model, backend, precision, tiling."""
    import sys
    from importlib import metadata

    from inspector import __version__
    from inspector.sources import redact_uri

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
