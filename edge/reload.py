"""reload-config: turn a requested config into a ready Inspector, or a rejection that changes nothing.

Validation happens in layers, cheapest first: the schema (``parse_config``), the sections
a running service cannot swap (station identity, sinks and the service's own edge
settings: they are the MQTT session, the outbox, the metrics server and the queues), then
building the inspector, which loads a new model only when the model itself changed (path,
backend, graphs, dtype, device). The caller then tries the
candidate on a frame before swapping it in, so a config that validates but cannot
inspect (say, a tile size the vision preprocessing refuses) is rejected too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.commands import CommandRejected, ReloadConfigCommand
from inspector.classify import TileClassifier
from inspector.config import RectROI, StationFile, load_config, parse_config
from inspector.errors import InspectorError
from inspector.pipeline import Inspector, build_inspector, model_config_with

log = logging.getLogger(__name__)

# Model fields that need the weights loaded again; the others only change how they are used.
MODEL_LOAD_FIELDS = ("path", "backend", "onnx_dir", "engine_dir", "dtype", "device")
# Sections bound to resources opened at start (the MQTT session, the outbox, the JSONL file,
# the metrics server, the worker queues).
RESTART_ONLY_SECTIONS = ("station", "sinks", "edge")


@dataclass(frozen=True)
class Overrides:
    """Command-line values that win over any config file, at start and on every reload."""

    source: str | None = None
    model: str | None = None
    backend: str | None = None
    loop: bool = False
    pace: bool = False

    def apply(self, config: StationFile) -> StationFile:
        config = model_config_with(config, path=self.model, backend=self.backend)
        changes: dict[str, Any] = {}
        if self.source is not None:
            changes["uri"] = self.source
        if self.loop:
            changes["loop"] = True
        if self.pace:
            changes["pace"] = True
        if changes:
            config = config.model_copy(update={"source": config.source.model_copy(update=changes)})
        return config


def requested_config(command: ReloadConfigCommand, overrides: Overrides) -> StationFile:
    """The validated config the command asks for, with the command-line overrides applied."""
    try:
        if command.path is not None:
            config = load_config(Path(command.path))
        else:
            config = parse_config(command.config, "reload-config")
        return overrides.apply(config)
    except InspectorError as error:
        raise CommandRejected(str(error), command.command) from None
    except ValueError as error:  # a CLI override that the new config makes invalid
        raise CommandRejected(f"reload-config: {error}", command.command) from None


def check_swappable(current: StationFile, candidate: StationFile) -> None:
    for section in RESTART_ONLY_SECTIONS:
        if getattr(current, section) != getattr(candidate, section):
            raise CommandRejected(
                f"reload-config cannot change '{section}' while running (it is bound to the MQTT session, "
                "the outbox and the output files); restart the service for that",
                "reload-config",
            )


def trial_frame_size(inspector: Inspector, default: tuple[int, int] = (640, 480)) -> tuple[int, int]:
    """A frame size the inspector's tiling accepts, for a warm-up or trial frame before any real one.

    A rect ROI must lie inside the frame and a mask ROI is the camera's resolution, so
    a fixed 640x480 would refuse a perfectly good config for a 5 MP camera.
    """
    mask = getattr(inspector.planner, "roi_mask", None)
    if mask is not None:
        return int(mask.shape[1]), int(mask.shape[0])
    roi = inspector.config.tiling.roi
    if isinstance(roi, RectROI):
        return max(default[0], roi.rect[2]), max(default[1], roi.rect[3])
    return default


def needs_model_load(current: StationFile, candidate: StationFile) -> bool:
    # Backend-specific fields (onnx_dir, engine_dir) exist only on their backend's config.
    return any(getattr(current.model, f, None) != getattr(candidate.model, f, None) for f in MODEL_LOAD_FIELDS)


def build_candidate(running: Inspector, candidate: StationFile) -> Inspector:
    """An Inspector for ``candidate``, reusing the loaded model when only prompts/tiling/thresholds changed."""
    try:
        if needs_model_load(running.config, candidate):
            log.info("reload-config: loading model %s (%s)", candidate.model.path, candidate.model.backend)
            return build_inspector(candidate)
        model = candidate.model
        classifier = TileClassifier(
            running.backend,
            running.classifier.tokenizer,
            candidate.inspection,
            batch_size=model.batch_size,
            reasoning=model.reasoning,
            max_reasoning_tokens=model.max_reasoning_tokens,
        )
        return Inspector(candidate, running.backend, classifier)
    except InspectorError as error:
        raise CommandRejected(f"reload-config: {error}", "reload-config") from None
    except Exception as error:  # noqa: BLE001 - a model that fails to load must not take the service down
        raise CommandRejected(f"reload-config: {type(error).__name__}: {error}", "reload-config") from None
