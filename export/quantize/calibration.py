"""Calibration tiles: what the engine will see, cut from the line's own footage.

The frames come through ``inspector.sources.open_source`` (video file, image folder or
glob) or from a labelled data set (``inspector.datasets``: labels.json, COCO, class
folders; only its frames are used), the tiles through the station's ``TilePlanner`` (overlap, global view, ROI) and
``inspector.vision.patch_bytes`` — the very path ``Inspector.inspect`` takes — so the
activation ranges FP8 is calibrated on are those of inspection, not of some other data.

``count`` tiles are drawn uniformly over the whole footage by reservoir sampling with a
fixed seed (a clip's first frames alone would calibrate on one moment of the line), holding
only ``count`` tiles in memory. The fingerprint (sha256 over the chosen tiles' bytes, in
order) identifies the calibration data in the manifest: same footage, tiling and seed give
the same fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inspector.config import TilingConfig
from inspector.errors import InspectorError

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION_TILES = 256


class CalibrationError(InspectorError):
    """The calibration source gives no usable tiles."""


@dataclass(frozen=True, slots=True)
class CalibrationSet:
    patches: np.ndarray  # (N, P, 768) uint8 patch bytes, the pipeline's hot-path form
    grid_thw: tuple[int, int, int]
    source: str
    frames_seen: int
    tiles_seen: int
    seed: int

    @property
    def tiles(self) -> int:
        return int(self.patches.shape[0])

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(np.asarray(self.patches.shape, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(self.patches).tobytes())
        return digest.hexdigest()

    def describe(self) -> dict[str, object]:
        """What the manifest records about the calibration data."""
        return {
            "source": self.source,
            "sha256": self.fingerprint,
            "tiles": self.tiles,
            "frames_seen": self.frames_seen,
            "tiles_seen": self.tiles_seen,
            "seed": self.seed,
        }


def _is_dataset(path: Path) -> bool:
    from inspector.datasets import DatasetError, detect_format

    if not (path.suffix.lower() == ".json" or path.is_dir()):
        return False
    try:
        detect_format(path)
    except DatasetError:
        return False  # a plain image folder: footage
    return True


def _images(source: str | Path, classes: Sequence[str], tile: int) -> Iterator[np.ndarray]:
    """BGR frames of footage (video, folder, glob) or of a labelled data set (labels.json, COCO, class folders)."""
    path = Path(source)
    if path.exists() and _is_dataset(path):
        from inspector.datasets import iter_frames, load_dataset

        dataset = load_dataset(path, classes or ("ok",), verify=False)
        for _, frame in iter_frames(dataset, tile):
            yield frame
        return
    from inspector.sources import open_source

    with open_source(source) as frames:
        if frames.is_live:
            raise CalibrationError(f"{source} is a live source", "calibrate on recorded footage: a video or a folder")
        for frame in frames:
            yield frame.image


def calibration_tiles(
    source: str | Path | Sequence[str | Path], tiling: TilingConfig, count: int = DEFAULT_CALIBRATION_TILES, *,
    seed: int = 0, classes: Sequence[str] = (),
) -> CalibrationSet:  # fmt: skip
    """``count`` tiles (patch bytes) sampled uniformly from every frame of ``source`` (one or several).

    A source is footage (video file, image folder or glob) or a labelled data set whose class
    names are among ``classes`` (the station's); its labels are not used, only its frames.
    """
    sources = [source] if isinstance(source, str | Path) else list(source)
    if not sources:
        raise CalibrationError("no calibration source given", "pass --calib with the line's footage")
    from inspector.tiling import TilePlanner
    from inspector.vision import patch_bytes

    if count < 1:
        raise CalibrationError(f"--calib-tiles {count} is not a positive number", "use e.g. --calib-tiles 256")
    planner = TilePlanner.from_config(tiling)
    rng = np.random.default_rng(seed)
    reservoir: np.ndarray | None = None
    grid: tuple[int, int, int] | None = None
    frames = seen = 0
    images = (image for one in sources for image in _images(one, classes, tiling.tile))
    for image in images:
        frames += 1
        _, pixels = planner.crop(image)
        patches, grid = patch_bytes(pixels, min_pixels=0)
        if reservoir is None:
            reservoir = np.empty((count, *patches.shape[1:]), dtype=np.uint8)
        for tile in patches:
            # Algorithm R: after `seen` tiles each one is in the reservoir with probability count/seen.
            if seen < count:
                reservoir[seen] = tile
            else:
                slot = int(rng.integers(0, seen + 1))
                if slot < count:
                    reservoir[slot] = tile
            seen += 1
    named = ", ".join(str(one) for one in sources)
    if reservoir is None or grid is None:
        raise CalibrationError(f"{named} yielded no frames", "point --calib at the line's footage (video or folder)")
    if seen < count:
        log.warning("%s give(s) only %d tiles (asked for %d): calibrating on all of them", named, seen, count)
    chosen = reservoir[: min(seen, count)]
    log.info("calibration: %d tiles from %d frames (%d tiles) of %s", len(chosen), frames, seen, named)
    return CalibrationSet(chosen, grid, named, frames, seen, seed)
