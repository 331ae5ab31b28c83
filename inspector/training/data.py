"""Labelled tiles in memory for training: pixels as inference sees them, class-balanced batches, augmentation.

Tiles come from ``inspector.datasets.labelled_tiles`` (THE labelling rule; ambiguous tiles are
left out). OK tiles vastly outnumber defect tiles, so they are reservoir-sampled down to a cap
(memory stays bounded; the choice is seeded) and batches are drawn with class weights.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np

from inspector.datasets import Dataset, labelled_tiles
from inspector.datasets.rule import intersection_area
from inspector.tiling import TilePlanner


@dataclass
class TileSet:
    pixels: np.ndarray  # (N, S, S, 3) RGB uint8
    labels: np.ndarray  # (N,) int64 index into classes ("ok" = 0)
    where: np.ndarray  # (N, 2) float32 centre of the tile's defect, as a share of the tile (0.5, 0.5 for ok)
    classes: tuple[str, ...]
    extent: np.ndarray | None = None  # (N,) float32 the defect's visible box, longer side as a share of the tile

    def __post_init__(self) -> None:
        if self.extent is None:
            self.extent = np.zeros(len(self.labels), np.float32)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def counts(self) -> dict[str, int]:
        found = Counter(self.labels.tolist())
        return {name: int(found.get(i, 0)) for i, name in enumerate(self.classes)}


def collect_tiles(dataset: Dataset, planner: TilePlanner, *, max_ok: int, seed: int) -> TileSet:
    """Every unambiguous tile of ``dataset``; OK tiles reservoir-sampled to at most ``max_ok``."""
    rng = np.random.default_rng([seed, 7])
    index = {name: i for i, name in enumerate(dataset.classes)}
    defects: list[tuple[np.ndarray, int, tuple[float, float, float]]] = []
    oks: list[np.ndarray] = []
    seen_ok = 0
    for item in labelled_tiles(dataset, planner):
        label = index[item.label]
        if label:
            defects.append((item.pixels.copy(), label, _defect_place(item)))
            continue
        seen_ok += 1
        if len(oks) < max_ok:
            oks.append(item.pixels.copy())
        else:
            slot = int(rng.integers(seen_ok))
            if slot < max_ok:
                oks[slot] = item.pixels.copy()
    size = planner.tile
    pixels = np.empty((len(defects) + len(oks), size, size, 3), np.uint8)
    for i, (row, _, _) in enumerate(defects):
        pixels[i] = row
    for i, row in enumerate(oks):
        pixels[len(defects) + i] = row
    labels = np.array([d[1] for d in defects] + [0] * len(oks), np.int64)
    place = np.array([d[2] for d in defects] + [(0.5, 0.5, 0.0)] * len(oks), np.float32).reshape(-1, 3)
    return TileSet(pixels, labels, place[:, :2].copy(), dataset.classes, place[:, 2].copy())


def _defect_place(item) -> tuple[float, float, float]:
    """Centre of the tile's visible defect area (the largest box of its class) as shares of the tile,
    and that visible box's longer side as a share of the tile side (whole tile for a class folder)."""
    x0, y0, x1, y1 = item.tile.bbox
    boxes = [b for b in item.image.boxes if b.class_name == item.label and intersection_area(b.bbox, item.tile.bbox)]
    if item.tile.is_global or not boxes:
        return (0.5, 0.5, 1.0)
    box = max(boxes, key=lambda b: intersection_area(b.bbox, item.tile.bbox)).bbox
    left, top, right, bottom = max(box[0], x0), max(box[1], y0), min(box[2], x1), min(box[3], y1)
    width, height = max(1, x1 - x0), max(1, y1 - y0)
    extent = max((right - left) / width, (bottom - top) / height)
    return ((left + right) / 2 - x0) / width, ((top + bottom) / 2 - y0) / height, extent


def sampling_weights(labels: np.ndarray, defect_share: float) -> np.ndarray:
    """Per-tile probabilities: ``defect_share`` of each batch on defect tiles, split evenly over the
    defect classes present; the rest on OK tiles. Without defect (or OK) tiles: uniform."""
    counts = np.bincount(labels, minlength=int(labels.max()) + 1 if labels.size else 1)
    present = [c for c in range(1, counts.size) if counts[c]]
    if not present or not counts[0]:
        return np.full(labels.shape, 1.0 / max(1, labels.size))
    per_class = np.zeros(counts.size)
    per_class[0] = 1.0 - defect_share
    per_class[present] = defect_share / len(present)
    weights = per_class[labels] / counts[labels]
    return weights / weights.sum()


def augment(
    tiles: np.ndarray,
    rng: np.random.Generator,
    *,
    where: np.ndarray | None = None,
    shift: float = 0.06,
    photometric: float = 0.05,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Flips, brightness/contrast and small shifts (reflected borders), drawn per tile from ``rng``.

    ``where`` (N, 2), the defects' centres as shares of the tile (x, y), comes back moved with the
    pixels: a flipped tile's "top left" defect is at its top right, and the taught explanation
    must say so (unmoved, the region words would be noise and a model learns only their prior).
    ``photometric``: contrast in 1 +- it, brightness +- it x 255. Keep it small: a dark defect
    on a surface is told apart partly by how dark it is, and a strong jitter makes the surface's
    own shadows as dark as the defects.
    """
    out = np.empty_like(tiles)
    moved = None if where is None else np.array(where, dtype=np.float32, copy=True)
    size = tiles.shape[1]
    for i, tile in enumerate(tiles):
        image = tile
        if rng.random() < 0.5:
            image = image[:, ::-1]
            if moved is not None:
                moved[i, 0] = 1.0 - moved[i, 0]
        if rng.random() < 0.5:
            image = image[::-1]
            if moved is not None:
                moved[i, 1] = 1.0 - moved[i, 1]
        dx, dy = (rng.uniform(-shift, shift, 2) * size).round()
        if moved is not None:
            moved[i] = np.clip(moved[i] + np.float32([dx, dy]) / size, 0.0, 1.0)
        contrast = rng.uniform(1 - photometric, 1 + photometric)
        brightness = rng.uniform(-photometric, photometric) * 255
        matrix = np.float32([[1, 0, dx], [0, 1, dy]])
        image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), borderMode=cv2.BORDER_REFLECT_101)
        out[i] = np.clip((image.astype(np.float32) - 128.0) * contrast + 128.0 + brightness, 0, 255)
    return out, moved
