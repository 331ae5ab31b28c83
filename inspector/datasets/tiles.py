"""Labelled tiles: the pixels exactly as inference sees them (``TilePlanner.crop``), each with its
label from THE rule (``inspector.datasets.rule``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from inspector.datasets.base import Dataset, DatasetError, LabelledImage
from inspector.datasets.images import fit_tile
from inspector.datasets.rule import MIN_BOX_SHARE, MIN_TILE_SHARE, tile_labels
from inspector.tiling import Tile, TilePlanner


@dataclass(frozen=True)
class LabelledTile:
    image: LabelledImage
    tile: Tile  # bbox in the coordinates of the frame the Inspector is given
    pixels: np.ndarray  # (tile, tile, 3) RGB uint8, a row of TilePlanner.crop
    label: str | None  # None: ambiguous (a sliver of a box), ignored


def inspection_frame(item: LabelledImage, image: np.ndarray, tile: int) -> np.ndarray:
    """The frame the Inspector judges for ``item``: as decoded, or, for a class-folder image, fitted to one tile."""
    return fit_tile(image, tile) if item.whole_class is not None else image


def iter_frames(dataset: Dataset, tile: int) -> Iterator[tuple[LabelledImage, np.ndarray]]:
    """Every item with its inspection frame, in data-set order.

    Consecutive frames of one video (as loaders and splits keep them) are decoded in one
    sequential pass, holding one frame at a time: exact, and far faster than seeking.
    """
    images = dataset.images
    position = 0
    while position < len(images):
        item = images[position]
        if not item.is_video:
            yield item, inspection_frame(item, item.load(), tile)
            position += 1
            continue
        end = position + 1
        while (
            end < len(images)
            and images[end].source == item.source
            and images[end].frame_index >= images[end - 1].frame_index
        ):
            end += 1
        for run_item, frame in _video_run(images[position:end]):
            yield run_item, inspection_frame(run_item, frame, tile)
        position = end


def _video_run(run: list[LabelledImage]) -> Iterator[tuple[LabelledImage, np.ndarray]]:
    """Items of one video with non-decreasing frame indices, decoded in one pass."""
    from inspector.sources.files import VideoFileSource

    pending = iter(run)
    item = next(pending, None)
    with VideoFileSource(run[0].source) as source:
        for frame in source:
            while item is not None and item.frame_index == frame.index:
                yield item, frame.image
                item = next(pending, None)
            if item is None:
                return
            if item.frame_index < frame.index:
                break  # the decoder skipped it (corrupt)
    assert item is not None
    raise DatasetError(
        f"{item.source} has no decodable frame {item.frame_index} (labelled as {item.key})",
        "the labels name a frame the video does not hold, or that frame is corrupt",
    )


def labelled_tiles(
    dataset: Dataset,
    planner: TilePlanner,
    *,
    min_box_share: float = MIN_BOX_SHARE,
    min_tile_share: float = MIN_TILE_SHARE,
    include_ambiguous: bool = False,
) -> Iterator[LabelledTile]:
    """Every tile of every item, labelled by the rule; ambiguous tiles are skipped unless asked for.

    Class-folder images are fitted to one tile (``fit_tile``) and planned like any frame, so
    their tiles (the padded local tile and, with ``global_view``, the global one) all carry the
    folder's class.
    """
    for item, frame in iter_frames(dataset, planner.tile):
        tiles, pixels = planner.crop(frame)
        if item.whole_class is not None:
            labels: list[str | None] = [item.whole_class] * len(tiles)
        else:
            labels = tile_labels(item.boxes, tiles, min_box_share=min_box_share, min_tile_share=min_tile_share)
        for tile, row, label in zip(tiles, pixels, labels):
            if label is None and not include_ambiguous:
                continue
            yield LabelledTile(item, tile, row, label)
