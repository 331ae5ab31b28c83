"""Frame -> tiles: where to cut (``plan_tiles``) and the cut pixels (``crop_tiles``).

Local tiles follow SAHI's slicing exactly (``sahi.slicing.get_slice_bboxes``): stride =
tile - int(overlap * tile) pixels, row-major, and the last column / row shifted back so
it ends on the frame edge. An optional ROI drops tiles outside it, and an optional
global view (the whole frame squeezed into one tile) comes last. Coordinates are frame
pixels ``[x0, y0, x1, y1)``. A plan depends only on the frame size, so ``TilePlanner``
computes it once per stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspector.config import TILE_MULTIPLE, MaskROI, RectROI, TilingConfig
from inspector.decode import read_image_file
from inspector.errors import ConfigError, InspectorError

BBox = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile of a plan; ``index`` is its position in the plan (= its row in ``crop_tiles``)."""

    index: int
    bbox: BBox  # (x0, y0, x1, y1), exclusive ends, frame pixels
    is_global: bool = False

    @property
    def width(self) -> int:
        return self.bbox[2] - self.bbox[0]

    @property
    def height(self) -> int:
        return self.bbox[3] - self.bbox[1]


def _spans(length: int, tile: int, overlap_px: int) -> list[tuple[int, int]]:
    """SAHI's 1-D walk: step ``tile - overlap_px``; the last span is shifted back to end at ``length``.

    A length shorter than a tile gives the single span [0, length).
    """
    spans: list[tuple[int, int]] = []
    start = 0
    while True:
        end = start + tile
        if end > length:
            end, start = length, max(0, length - tile)
        spans.append((start, end))
        if end >= length:
            return spans
        start = end - overlap_px


def _validate(width: int, height: int, tile: int, overlap: float) -> None:
    if width < 1 or height < 1:
        raise InspectorError(f"frame size {width}x{height} is empty", "frames need at least one pixel each way")
    if tile < TILE_MULTIPLE or tile % TILE_MULTIPLE:
        lower = max(TILE_MULTIPLE, tile // TILE_MULTIPLE * TILE_MULTIPLE)
        raise InspectorError(
            f"tile size {tile} is not a positive multiple of {TILE_MULTIPLE} (one Qwen3-VL visual token is 32x32 px)",
            f"use {lower} or {lower + TILE_MULTIPLE}",
        )
    if not 0 <= overlap < 1:
        raise InspectorError(f"overlap {overlap} is outside [0, 1)", "overlap is a share of the tile, e.g. 0.2")


def plan_tiles(
    width: int,
    height: int,
    tile: int,
    overlap: float,
    *,
    roi: RectROI | MaskROI | None = None,
    roi_mask: np.ndarray | None = None,
    global_view: bool = False,
) -> list[Tile]:
    """The tiles of a ``width`` x ``height`` frame, local tiles row-major then the global view.

    Local boxes equal ``sahi.slicing.get_slice_bboxes(height, width, tile, tile, overlap,
    overlap)`` (a side shorter than ``tile`` gives one span over that side; ``crop_tiles``
    pads it). ``roi``: a ``RectROI`` keeps tiles that intersect the rectangle; a
    ``MaskROI`` keeps tiles with at least ``min_coverage`` of their pixels non-zero in the
    mask (``roi_mask``, loaded from ``roi.mask`` when omitted; it must be height x width).
    A ``roi_mask`` without ``roi`` uses ``MaskROI``'s default coverage. ``global_view``
    appends one tile with the whole frame as bbox. Indices are renumbered 0..N-1 after
    filtering. Raises ``InspectorError`` for bad sizes, or an ROI that keeps no tile.
    """
    _validate(width, height, tile, overlap)
    overlap_px = int(overlap * tile)  # SAHI's int(ratio * size), float product included
    xs = _spans(width, tile, overlap_px)
    ys = _spans(height, tile, overlap_px)
    boxes: list[BBox] = [(x0, y0, x1, y1) for y0, y1 in ys for x0, x1 in xs]
    if isinstance(roi, RectROI):
        if roi_mask is not None:
            raise ValueError("roi_mask is for a MaskROI, not a RectROI")
        boxes = _keep_in_rect(boxes, roi.rect, width, height)
    elif isinstance(roi, MaskROI) or roi_mask is not None:
        if roi_mask is None:
            assert isinstance(roi, MaskROI)
            roi_mask = load_roi_mask(roi.mask)
        coverage = roi.min_coverage if isinstance(roi, MaskROI) else MaskROI.model_fields["min_coverage"].default
        boxes = _keep_covered(boxes, roi_mask, coverage, width, height)
    tiles = [Tile(i, box) for i, box in enumerate(boxes)]
    if global_view:
        tiles.append(Tile(len(tiles), (0, 0, width, height), is_global=True))
    return tiles


def _keep_in_rect(boxes: list[BBox], rect: BBox, width: int, height: int) -> list[BBox]:
    rx0, ry0, rx1, ry1 = rect
    kept = [b for b in boxes if b[0] < rx1 and rx0 < b[2] and b[1] < ry1 and ry0 < b[3]]
    if not kept:
        raise ConfigError(
            f"ROI rect {list(rect)} lies outside the {width}x{height} frame",
            "give tiling.roi.rect as [x0, y0, x1, y1) in frame pixels",
        )
    return kept


def _keep_covered(boxes: list[BBox], mask: np.ndarray, min_coverage: float, width: int, height: int) -> list[BBox]:
    if mask.shape[:2] != (height, width):
        raise ConfigError(
            f"ROI mask is {mask.shape[1]}x{mask.shape[0]} but frames are {width}x{height}",
            "draw the mask at the camera's resolution",
        )
    # Integral image: the inside-pixel count of any box in four lookups.
    counts = cv2.integral((mask != 0).astype(np.uint8), sdepth=cv2.CV_32S)
    kept = []
    for x0, y0, x1, y1 in boxes:
        inside = counts[y1, x1] - counts[y0, x1] - counts[y1, x0] + counts[y0, x0]
        if inside >= min_coverage * (x1 - x0) * (y1 - y0):
            kept.append((x0, y0, x1, y1))
    if not kept:
        raise ConfigError(
            f"no tile has {min_coverage:.0%} of its pixels inside the ROI mask",
            "check the mask (non-zero = inspect) or lower tiling.roi.min_coverage",
        )
    return kept


def load_roi_mask(path: str | Path) -> np.ndarray:
    """A mask image -> (H, W) bool, True where any colour channel is non-zero.

    Read by the one image decoder (inspector/decode.py), so the mask means what the image would show:
    16-bit samples scaled to 8 bits (full range), alpha composited over black (transparent = skip).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ROI mask {path} does not exist", "set tiling.roi.mask to an image file (PNG)")
    mask = read_image_file(path)
    if mask is None:
        raise ConfigError(f"ROI mask {path} is not a readable image", "save the mask as PNG, non-zero = inspect")
    return mask.any(axis=2)


def _resize_area(image: np.ndarray, size: int) -> np.ndarray:
    """Area-average ``image`` to size x size (cv2.INTER_AREA), fast for big downscales.

    INTER_AREA at a non-integer ratio is slow on large frames (4K -> 512: ~17 ms on one
    core) while an exact 2x halving takes its SIMD box-filter path (~2 ms at 4K). So halve
    while the result still covers the tile (and the sides are even), then one INTER_AREA
    to the tile (4K -> 512: ~5 ms). Every pixel still counts with (almost) its area
    weight; only the footprint edges snap to the halved grid, so the result differs from
    a one-step INTER_AREA by ~1 grey level on average, more right at sharp edges.
    """
    height, width = image.shape[:2]
    while width % 2 == 0 and height % 2 == 0 and width >= 2 * size and height >= 2 * size:
        width, height = width // 2, height // 2
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def crop_tiles(image: np.ndarray, tiles: list[Tile], tile: int, *, out: np.ndarray | None = None) -> np.ndarray:
    """Cut ``tiles`` out of a BGR uint8 (H, W, 3) frame -> (N, tile, tile, 3) RGB uint8.

    A local tile smaller than ``tile`` (frame smaller than a tile) sits top-left, padded
    with zeros at the bottom/right. The global view is the whole frame resized to
    ``tile`` x ``tile`` with area averaging (cv2.INTER_AREA after exact 2x halvings for
    large downscales, see ``_resize_area``; upscaling a small frame is bilinear, as
    INTER_AREA does), aspect ratio NOT preserved: the frame is squeezed, so its bbox maps back
    with independent x/y scales.
    ``out`` (C-contiguous, that shape) is reused when given, e.g. one buffer per stream.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 BGR, got {image.shape} {image.dtype}")
    shape = (len(tiles), tile, tile, 3)
    if out is None:
        out = np.zeros(shape, dtype=np.uint8)
    elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}, got {out.shape} {out.dtype}")
    height, width = image.shape[:2]
    for row, t in enumerate(tiles):
        if t.is_global:
            _into(out[row], cv2.cvtColor(_resize_area(image, tile), cv2.COLOR_BGR2RGB, dst=out[row]))
            continue
        x0, y0, x1, y1 = t.bbox
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height) or max(x1 - x0, y1 - y0) > tile:
            raise ValueError(f"tile {t.bbox} does not fit a {width}x{height} frame cut into {tile}-px tiles")
        if (x1 - x0, y1 - y0) == (tile, tile):
            # cvtColor writes straight into the output row: crop and BGR->RGB in one copy.
            _into(out[row], cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2RGB, dst=out[row]))
        else:
            out[row] = 0
            out[row, : y1 - y0, : x1 - x0] = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2RGB)
    return out


def _into(target: np.ndarray, result: np.ndarray) -> None:
    """Copy ``result`` into ``target`` unless OpenCV already wrote there (dst= honoured)."""
    if result is not target:
        target[...] = result


class TilePlanner:
    """A stream's tiling: the plan per frame size (cached: it is the same for every frame).

    Same parameters as ``plan_tiles``; a ``MaskROI`` mask is read once here, so a bad path
    fails at start rather than on the first frame.
    """

    def __init__(
        self,
        tile: int,
        overlap: float,
        *,
        roi: RectROI | MaskROI | None = None,
        roi_mask: np.ndarray | None = None,
        global_view: bool = False,
    ) -> None:
        _validate(1, 1, tile, overlap)
        if isinstance(roi, MaskROI) and roi_mask is None:
            roi_mask = load_roi_mask(roi.mask)
        self.tile = tile
        self.overlap = overlap
        self.roi = roi
        self.roi_mask = roi_mask
        self.global_view = global_view
        self._plans: dict[tuple[int, int], list[Tile]] = {}

    @classmethod
    def from_config(cls, config: TilingConfig) -> TilePlanner:
        return cls(config.tile, config.overlap, roi=config.roi, global_view=config.global_view)

    def plan(self, width: int, height: int) -> list[Tile]:
        key = (width, height)
        if key not in self._plans:
            self._plans[key] = plan_tiles(
                width,
                height,
                self.tile,
                self.overlap,
                roi=self.roi,
                roi_mask=self.roi_mask,
                global_view=self.global_view,
            )
        return list(self._plans[key])  # a copy: callers may filter it freely

    def crop(self, image: np.ndarray, *, out: np.ndarray | None = None) -> tuple[list[Tile], np.ndarray]:
        """The plan for this frame's size and its (N, tile, tile, 3) RGB crops."""
        tiles = self.plan(int(image.shape[1]), int(image.shape[0]))
        return tiles, crop_tiles(image, tiles, self.tile, out=out)
