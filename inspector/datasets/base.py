"""The labelled-data model every format loads into: boxes on frames/images, grouped for splitting.

A ``LabelledImage`` is one frame the Inspector would judge (a video frame or an image file)
with its labelled defect boxes, or, for class folders, one single-tile image of a whole
class. ``Dataset`` is a list of them plus the station's classes ("ok" first).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inspector.datasets.errors import DatasetError
from inspector.datasets.images import read_image, read_video_frame

BBox = tuple[int, int, int, int]


@dataclass(frozen=True)
class LabelledBox:
    class_name: str
    bbox: BBox  # [x0, y0, x1, y1) frame pixels

    @property
    def area(self) -> int:
        return (self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1])


@dataclass(frozen=True)
class LabelledImage:
    """One frame or image and its labels. ``load()`` decodes lazily (BGR uint8, H x W x 3)."""

    key: str  # unique and stable: "clip.mp4#12" or an image path relative to the data set
    group: str  # the split unit: a clip (its frames are near-duplicates) or an image; never a tile
    boxes: tuple[LabelledBox, ...]
    whole_class: str | None  # class folders: the image is ONE tile of this class ("ok" or a defect)
    source: str  # absolute path of the video or image file
    frame_index: int = 0  # frame number in a video; 0 for an image

    @property
    def is_video(self) -> bool:
        return Path(self.source).suffix.lower() not in _IMAGE_SUFFIXES

    @property
    def truth_class(self) -> str:
        """The frame's class: the whole class, else the largest box's class, else "ok"."""
        if self.whole_class is not None:
            return self.whole_class
        if not self.boxes:
            return "ok"
        return max(self.boxes, key=lambda b: b.area).class_name

    @property
    def is_defective(self) -> bool:
        return self.truth_class != "ok"

    def load(self) -> np.ndarray:
        if self.is_video:
            return read_video_frame(Path(self.source), self.frame_index)
        return read_image(Path(self.source))


@dataclass
class Dataset:
    images: list[LabelledImage]
    classes: tuple[str, ...]  # the station's answer options, "ok" first
    source: str  # where it was loaded from (or "a + b" for combined sets)
    _file_hashes: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, images: list[LabelledImage], source: str | None = None) -> Dataset:
        return Dataset(images, self.classes, source or self.source, self._file_hashes)

    def fingerprint(self) -> str:
        """sha256 over every key, label and source file's content: the same data gives the same id."""
        digest = hashlib.sha256()
        digest.update(json.dumps(list(self.classes)).encode())
        for item in sorted(self.images, key=lambda i: i.key):
            labels = [[b.class_name, list(b.bbox)] for b in item.boxes]
            digest.update(json.dumps([item.key, item.group, item.whole_class, labels]).encode())
            digest.update(self._file_hash(item.source).encode())
        return digest.hexdigest()

    def _file_hash(self, path: str) -> str:
        if path not in self._file_hashes:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            self._file_hashes[path] = digest.hexdigest()
        return self._file_hashes[path]


def combine(datasets: list[Dataset]) -> Dataset:
    """Several data sets as one (same classes); a key or group seen twice is an error."""
    if not datasets:
        raise DatasetError("no data set given", "pass --data DIR at least once")
    if len(datasets) == 1:
        return datasets[0]
    classes = datasets[0].classes
    seen: dict[str, str] = {}
    images: list[LabelledImage] = []
    for dataset in datasets:
        if dataset.classes != classes:
            raise DatasetError(f"{dataset.source}: classes {dataset.classes} differ from {classes}")
        for item in dataset.images:
            if item.key in seen:
                raise DatasetError(
                    f"{item.key} appears in both {seen[item.key]} and {dataset.source}",
                    "pass each data set once",
                )
            seen[item.key] = dataset.source
            images.append(item)
    return Dataset(images, classes, " + ".join(d.source for d in datasets))


_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm"})
